"""The Maildir store shared by SMTP, POP3 and IMAP.

Layout: ``<root>/<domain>/<localpart>/`` is a user's INBOX (``tmp/ new/
cur/``), with Maildir++ folders such as ``.Sent`` beside it. One ``Folder``
object per folder lives in the process and is shared by every session that
opens it, so a change made through one session is seen by all at once;
changes made by other programs are found by ``refresh()``, which rescans only
when a directory's modification time says something changed.

Durability: a new message is written to ``tmp/``, fsynced, renamed into
place, and its directory fsynced (shared between concurrent deliveries)
before the Deferred fires. The disk work runs in threads; the reactor never
waits on it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from twisted.internet import defer, threads
from twisted.logger import Logger

from mailsuite import durable
from mailsuite.store import flags as maildir_flags
from mailsuite.store import names
from mailsuite.store.errors import (
    InvalidMailboxName,
    MailboxExists,
    MailboxNotEmpty,
    MessageGone,
    NoSuchMailbox,
    TemporaryFailure,
)
from mailsuite.store.index import FolderIndex
from mailsuite.store.keywords import Keywords
from mailsuite.store.uidlist import UidList

log = Logger()

#: Folders every account gets on first login, with their RFC 6154 use.
DEFAULT_FOLDERS = {"Drafts": "\\Drafts", "Sent": "\\Sent", "Trash": "\\Trash", "Junk": "\\Junk"}

SUBSCRIPTIONS = "subscriptions"

#: Special uses given at CREATE (RFC 6154 3): ``<modified UTF-7 name> TAB <use>`` lines.
SPECIAL_USE = "special-use"

#: A directory changed within this many seconds is rescanned even if its
#: mtime looks unchanged, since mtime granularity can hide a second change.
MTIME_GRACE = 2.0

_SIZE_FIELD = re.compile(r",W=(\d+)")


@dataclass(slots=True)
class Message:
    """One message in a folder, as the folder last saw it."""

    uid: int
    key: str
    #: Path relative to the folder, e.g. ``cur/<key>:2,S``.
    filename: str
    #: Maildir info letters in ASCII order.
    letters: str
    #: CONDSTORE modification sequence of the last change (RFC 7162).
    modseq: int = 0
    _wire_size: int | None = None
    _internaldate: float | None = None

    @property
    def flags(self) -> list[str]:
        return maildir_flags.letters_to_flags(self.letters)


@dataclass
class FolderChanges:
    """What one refresh or operation changed, for sessions to report."""

    added: list[Message] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    flags_changed: list[Message] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.flags_changed)


class UniqueNames:
    """Maildir unique names: time, microseconds, pid and a per-process counter.

    The counter makes names unique within one process even for many
    deliveries in the same microsecond; pid and host separate processes.
    """

    def __init__(self, hostname: str | None = None) -> None:
        host = hostname or socket.gethostname() or "localhost"
        self._host = host.replace("/", "\\057").replace(":", "\\072")
        self._counter = itertools.count(1)

    def next(self) -> str:
        now = time.time()
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        return f"{seconds}.M{micros}P{os.getpid()}Q{next(self._counter)}.{self._host}"


def to_crlf(data: bytes) -> bytes:
    """Make every line end CRLF; a lone CR or LF becomes CRLF."""
    # Cheapest test first: a message stored with LF ends has no CR at all.
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    if data.count(b"\n") == data.count(b"\r") == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def make_maildir(path: str) -> None:
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)


class Store:
    """All users' Maildirs under one root."""

    def __init__(self, root: str, reactor: Any, disk: durable.Disk = durable.DISK) -> None:
        self.root = os.path.abspath(root)
        self.reactor = reactor
        self.disk = disk
        self.names = UniqueNames()
        self._accounts: dict[str, Account] = {}
        self._syncers: dict[str, durable.DirectorySyncer] = {}
        self._known_maildirs: set[str] = set()

    def account(self, address: str) -> Account:
        """The account of ``address`` (a canonical address from the user list)."""
        key = address.lower()
        account = self._accounts.get(key)
        if account is None:
            account = Account(self, address, self._account_path(address))
            self._accounts[key] = account
        return account

    def _account_path(self, address: str) -> str:
        localpart, at, domain = address.rpartition("@")
        if not at or not _safe_path_part(localpart) or not _safe_path_part(domain):
            raise NoSuchMailbox(address)
        return os.path.join(self.root, domain.lower(), localpart)

    def deliver(self, address: str, data: bytes, folder: str = names.INBOX) -> defer.Deferred[str]:
        """Store ``data`` durably in ``folder`` of ``address``; fires with its key.

        Delivery does not load the folder's message list: it writes, syncs,
        and only tells a ``Folder`` that sessions already hold open.
        """
        return defer.ensureDeferred(self._deliver(address, data, folder))

    async def _deliver(self, address: str, data: bytes, folder: str) -> str:
        account = self.account(address)
        path = account.folder_path(folder)
        if names.canonical(folder) == names.INBOX:
            self._ensure_maildir(path)
        elif not os.path.isdir(os.path.join(path, "new")):
            raise NoSuchMailbox(folder)
        key, filename = await self.write_message(path, data, "new", "", None)
        return account.admit(folder, key, filename)

    def _ensure_maildir(self, path: str) -> None:
        """Make a Maildir once per process; a later delivery only checks ``new/``."""
        if path in self._known_maildirs and os.path.isdir(os.path.join(path, "new")):
            return
        make_maildir(path)
        self._known_maildirs.add(path)

    def write_message(
        self, path: str, data: bytes, sub: str, letters: str, internaldate: float | None
    ) -> defer.Deferred[tuple[str, str]]:
        """Write a message into ``path``/``sub`` durably; fires with (key, filename)."""
        return defer.ensureDeferred(self._write_message(path, data, sub, letters, internaldate))

    async def _write_message(
        self, path: str, data: bytes, sub: str, letters: str, internaldate: float | None
    ) -> tuple[str, str]:
        data = to_crlf(data)
        key = f"{self.names.next()},S={len(data)},W={len(data)}"
        filename = f"{sub}/{key}:2,{letters}" if sub == "cur" else f"{sub}/{key}"
        temporary = os.path.join(path, "tmp", key)
        final = os.path.join(path, filename)
        disk = self.disk

        def write() -> None:
            try:
                durable.write_file(temporary, data, disk, mtime=internaldate)
                disk.rename(temporary, final)
            except OSError as e:
                raise TemporaryFailure(f"cannot store message: {e.strerror}") from e

        await threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), write)
        await self._sync_directory(os.path.join(path, sub))
        return key, filename

    def _sync_directory(self, directory: str) -> defer.Deferred[None]:
        syncer = self._syncers.get(directory)
        if syncer is None:
            syncer = durable.DirectorySyncer(self.reactor, directory, self.disk)
            self._syncers[directory] = syncer

        def failed(failure: Any) -> Any:
            raise TemporaryFailure(f"cannot sync {directory}: {failure.getErrorMessage()}")

        return syncer.sync().addErrback(failed)


