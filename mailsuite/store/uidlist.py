"""The persistent record of message identities in one Maildir folder.

IMAP UIDs, the folder's UIDVALIDITY and POP3 UIDLs all come from this file,
``mailsuite-uidlist`` beside ``cur/``. It maps each message's unique key (the
file name before ``:``, which stays the same through moves from ``new/`` to
``cur/`` and flag renames) to its UID, so identities survive restarts and
other programs renaming files.

The file is an append-only log, readable by a person::

    mailsuite-uidlist 1 <uidvalidity> <uidnext>
    +<uid> <key>
    -<uid>

Appends are cheap; when removals outnumber live entries the file is
rewritten atomically. If the file is unreadable the record is lost, and only
then does the folder get a new UIDVALIDITY.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from twisted.internet import threads
from twisted.logger import Logger

from mailsuite import durable
from mailsuite.store.errors import TemporaryFailure

log = Logger()

FILENAME = "mailsuite-uidlist"
MAGIC = "mailsuite-uidlist"
VERSION = "1"

#: Removal lines tolerated before the log is compacted.
COMPACT_AFTER = 1000


class UidList:
    """UIDs by key for one folder, loaded from and appended to its log."""

    def __init__(self, folder_path: str, reactor: Any = None) -> None:
        self.path = os.path.join(folder_path, FILENAME)
        self.reactor = reactor
        self.uidvalidity = 0
        self.uidnext = 1
        self.uid_of_key: dict[str, int] = {}
        self._removed_lines = 0
        self._load()

    # -- reading -------------------------------------------------------------

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                text = f.read().decode("utf-8")
        except FileNotFoundError:
            self._start_new()
            return
        except UnicodeDecodeError:
            text = ""
        except OSError as e:
            # A passing I/O error must not cost every client its cache.
            raise TemporaryFailure(f"cannot read {self.path}: {e.strerror}") from e
        if not self._parse(text.split("\n")):
            log.warn("uid list {path} is damaged; UIDVALIDITY changes", path=self.path)
            self._start_new(after=self._last_written())

    def _parse(self, lines: list[str]) -> bool:
        header = lines[0].split()
        if len(header) != 4 or header[0] != MAGIC or header[1] != VERSION:
            return False
        try:
            self.uidvalidity = int(header[2])
            self.uidnext = int(header[3])
        except ValueError:
            return False
        key_of_uid: dict[int, str] = {}
        body = [line for line in lines[1:] if line]
        for number, line in enumerate(body, start=1):
            # A torn last line from a crash mid-append is harmless; a bad
            # line before the end means the file cannot be trusted.
            if not self._apply(line, key_of_uid) and number != len(body):
                return False
        self.uid_of_key = {key: uid for uid, key in key_of_uid.items()}
        return self.uidvalidity > 0

    def _apply(self, line: str, key_of_uid: dict[int, str]) -> bool:
        try:
            if line[0] == "+":
                uid_text, key = line[1:].split(" ", 1)
                uid = int(uid_text)
                key_of_uid[uid] = key
                self.uidnext = max(self.uidnext, uid + 1)
            elif line[0] == "-":
                key_of_uid.pop(int(line[1:]), None)
                self._removed_lines += 1
            else:
                return False
        except (ValueError, IndexError):
            return False
        return True

    def _last_written(self) -> int:
        """When a damaged record last changed; its UIDVALIDITY was set no later."""
        try:
            return int(os.stat(self.path).st_mtime)
        except OSError:
            return 0

    def _start_new(self, after: int = 0) -> None:
        """Begin a new record whose UIDVALIDITY is greater than any the old one had."""
        self.uidvalidity = max(int(time.time()), after + 1)
        self.uidnext = 1
        self.uid_of_key = {}
        self._rewrite()

    # -- writing -------------------------------------------------------------

    def assign(self, keys: Iterable[str]) -> list[int]:
        """Give each new key the next UID, in the order given, and record it."""
        uids = []
        lines = []
        for key in keys:
            uid = self.uidnext
            self.uidnext += 1
            self.uid_of_key[key] = uid
            uids.append(uid)
            lines.append(f"+{uid} {key}\n")
        if lines:
            self._append("".join(lines))
        return uids

    def forget(self, keys: Iterable[str]) -> None:
        """Drop keys whose files are gone; their UIDs are never reused."""
        lines = []
        for key in keys:
            uid = self.uid_of_key.pop(key, None)
            if uid is not None:
                lines.append(f"-{uid}\n")
        if not lines:
            return
        self._removed_lines += len(lines)
        if self._removed_lines > max(COMPACT_AFTER, len(self.uid_of_key)):
            self._rewrite()
        else:
            self._append("".join(lines))

    def _append(self, text: str) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            fd = os.dup(f.fileno())
        self._sync_later(fd)

    def _sync_later(self, fd: int) -> None:
        """Fsync an append in a thread; losing it in a crash is recoverable.

        UIDs are assigned in a fixed order (time of arrival, then key), so a
        log whose tail was lost assigns the same UIDs again to the same files.
        """

        def sync() -> None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        if self.reactor is None:
            sync()
            return
        d = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), sync)
        d.addErrback(lambda f: log.failure("fsync of {path} failed", f, path=self.path))

    def _rewrite(self) -> None:
        lines = [f"{MAGIC} {VERSION} {self.uidvalidity} {self.uidnext}\n"]
        by_uid = sorted((uid, key) for key, uid in self.uid_of_key.items())
        lines.extend(f"+{uid} {key}\n" for uid, key in by_uid)
        durable.replace_file(self.path, "".join(lines).encode("utf-8"))
        self._removed_lines = 0
