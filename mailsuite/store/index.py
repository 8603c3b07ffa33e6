"""A per-folder index beside the Maildir: what is costly to learn from the files.

Large folders must not be reread for every SELECT or bulk FETCH, so each
folder keeps ``mailsuite-index.sqlite`` (SQLite from the standard library,
in WAL mode) with, per UID: the size as served, the arrival time, the
CONDSTORE modification sequence (RFC 7162), and cached blobs the IMAP
server asks to keep (ENVELOPE, BODYSTRUCTURE, header fields). Expunged UIDs
are kept with the modseq of their expunge, for QRESYNC's VANISHED.

It is a cache, never the record: message identities live in the UID list,
flags in the file names. A missing, damaged or foreign index is rebuilt
from the files. Modification sequences must only grow, so a rebuilt index
starts counting from the current time in microseconds, above any value an
earlier index can have handed out.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from twisted.logger import Logger

log = Logger()

FILENAME = "mailsuite-index.sqlite"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    uid INTEGER PRIMARY KEY,
    size INTEGER,
    internaldate REAL,
    modseq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    uid INTEGER NOT NULL,
    name TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (uid, name)
);
CREATE TABLE IF NOT EXISTS expunged (uid INTEGER PRIMARY KEY, modseq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS search_texts (uid INTEGER PRIMARY KEY, value TEXT NOT NULL);
"""


#: UIDs per ``blobs`` query: SQLite before 3.32 allows 999 parameters, names included.
_MAX_UIDS = 900


def _marks(count: int) -> str:
    """``?, ?, ?`` for ``count`` query parameters."""
    return ", ".join("?" * count)


def fresh_modseq() -> int:
    """A starting modseq above any an earlier index of this folder handed out."""
    return time.time_ns() // 1000


