"""The maildrop of one POP3 session: INBOX as it was at login.

RFC 1939 section 5 numbers the messages from 1 for the whole session, and
nothing changes on disk until the UPDATE state after QUIT (section 6); a
dropped connection changes nothing. The unique-id listing (section 7) uses
the same UID record as IMAP, so it never changes across restarts, flag
changes, moves from ``new/`` to ``cur/`` or renames by other programs.

Sessions are not locked against each other (Dovecot's
``pop3_lock_session=no``): a second session, an IMAP client or a delivery
may change INBOX meanwhile. This session's numbering stays fixed; a message
another session removed answers ``MessageGone`` when read, and deleting it
again at QUIT is harmless.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from twisted.logger import Logger

from mailsuite.store import Folder, Message, MessageGone, Store

log = Logger()

#: Maildir letter of ``\\Seen``.
SEEN = "S"

#: Messages removed per step at QUIT; each step rewrites the folder's list once.
EXPUNGE_BATCH = 256


class NoSuchMessage(Exception):
    """The number is not one of this session's messages (0, or past the end)."""


class MessageDeleted(Exception):
    """The message is marked deleted in this session (RFC 1939 section 5)."""


@dataclass
class Entry:
    """One message of the maildrop, and what this session did with it."""

    message: Message
    #: Octets as served, CRLF line ends, before dot-stuffing (RFC 1939 LIST).
    size: int
    deleted: bool = False
    retrieved: bool = False


class Maildrop:
    """The numbered messages of one session and its pending deletions."""

    def __init__(self, folder: Folder, messages: list[Message]) -> None:
        self.folder = folder
        self.uidvalidity = folder.uidvalidity
        self._uidvalidity_hex = f"{folder.uidvalidity:08X}"
        self.entries: list[Entry] = []
        self.removed = 0
        self._messages = messages

    @classmethod
    def open(cls, store: Store, address: str) -> Maildrop:
        """Snapshot the INBOX of ``address``; ``measure`` must run before use."""
        account = store.account(address)
        account.ensure_default_folders()
        folder = account.folder("INBOX", create_inbox=True)
        folder.refresh()
        return cls(folder, list(folder.messages))

    def measure(self) -> Iterator[None]:
        """Take every message's size, one step per message (see ``slicing``).

        Sizes are taken at login so that STAT and LIST answer even for a
        message another session removes later. A size not recorded in the
        file name costs a read of the whole file, once per process.
        """
        for message in self._messages:
            with contextlib.suppress(MessageGone):
                self.entries.append(Entry(message, self.folder.wire_size(message)))
            yield

    # -- looking up ----------------------------------------------------------

    def entry(self, number: int) -> Entry:
        """Message ``number`` (from 1); raise if it does not exist or is deleted."""
        if not 1 <= number <= len(self.entries):
            raise NoSuchMessage(number)
        entry = self.entries[number - 1]
        if entry.deleted:
            raise MessageDeleted(number)
        return entry

    def listing(self) -> list[tuple[int, Entry]]:
        """(number, entry) of every message not marked deleted."""
        return [(n, e) for n, e in enumerate(self.entries, start=1) if not e.deleted]

    def stat(self) -> tuple[int, int]:
        """How many messages are not marked deleted, and their octets."""
        live = [e.size for e in self.entries if not e.deleted]
        return len(live), sum(live)

    def uidl(self, entry: Entry) -> str:
        """The unique-id: UID and UIDVALIDITY as Dovecot's ``%08Xu%08Xv`` default."""
        return f"{entry.message.uid:08X}{self._uidvalidity_hex}"

    # -- changing (only in this session until ``update``) --------------------

    def delete(self, entry: Entry) -> None:
        entry.deleted = True

    def retrieved(self, entry: Entry) -> None:
        entry.retrieved = True

    def reset(self) -> None:
        """RSET: unmark every deletion, and forget what was retrieved."""
        for entry in self.entries:
            entry.deleted = False
            entry.retrieved = False

    def update(self) -> Iterator[None]:
        """The UPDATE state: remove deleted messages, mark retrieved ones seen.

        One step per batch of removals or per flag change (see ``slicing``);
        ``removed`` counts the messages removed. ``\\Seen`` is set here rather
        than at RETR, as Dovecot does, so a session that drops changes
        nothing. The refresh first finds messages another program renamed
        since login, so that removing them removes the right file.
        """
        self.folder.refresh()

        doomed = [e.message.uid for e in self.entries if e.deleted]
        for start in range(0, len(doomed), EXPUNGE_BATCH):
            self.removed += len(self.folder.expunge(doomed[start : start + EXPUNGE_BATCH]))
            yield

        for entry in self.entries:
            if entry.retrieved and not entry.deleted:
                self._mark_seen(entry.message)
                yield

    def _mark_seen(self, message: Message) -> None:
        with contextlib.suppress(MessageGone):
            try:
                self.folder.set_letters(message, message.letters + SEEN)
            except OSError as e:
                # A flag is not worth failing QUIT over; the deletions are done.
                log.warn("cannot mark {key} seen: {error}", key=message.key, error=e)