def _safe_path_part(part: str) -> bool:
    return (
        bool(part)
        and part not in (".", "..")
        and not part.startswith(".")
        and not any(c in part for c in "/\\\x00")
    )


class Account:
    """One user's folders."""

    def __init__(self, store: Store, address: str, path: str) -> None:
        self.store = store
        self.address = address
        self.path = path
        self._folders: dict[str, Folder] = {}

    def ensure_default_folders(self) -> None:
        """Make INBOX and the default folders (called on each login; cheap)."""
        make_maildir(self.path)
        created = []
        for name in DEFAULT_FOLDERS:
            path = os.path.join(self.path, names.directory_name(name))
            if not os.path.isdir(os.path.join(path, "cur")):
                make_maildir(path)
                _touch(os.path.join(path, "maildirfolder"))
                created.append(name)
        if created:
            subscribed = self.subscriptions()
            self._write_subscriptions(subscribed + [n for n in created if n not in subscribed])

    def folder_names(self) -> list[str]:
        """INBOX first, then every folder on disk, sorted."""
        found = []
        try:
            entries = os.listdir(self.path)
        except FileNotFoundError:
            return []
        for entry in entries:
            name = names.folder_name(entry)
            if name is not None and os.path.isdir(os.path.join(self.path, entry, "cur")):
                found.append(name)
        return [names.INBOX, *sorted(found)]

    def special_use(self, name: str) -> str | None:
        """The RFC 6154 use of a folder: the one it was created with, else its default."""
        name = names.canonical(name)
        uses = self._special_uses()
        if name in uses:
            return uses[name] or None
        return DEFAULT_FOLDERS.get(name)

    def set_special_use(self, name: str, use: str | None) -> None:
        """Record (or with None, clear) the use of a folder; it follows RENAME."""
        name = names.canonical(name)
        uses = dict(self._special_uses())
        uses[name] = use or ""
        self._write_special_uses(uses)

    def _special_uses(self) -> dict[str, str]:
        path = os.path.join(self.path, SPECIAL_USE)
        try:
            with open(path, encoding="ascii") as f:
                lines = f.read().splitlines()
        except (FileNotFoundError, UnicodeDecodeError):
            return {}
        uses = {}
        for line in lines:
            encoded, _, use = line.partition("\t")
            with contextlib.suppress(ValueError):
                uses[names.decode_utf7(encoded)] = use
        return uses

    def _write_special_uses(self, uses: dict[str, str]) -> None:
        make_maildir(self.path)
        text = "".join(f"{names.encode_utf7(n)}\t{u}\n" for n, u in sorted(uses.items()))
        durable.replace_file(os.path.join(self.path, SPECIAL_USE), text.encode("ascii"))

    def _move_special_uses(self, renamed: dict[str, str | None]) -> None:
        """Carry uses to new names (RENAME); None as the new name drops them (DELETE).

        A default folder renamed away leaves its name plain, so the folder
        made again at the next login does not claim the same use twice.
        """
        uses = self._special_uses()
        before = dict(uses)
        for old, new in renamed.items():
            use = uses.pop(old, None) if old in uses else DEFAULT_FOLDERS.get(old)
            if new is None:
                continue
            if use:
                uses[new] = use
            if old in DEFAULT_FOLDERS:
                uses[old] = ""
        if uses != before:
            self._write_special_uses(uses)

    def folder(self, name: str, create_inbox: bool = False) -> Folder:
        """The shared ``Folder`` for ``name``; raise ``NoSuchMailbox`` if absent."""
        name = names.canonical(name)
        folder = self._folders.get(name)
        if folder is not None and os.path.isdir(folder.path):
            return folder
        path = self.folder_path(name)
        if name == names.INBOX and create_inbox:
            make_maildir(path)
        if not os.path.isdir(os.path.join(path, "cur")):
            raise NoSuchMailbox(name)
        folder = Folder(self, name, path)
        self._folders[name] = folder
        return folder

    def folder_path(self, name: str) -> str:
        name = names.canonical(name)
        if name == names.INBOX:
            return self.path
        return os.path.join(self.path, names.directory_name(name))

    def admit(self, name: str, key: str, filename: str) -> str:
        """Tell an open ``Folder`` about a message just written to it."""
        folder = self._folders.get(names.canonical(name))
        if folder is not None:
            folder.admit(key, filename)
        return key

    def create_folder(self, name: str) -> None:
        name = names.canonical(name)
        if name == names.INBOX:
            raise MailboxExists(name)
        path = self.folder_path(name)
        if os.path.isdir(path):
            raise MailboxExists(name)
        make_maildir(self.path)
        parts = names.levels(name)
        # RFC 3501 6.3.3: create the superior levels a name needs.
        for depth in range(1, len(parts) + 1):
            level_path = self.folder_path(names.DELIMITER.join(parts[:depth]))
            if not os.path.isdir(os.path.join(level_path, "cur")):
                make_maildir(level_path)
                _touch(os.path.join(level_path, "maildirfolder"))

    def delete_folder(self, name: str) -> None:
        """Remove a folder and its messages; INBOX cannot be removed."""
        name = names.canonical(name)
        if name == names.INBOX:
            raise MailboxNotEmpty("INBOX cannot be deleted")
        path = self.folder_path(name)
        if not os.path.isdir(path):
            raise NoSuchMailbox(name)
        folder = self._folders.pop(name, None)
        shutil.rmtree(path)
        if folder is not None:
            folder.removed()
        self._move_special_uses({name: None})

    def rename_folder(self, old: str, new: str) -> None:
        """Rename a folder and its children (RFC 3501 6.3.5); INBOX moves its messages."""
        old, new = names.canonical(old), names.canonical(new)
        if old == names.INBOX:
            self._rename_inbox(new)
            return
        source = self.folder_path(old)
        if not os.path.isdir(source):
            raise NoSuchMailbox(old)
        if os.path.isdir(self.folder_path(new)) or new == names.INBOX:
            raise MailboxExists(new)
        if new.startswith(old + names.DELIMITER):
            # A folder cannot move below itself: its children would chase it.
            raise InvalidMailboxName(new)
        moves = [(old, new)] + [
            (child, new + child[len(old) :])
            for child in self.folder_names()
            if child.startswith(old + names.DELIMITER)
        ]
        for before, after in moves:
            os.rename(self.folder_path(before), self.folder_path(after))
            folder = self._folders.pop(before, None)
            if folder is not None:
                folder.removed()
        subscribed = self.subscriptions()
        renamed = dict(moves)
        self._write_subscriptions([renamed.get(n, n) for n in subscribed])
        self._move_special_uses(dict(renamed))
        self._make_superiors(new)

    def _make_superiors(self, name: str) -> None:
        """RFC 3501 6.3.5: make the levels above a renamed folder that do not exist."""
        parts = names.levels(name)
        for depth in range(1, len(parts)):
            level_path = self.folder_path(names.DELIMITER.join(parts[:depth]))
            if not os.path.isdir(os.path.join(level_path, "cur")):
                make_maildir(level_path)
                _touch(os.path.join(level_path, "maildirfolder"))

    def _rename_inbox(self, new: str) -> None:
        """Move every INBOX message to a new folder; INBOX stays, empty."""
        self.create_folder(new)
        inbox = self.folder(names.INBOX, create_inbox=True)
        target = self.folder_path(new)
        inbox.refresh()
        for message in list(inbox.messages):
            source = os.path.join(inbox.path, message.filename)
            destination = os.path.join(target, "cur", os.path.basename(message.filename))
            if message.filename.startswith("new/"):
                destination = os.path.join(target, "new", os.path.basename(message.filename))
            try:
                os.rename(source, destination)
            except FileNotFoundError:
                continue
        inbox.refresh()

    # -- subscriptions (the Dovecot/Courier "subscriptions" file) ------------

    def subscriptions(self) -> list[str]:
        try:
            with open(os.path.join(self.path, SUBSCRIPTIONS), encoding="ascii") as f:
                lines = f.read().splitlines()
        except (FileNotFoundError, UnicodeDecodeError):
            return []
        result = []
        for line in lines:
            try:
                result.append(names.decode_utf7(line))
            except ValueError:
                continue
        return result

    def subscribe(self, name: str) -> None:
        name = names.canonical(name)
        names.levels(name)
        current = self.subscriptions()
        if name not in current:
            self._write_subscriptions([*current, name])

    def unsubscribe(self, name: str) -> None:
        name = names.canonical(name)
        current = self.subscriptions()
        if name in current:
            self._write_subscriptions([n for n in current if n != name])

    def _write_subscriptions(self, subscribed: list[str]) -> None:
        make_maildir(self.path)
        text = "".join(names.encode_utf7(n) + "\n" for n in subscribed)
        durable.replace_file(os.path.join(self.path, SUBSCRIPTIONS), text.encode("ascii"))