class FolderIndex:
    """The SQLite cache of one folder, tied to one UIDVALIDITY."""

    def __init__(self, folder_path: str, uidvalidity: int) -> None:
        self.path = os.path.join(folder_path, FILENAME)
        self._batch_depth = 0
        self.db = self._open(uidvalidity)
        self.highest_modseq = self._highest_recorded()

    def _highest_recorded(self) -> int:
        """The largest modseq handed out: the base, or any message's or expunge's."""
        base = self._meta("modseq_base")
        if base is None:
            base = str(fresh_modseq())
            self._write("INSERT INTO meta VALUES ('modseq_base', ?)", (base,))
        (messages,) = self.db.execute("SELECT max(modseq) FROM messages").fetchone()
        (expunged,) = self.db.execute("SELECT max(modseq) FROM expunged").fetchone()
        return max(int(base), messages or 0, expunged or 0)

    # -- opening -------------------------------------------------------------

    def _open(self, uidvalidity: int) -> sqlite3.Connection:
        try:
            db = self._connect()
            if self._usable(db, uidvalidity):
                return db
            db.close()
        except sqlite3.DatabaseError as e:
            log.warn("index {path} is damaged ({error}); rebuilding", path=self.path, error=e)
        self._remove_files()
        db = self._connect()
        db.execute("INSERT INTO meta VALUES ('version', ?)", (SCHEMA_VERSION,))
        db.execute("INSERT INTO meta VALUES ('uidvalidity', ?)", (str(uidvalidity),))
        return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # A cache: an application crash loses nothing committed; a power loss
        # may lose the last commits, which are then rebuilt from the files.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        return db

    def _usable(self, db: sqlite3.Connection, uidvalidity: int) -> bool:
        rows = dict(db.execute("SELECT name, value FROM meta").fetchall())
        return rows.get("version") == SCHEMA_VERSION and rows.get("uidvalidity") == str(
            uidvalidity
        )

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + suffix)

    def close(self) -> None:
        self.db.close()

    # -- batching ------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group the writes of a bulk operation (STORE 1:*) into one commit."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0 and self.db.in_transaction:
                self.db.execute("COMMIT")

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]] | tuple[Any, ...] = ()) -> None:
        """One write: committed at once, or with the batch it belongs to."""
        if self._batch_depth and not self.db.in_transaction:
            self.db.execute("BEGIN")
        if isinstance(rows, tuple):
            self.db.execute(sql, rows)
            return
        # Many rows share one transaction; alone, each would commit by itself.
        with self.batch():
            if not self.db.in_transaction:
                self.db.execute("BEGIN")
            self.db.executemany(sql, rows)

    # -- meta ----------------------------------------------------------------

    def _meta(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def history_start(self) -> int:
        """The modseq this index began at: expunges before it were not recorded."""
        return int(self._meta("modseq_base") or 0)

    def next_modseq(self) -> int:
        """A new modseq for one change (several messages may share it).

        It is recorded with the rows that carry it, not on its own.
        """
        self.highest_modseq += 1
        return self.highest_modseq

    # -- per message ---------------------------------------------------------

    def load(self) -> dict[int, tuple[int | None, float | None, int]]:
        """Every row: uid -> (size, internaldate, modseq)."""
        rows = self.db.execute("SELECT uid, size, internaldate, modseq FROM messages")
        return {uid: (size, date, modseq) for uid, size, date, modseq in rows}

    def add(self, rows: Iterable[tuple[int, int | None, int]]) -> None:
        """Record new messages as (uid, size or None, modseq)."""
        self._write("INSERT OR REPLACE INTO messages (uid, size, modseq) VALUES (?, ?, ?)", rows)

    def set_size(self, uid: int, size: int) -> None:
        self._write("UPDATE messages SET size = ? WHERE uid = ?", (size, uid))

    def set_internaldate(self, uid: int, when: float) -> None:
        self._write("UPDATE messages SET internaldate = ? WHERE uid = ?", (when, uid))

    def set_modseq(self, uids: list[int], modseq: int) -> None:
        self._write("UPDATE messages SET modseq = ? WHERE uid = ?", [(modseq, u) for u in uids])

    def forget(self, uids: list[int], modseq: int) -> None:
        """Drop expunged messages, remembering when they went (for VANISHED)."""
        pairs = [(u,) for u in uids]
        self._write("DELETE FROM messages WHERE uid = ?", pairs)
        self._write("DELETE FROM blobs WHERE uid = ?", pairs)
        self._write("DELETE FROM search_texts WHERE uid = ?", pairs)
        self._write("INSERT OR REPLACE INTO expunged VALUES (?, ?)", [(u, modseq) for u in uids])

    def expunged_since(self, modseq: int) -> list[int]:
        """UIDs expunged after ``modseq``, ascending."""
        rows = self.db.execute("SELECT uid FROM expunged WHERE modseq > ? ORDER BY uid", (modseq,))
        return [uid for (uid,) in rows]

    # -- cached blobs --------------------------------------------------------

    def blob(self, uid: int, name: str) -> bytes | None:
        row = self.db.execute(
            "SELECT value FROM blobs WHERE uid = ? AND name = ?", (uid, name)
        ).fetchone()
        return bytes(row[0]) if row else None

    def blobs(self, uids: Sequence[int], names: Sequence[str]) -> dict[tuple[int, str], bytes]:
        """Many kept blobs in one query each ``_MAX_UIDS`` messages: (uid, name) -> value.

        A bulk header FETCH asks for the same few names of thousands of
        messages; one lookup per message and name was most of its time.
        """
        found: dict[tuple[int, str], bytes] = {}
        names = list(names)
        for start in range(0, len(uids), _MAX_UIDS):
            part = list(uids[start : start + _MAX_UIDS])
            sql = (
                "SELECT uid, name, value FROM blobs"
                f" WHERE uid IN ({_marks(len(part))}) AND name IN ({_marks(len(names))})"
            )
            for uid, name, value in self.db.execute(sql, (*part, *names)):
                found[uid, name] = bytes(value)
        return found

    def put_blob(self, uid: int, name: str, value: bytes) -> None:
        self._write("INSERT OR REPLACE INTO blobs VALUES (?, ?, ?)", (uid, name, value))

    # -- search texts --------------------------------------------------------

    def search_texts(self) -> dict[int, str]:
        """Every message's kept search record: uid -> text (one query for a whole folder).

        One row per message in a table of its own, so a large folder's
        records load in one scan instead of one blob lookup per message.
        """
        return dict(self.db.execute("SELECT uid, value FROM search_texts"))

    def put_search_texts(self, rows: Iterable[tuple[int, str]]) -> None:
        """Keep search records as (uid, text); they derive from content that never changes."""
        self._write("INSERT OR REPLACE INTO search_texts VALUES (?, ?)", rows)
