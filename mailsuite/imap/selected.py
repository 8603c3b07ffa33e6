r"""One session's view of its selected folder, and who has seen what as \Recent.

The store's ``Folder`` is shared by every session and always current; a
client, though, must hear about changes in an order it can follow (RFC 3501
5.2, 7.4.1): new messages through EXISTS, flag changes through untagged
FETCH, and removals through EXPUNGE only at moments when message numbers
may shift. ``SelectedMailbox`` keeps the numbering the client was last told,
queues what changed since, and turns the queue into untagged responses when
the session says it may.

A message expunged elsewhere but not yet announced stays in the view (its
``Message`` object still holds its last flags), so FETCH and STORE can still
name it; reading its text then fails cleanly with ``MessageGone``.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator

from twisted.logger import Logger

from mailsuite.imap import flags as imap_flags
from mailsuite.imap.parser import SequenceSet, format_uid_set
from mailsuite.imap.responses import bad
from mailsuite.store import Folder, FolderChanges, Message

log = Logger()


class RecentTracker:
    r"""Which messages of one folder are \Recent, in memory for this process.

    RFC 3501 2.3.2: a message is recent to the first session that is told
    about it. We keep that in memory, not on disk: when a folder is first
    opened in this process, the messages still in ``new/`` (never touched by
    any client) count as recent; every message that arrives later is recent
    until a read-write session claims it. After a restart, messages still in
    ``new/`` are therefore recent again. EXAMINE and STATUS look without
    claiming (RFC 3501 6.3.2).
    """

    def __init__(self, folder: Folder) -> None:
        self.uidvalidity = folder.uidvalidity
        self._checked_upto = 0
        self._unclaimed: set[int] = set()
        self._note(folder.messages, only_new=True)

    def _note(self, messages: list[Message], only_new: bool = False) -> None:
        """Mark messages above the last UID looked at as unclaimed recent ones."""
        highest = self._checked_upto
        for message in reversed(messages):
            if message.uid <= self._checked_upto:
                break
            highest = max(highest, message.uid)
            if not only_new or message.filename.startswith("new/"):
                self._unclaimed.add(message.uid)
        self._checked_upto = highest

    def peek(self, messages: list[Message]) -> set[int]:
        self._note(messages)
        return {m.uid for m in messages if m.uid in self._unclaimed}

    def claim(self, messages: list[Message]) -> set[int]:
        recent = self.peek(messages)
        self._unclaimed -= recent
        return recent

    def count(self, folder: Folder) -> int:
        """Recent messages still in ``folder`` (for STATUS); forgets expunged ones."""
        self._note(folder.messages)
        self._unclaimed = {uid for uid in self._unclaimed if folder.get(uid) is not None}
        return len(self._unclaimed)


class RecentRegistry:
    """One ``RecentTracker`` per folder, shared by all sessions of a factory."""

    def __init__(self) -> None:
        self._trackers: dict[str, RecentTracker] = {}

    def tracker(self, folder: Folder) -> RecentTracker:
        tracker = self._trackers.get(folder.path)
        if tracker is None or tracker.uidvalidity != folder.uidvalidity:
            tracker = RecentTracker(folder)
            self._trackers[folder.path] = tracker
        return tracker


class SelectedMailbox:
    """The selected folder as this session's client knows it."""

    def __init__(
        self,
        folder: Folder,
        readonly: bool,
        tracker: RecentTracker,
        wake: Callable[[], None],
    ) -> None:
        self.folder = folder
        self.readonly = readonly
        self._tracker = tracker
        self._wake = wake
        self.messages: list[Message] = list(folder.messages)
        self.uids: list[int] = [m.uid for m in self.messages]
        self.recent: set[int] = self._see_recent(self.messages)
        self._recent_told = len(self.recent)
        self._added: list[Message] = []
        self._removed: set[int] = set()
        self._flags_changed: dict[int, None] = {}
        self._quiet: set[int] = set()
        #: ``(\Seen \Recent)`` by (letters, recent): few combinations occur.
        self._flag_texts: dict[tuple[str, bool], bytes] = {}
        self._keywords_known = len(folder.keywords.names)
        #: RFC 7162 3.1: once enabled, every untagged FETCH carries UID and MODSEQ.
        self.condstore = False
        #: RFC 7162 3.2.10: once enabled, removals are told as VANISHED.
        self.qresync = False
        folder.add_listener(self._changed)

    def close(self) -> None:
        self.folder.remove_listener(self._changed)

    def _see_recent(self, messages: list[Message]) -> set[int]:
        if self.readonly:
            return self._tracker.peek(messages)
        return self._tracker.claim(messages)

    # -- looking up ----------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.messages)

    def index_of(self, uid: int) -> int | None:
        """The 0-based position of ``uid`` in the view, or None."""
        i = bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i
        return None

    def flags(self, message: Message) -> bytes:
        """The parenthesised flag list of a message, keywords and \\Recent included."""
        key = (message.letters, message.uid in self.recent)
        text = self._flag_texts.get(key)
        if text is None:
            names = self.folder.flags_of(message)
            if key[1]:
                names.append(imap_flags.RECENT)
            text = self._flag_texts[key] = ("(" + " ".join(names) + ")").encode("utf-8")
        return text

    def is_expunged(self, message: Message) -> bool:
        """Removed from the folder, though the client has not been told yet."""
        return message.uid in self._removed or self.folder.get(message.uid) is None

    def select(self, numbers: SequenceSet, uid: bool) -> list[int]:
        """0-based positions named by a sequence set, ascending, each once.

        UIDs that do not exist are skipped (RFC 3501 6.4.8). Message numbers
        above the count are an error (RFC 3501 9, "seq-number"), which
        includes ``*`` in an empty mailbox.
        """
        if uid:
            return self._select_uids(numbers)
        count = len(self.messages)
        ranges = numbers.resolve(count)
        if count == 0 or ranges[-1][1] > count:
            raise bad("Invalid message sequence number")
        positions: list[int] = []
        for low, high in ranges:
            positions.extend(range(low - 1, high))
        return positions

    def select_existing(self, numbers: SequenceSet) -> set[int]:
        """Positions of a message-number set, ignoring numbers past the end (SEARCH)."""
        count = len(self.messages)
        positions: set[int] = set()
        for low, high in numbers.resolve(count):
            positions.update(range(max(low - 1, 0), min(high, count)))
        return positions

    def _select_uids(self, numbers: SequenceSet) -> list[int]:
        if not self.uids:
            return []
        positions: list[int] = []
        for low, high in numbers.resolve(self.uids[-1]):
            positions.extend(range(bisect_left(self.uids, low), bisect_right(self.uids, high)))
        return positions

    # -- changes -------------------------------------------------------------

    @contextlib.contextmanager
    def quiet(self, uids: Iterable[int]) -> Iterator[None]:
        """While storing flags ourselves, do not queue FETCH for those messages."""
        self._quiet = set(uids)
        try:
            yield
        finally:
            self._quiet = set()

    def _changed(self, folder: Folder, changes: FolderChanges) -> None:
        self._queue_added(changes.added)
        for uid in changes.removed:
            if self.index_of(uid) is not None:
                self._removed.add(uid)
        if changes.removed and self._added:
            gone = set(changes.removed)
            self._added = [m for m in self._added if m.uid not in gone]
            self.recent -= gone - self._removed
        for message in changes.flags_changed:
            if message.uid not in self._quiet and self.index_of(message.uid) is not None:
                self._flags_changed[message.uid] = None
        self._wake()

    def flags_told(self, uids: Iterable[int]) -> None:
        """A FETCH just sent these messages' flags: no separate update is needed."""
        if self._flags_changed:
            for uid in uids:
                self._flags_changed.pop(uid, None)

    def _queue_added(self, added: list[Message]) -> None:
        last = self._added[-1].uid if self._added else (self.uids[-1] if self.uids else 0)
        for message in added:
            if message.uid > last:
                self._added.append(message)
                last = message.uid
            else:
                # Message numbers must rise with UIDs (RFC 3501 2.3.1.2); a
                # message that reappears below the top waits for a new SELECT.
                log.info(
                    "message {uid} in {folder} appeared below UID {last}",
                    uid=message.uid,
                    folder=folder_label(self.folder),
                    last=last,
                )
        if added:
            self.recent |= self._see_recent(self._added)

    def updates(self, allow_expunge: bool) -> list[bytes]:
        """Untagged responses for what changed, applied to the view as they are sent.

        RFC 3501 7.4.1: EXPUNGE waits while ``allow_expunge`` is false (during
        FETCH, STORE and SEARCH); new messages and flag changes never wait.
        """
        out: list[bytes] = []
        if len(self.folder.keywords.names) != self._keywords_known:
            # A new keyword: clients learn it from FLAGS (RFC 3501 7.2.6).
            self._keywords_known = len(self.folder.keywords.names)
            self._flag_texts.clear()
            out.append(imap_flags.announcement(self.folder, self.readonly))
        if allow_expunge and self._removed:
            out.extend(self._apply_expunges())
        if self._added:
            self.messages.extend(self._added)
            self.uids.extend(m.uid for m in self._added)
            self._added = []
            out.append(b"* %d EXISTS\r\n" % len(self.messages))
            if len(self.recent) != self._recent_told:
                self._recent_told = len(self.recent)
                out.append(b"* %d RECENT\r\n" % self._recent_told)
        if self._flags_changed:
            out.extend(self._flag_updates())
        return out

    def _apply_expunges(self) -> list[bytes]:
        positions = sorted(i for uid in self._removed if (i := self.index_of(uid)) is not None)
        if self.qresync:
            # RFC 7162 3.2.10: one VANISHED with the UIDs instead of EXPUNGEs.
            uids = format_uid_set([self.uids[i] for i in positions])
            out = [b"* VANISHED %s\r\n" % uids.encode("ascii")] if positions else []
        else:
            # Each EXPUNGE renumbers the messages after it, at once (RFC 3501 7.4.1).
            out = [b"* %d EXPUNGE\r\n" % (i - shift + 1) for shift, i in enumerate(positions)]
        gone = self._removed
        self._removed = set()
        self.messages = [m for m in self.messages if m.uid not in gone]
        self.uids = [m.uid for m in self.messages]
        self.recent -= gone
        self._recent_told = len(self.recent)
        for uid in gone:
            self._flags_changed.pop(uid, None)
        return out

    def _flag_updates(self) -> list[bytes]:
        out = []
        for uid in self._flags_changed:
            i = self.index_of(uid)
            if i is None or uid in self._removed:
                continue
            out.append(self.flag_update(i))
        self._flags_changed = {}
        return out

    def flag_update(self, position: int) -> bytes:
        """``* n FETCH (UID u FLAGS (...))``, with ``MODSEQ`` once CONDSTORE is on."""
        message = self.messages[position]
        modseq = b" MODSEQ (%d)" % message.modseq if self.condstore else b""
        flags = self.flags(message)
        return b"* %d FETCH (UID %d FLAGS %s%s)\r\n" % (position + 1, message.uid, flags, modseq)


def folder_label(folder: Folder) -> str:
    return f"{folder.account.address}/{folder.name}"