def _touch(path: str) -> None:
    with open(path, "a"):
        pass


Listener = Callable[["Folder", FolderChanges], None]


class Folder:
    """One Maildir folder: its messages in UID order, and who is watching it."""

    def __init__(self, account: Account, name: str, path: str) -> None:
        self.account = account
        self.name = name
        self.path = path
        self.reactor = account.store.reactor
        self.uidlist = UidList(path, self.reactor)
        self.index = FolderIndex(path, self.uidlist.uidvalidity)
        self.keywords = Keywords(path)
        self._indexed = self.index.load()
        self.messages: list[Message] = []
        self._by_uid: dict[int, Message] = {}
        self._by_key: dict[str, Message] = {}
        self._listeners: list[Listener] = []
        self._seen_mtimes: tuple[int, int] = (-1, -1)
        self._scanned_at = 0.0
        self.refresh()

    @property
    def disk(self) -> durable.Disk:
        return self.account.store.disk

    @property
    def uidvalidity(self) -> int:
        return self.uidlist.uidvalidity

    @property
    def uidnext(self) -> int:
        return self.uidlist.uidnext

    @property
    def highest_modseq(self) -> int:
        return self.index.highest_modseq

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Wrap bulk flag changes and expunges so their index writes commit once."""
        return self.index.batch()

    def vanished_since(self, modseq: int) -> list[int]:
        """UIDs expunged after ``modseq`` (QRESYNC, RFC 7162 3.2.5)."""
        return self.index.expunged_since(modseq)

    # -- watching ------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, changes: FolderChanges) -> None:
        if not changes:
            return
        for listener in list(self._listeners):
            try:
                listener(self, changes)
            except Exception:
                log.failure("folder listener failed for {folder}", folder=self.name)

    def removed(self) -> None:
        """The folder was deleted or renamed away; sessions should let go."""
        self._notify(FolderChanges(removed=[m.uid for m in self.messages]))
        self.messages = []
        self._by_uid.clear()
        self._by_key.clear()

    # -- looking up ----------------------------------------------------------

    def get(self, uid: int) -> Message | None:
        return self._by_uid.get(uid)

    def wire_size(self, message: Message) -> int:
        """The size as served (CRLF line ends): RFC822.SIZE, POP3 LIST."""
        if message._wire_size is None:
            match = _SIZE_FIELD.search(message.key)
            if match:
                message._wire_size = int(match.group(1))
            else:
                message._wire_size = len(self.read(message))
                self.index.set_size(message.uid, message._wire_size)
        return message._wire_size

    def internaldate(self, message: Message) -> float:
        """When the message arrived: the file's mtime, as Dovecot keeps it."""
        if message._internaldate is None:
            try:
                path = os.path.join(self.path, message.filename)
                message._internaldate = os.stat(path).st_mtime
                self.index.set_internaldate(message.uid, message._internaldate)
            except FileNotFoundError:
                message._internaldate = time.time()
        return message._internaldate

    def cached(self, message: Message, name: str) -> bytes | None:
        """A blob the protocol asked to keep for this message (e.g. ENVELOPE)."""
        return self.index.blob(message.uid, name)

    def cached_many(
        self, uids: Sequence[int], names: Sequence[str]
    ) -> dict[tuple[int, str], bytes]:
        """Kept blobs of many messages in one index read: (uid, name) -> value."""
        return self.index.blobs(uids, names)

    def keep(self, message: Message, name: str, value: bytes) -> None:
        """Keep a blob derived from the message's content, which never changes."""
        self.index.put_blob(message.uid, name, value)

    def flags_of(self, message: Message) -> list[str]:
        """System flags and keywords of a message, as IMAP names them."""
        flags = maildir_flags.letters_to_flags(message.letters)
        for letter in message.letters:
            keyword = self.keywords.name_for(letter)
            if keyword is not None:
                flags.append(keyword)
        return flags

    def read(self, message: Message) -> bytes:
        """The message as served: CRLF line ends. Raise ``MessageGone`` if expunged."""
        with self.open_message(message) as f:
            return to_crlf(f.read())

    def open_message(self, message: Message) -> BinaryIO:
        """The message file as stored, open for reading; raise ``MessageGone`` if expunged.

        For streaming a message too large to hold whole (POP3 RETR). The
        bytes are as on disk: line ends are not normalised, ``to_crlf`` is
        the caller's job. An open file stays readable through renames and
        unlinks by other sessions.
        """
        for _attempt in range(2):
            try:
                # Unbuffered: callers read in large blocks, and it opens faster.
                return open(os.path.join(self.path, message.filename), "rb", buffering=0)
            except FileNotFoundError:
                # Another program may have renamed it (flags); look again once.
                self.refresh(force=True)
                current = self._by_key.get(message.key)
                if current is None:
                    break
                message = current
        raise MessageGone(message.uid)

    # -- noticing changes on disk --------------------------------------------

    def refresh(self, force: bool = False) -> FolderChanges:
        """Bring the message list in step with the disk and tell the listeners."""
        mtimes = self._directory_mtimes()
        now = time.time()
        recent_change = max(mtimes) / 1e9 > self._scanned_at - MTIME_GRACE
        if not force and mtimes == self._seen_mtimes and not recent_change:
            return FolderChanges()
        self._seen_mtimes = mtimes
        self._scanned_at = now
        changes = self._rescan()
        self._notify(changes)
        return changes

    def _directory_mtimes(self) -> tuple[int, int]:
        try:
            return (
                os.stat(os.path.join(self.path, "new")).st_mtime_ns,
                os.stat(os.path.join(self.path, "cur")).st_mtime_ns,
            )
        except FileNotFoundError:
            return (0, 0)

    def _rescan(self) -> FolderChanges:
        on_disk = self._list_files()
        changes = FolderChanges()

        gone = [key for key in self._by_key if key not in on_disk]
        for key in gone:
            message = self._by_key.pop(key)
            del self._by_uid[message.uid]
            changes.removed.append(message.uid)
        if gone:
            self.messages = [m for m in self.messages if m.key in self._by_key]
            self.uidlist.forget(gone)
            self.index.forget(changes.removed, self.index.next_modseq())

        for key, filename in on_disk.items():
            known = self._by_key.get(key)
            if known is not None and known.filename != filename:
                known.filename = filename
                letters = _letters(filename)
                if letters != known.letters:
                    known.letters = letters
                    changes.flags_changed.append(known)
        self._bump_modseq(changes.flags_changed)

        new_keys = [key for key in on_disk if key not in self._by_key]
        changes.added = self._admit(new_keys, on_disk)
        return changes

    def _admit(self, keys: list[str], on_disk: dict[str, str]) -> list[Message]:
        """Add messages, reusing recorded UIDs and assigning new ones in arrival order."""
        uid_of_key = self.uidlist.uid_of_key
        known = [(uid_of_key[k], k) for k in keys if k in uid_of_key]
        fresh = sorted((k for k in keys if k not in uid_of_key), key=_arrival_order)
        pairs = known + list(zip(self.uidlist.assign(fresh), fresh, strict=True))
        pairs.sort()
        added = []
        unindexed = []
        modseq = 0
        indexed = self._indexed
        for uid, key in pairs:
            filename = on_disk[key]
            message = Message(uid, key, filename, _letters(filename))
            row = indexed.pop(uid, None)
            if row is None:
                modseq = modseq or self.index.next_modseq()
                message.modseq = modseq
                unindexed.append((uid, None, modseq))
            else:
                message._wire_size, message._internaldate, message.modseq = row
            self._by_uid[uid] = message
            self._by_key[key] = message
            added.append(message)
        if unindexed:
            self.index.add(unindexed)
        if added and self.messages and added[0].uid < self.messages[-1].uid:
            self.messages = sorted([*self.messages, *added], key=lambda m: m.uid)
        else:
            self.messages.extend(added)
        return added

    def _list_files(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for sub in ("new", "cur"):
            try:
                entries = os.scandir(os.path.join(self.path, sub))
            except FileNotFoundError:
                continue
            with entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    found[entry.name.split(":", 1)[0]] = f"{sub}/{entry.name}"
        return found

    # -- changing ------------------------------------------------------------

    def set_letters(self, message: Message, letters: str) -> Message:
        """Give ``message`` these Maildir letters by renaming it into ``cur/``."""
        letters = maildir_flags.normalise_letters(letters)
        if letters == message.letters and message.filename.startswith("cur/"):
            return message
        target = f"cur/{message.key}:2,{letters}"
        try:
            os.rename(os.path.join(self.path, message.filename), os.path.join(self.path, target))
        except FileNotFoundError:
            self.refresh(force=True)
            current = self._by_key.get(message.key)
            if current is None:
                raise MessageGone(message.uid)
            return self.set_letters(current, letters)
        changed = letters != message.letters
        message.filename = target
        message.letters = letters
        if changed:
            self._bump_modseq([message])
            self._notify(FolderChanges(flags_changed=[message]))
        return message

    def set_flags(self, message: Message, flags: Iterable[str]) -> Message:
        """Set the flags and keywords of ``message``, keeping letters we cannot name.

        A keyword that finds no free letter (26 per folder) is not stored;
        ``keywords.has_room()`` tells IMAP whether to offer ``\\*``.
        """
        flags = list(flags)
        letters = maildir_flags.replace_known(message.letters, flags)
        system = {f.lower() for f in maildir_flags.LETTER_OF_FLAG}
        kept = "".join(c for c in letters if self.keywords.name_for(c) is None)
        wanted = {
            letter
            for flag in flags
            if flag.lower() not in system and not flag.startswith("\\")
            if (letter := self.keywords.letter_for(flag, create=True)) is not None
        }
        return self.set_letters(message, kept + "".join(wanted))

    def _bump_modseq(self, messages: list[Message]) -> None:
        if not messages:
            return
        modseq = self.index.next_modseq()
        for message in messages:
            message.modseq = modseq
        self.index.set_modseq([m.uid for m in messages], modseq)

    def expunge(self, uids: Iterable[int]) -> list[int]:
        """Remove these messages; returns the UIDs actually removed.

        A file another program renamed meanwhile is found again and removed;
        one that is already gone counts as removed. A disk error stops the
        work with ``TemporaryFailure``, after recording what was removed.
        """
        removed: list[int] = []
        try:
            for uid in sorted(set(uids)):
                message = self._by_uid.get(uid)
                if message is not None:
                    self._unlink(message)
                    removed.append(uid)
        finally:
            self._forget(removed)
        return removed

    def _unlink(self, message: Message) -> None:
        for _attempt in range(2):
            try:
                os.unlink(os.path.join(self.path, message.filename))
                return
            except FileNotFoundError:
                current = self._find_on_disk(message.key)
                if current is None:
                    return
                message.filename = current
            except OSError as e:
                raise TemporaryFailure(f"cannot remove message: {e.strerror}") from e

    def _find_on_disk(self, key: str) -> str | None:
        """Where a message's file is now, after another program renamed it."""
        for sub in ("cur", "new"):
            with (
                contextlib.suppress(FileNotFoundError),
                os.scandir(os.path.join(self.path, sub)) as entries,
            ):
                for entry in entries:
                    if entry.name == key or entry.name.startswith(key + ":"):
                        return f"{sub}/{entry.name}"
        return None

    def _forget(self, removed: list[int]) -> None:
        """Drop expunged messages from memory and records, and tell the sessions."""
        if not removed:
            return
        gone = set(removed)
        keys = [m.key for m in self.messages if m.uid in gone]
        for key in keys:
            message = self._by_key.pop(key)
            del self._by_uid[message.uid]
        self.messages = [m for m in self.messages if m.uid not in gone]
        self.uidlist.forget(keys)
        self.index.forget(removed, self.index.next_modseq())
        self._sync_removals()
        self._notify(FolderChanges(removed=removed))

    def _sync_removals(self) -> None:
        """Make the unlinks durable soon; a crash before that brings a message
        back (a duplicate download at worst), never loses one."""
        store = self.account.store
        for sub in ("cur", "new"):
            d = store._sync_directory(os.path.join(self.path, sub))
            d.addErrback(lambda f: log.failure("sync after expunge failed", f))

    def append(
        self, data: bytes, letters: str = "", internaldate: float | None = None
    ) -> defer.Deferred[Message]:
        """Durably store a message in ``cur/`` with flags; fires with its ``Message``."""
        return defer.ensureDeferred(self._append(data, letters, internaldate))

    async def _append(self, data: bytes, letters: str, internaldate: float | None) -> Message:
        letters = maildir_flags.normalise_letters(letters)
        store = self.account.store
        key, filename = await store.write_message(self.path, data, "cur", letters, internaldate)
        return self.admit(key, filename)

    def admit(self, key: str, filename: str) -> Message:
        """Add a message this process just wrote, without rescanning the folder."""
        message = self._by_key.get(key)
        if message is None:
            added = self._admit([key], {key: filename})
            self._notify(FolderChanges(added=added))
            message = added[0]
        return message

    def copy_to(self, messages: list[Message], target: Folder) -> defer.Deferred[list[Message]]:
        """Copy messages with their flags into ``target``; fires with the new ones in order."""

        return defer.ensureDeferred(self._copy_to(messages, target))

    async def _copy_to(self, messages: list[Message], target: Folder) -> list[Message]:
        copies = []
        for message in messages:
            data = self.read(message)
            copies.append(await target.append(data, message.letters, self.internaldate(message)))
        return copies


def _letters(filename: str) -> str:
    info = filename.partition(":2,")[2]
    if len(info) < 2 or all(a < b for a, b in itertools.pairwise(info)):
        return info  # already in order, as the Maildir spec asks: the common case
    return maildir_flags.normalise_letters(info)


_UNIQUE_NAME = re.compile(r"^(\d+)\.(?:M(\d+))?(?:P\d+)?(?:Q(\d+))?")


def _arrival_order(key: str) -> tuple[int, int, int, str]:
    """Order by the time and counter in a Maildir unique name, then by name."""
    match = _UNIQUE_NAME.match(key)
    if match is None:
        return (0, 0, 0, key)
    seconds, micros, counter = match.groups()
    return (int(seconds), int(micros or 0), int(counter or 0), key)


__all__ = [
    "Account",
    "Folder",
    "FolderChanges",
    "InvalidMailboxName",
    "Message",
    "Store",
]
