"""The durable outbound spool: one message file and one envelope per message.

Layout, in one folder a person can read with ``ls`` and ``cat``::

    <queue>/<id>.eml    the message as accepted (CRLF, Received header first)
    <id>.json           the envelope and delivery state of each recipient

``<id>`` is the UTC arrival time and a random suffix (``20261204153000.9f3a1c2e``),
so a listing is in arrival order. The message is written first, then the
envelope (to a temporary name, renamed into place): the envelope's presence
commits the entry. Both are fsynced and the folder is fsynced before
``enqueue`` fires, so a message is on disk before SMTP says 250. The folder
fsync is shared between concurrent submissions (``durable.DirectorySyncer``).

After a crash, ``recover()`` (called once at start-up, before any
``enqueue``) removes what was never acknowledged: a message without an
envelope, an envelope without a message, and temporary files.

Envelope JSON (never pickle, so it stays readable and safe to load)::

    {"id": ..., "sender": "" for the null reverse-path, "created": epoch,
     "recipients": [{"address", "state": "pending", "attempts": 0,
                     "next_attempt": epoch, "last_reply": null}]}
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from twisted.internet import defer, threads
from twisted.logger import Logger

from mailsuite import durable
from mailsuite.store.errors import TemporaryFailure

log = Logger()

#: A recipient still to be delivered; the relayer adds its own states.
PENDING = "pending"

MESSAGE_SUFFIX = ".eml"
ENVELOPE_SUFFIX = ".json"

#: Queue ids: UTC time to the second, then 32 random bits. Checked before
#: any id becomes a path, so nothing outside the spool folder is touched.
_ID = re.compile(r"^\d{14}\.[0-9a-f]{8}$")

#: Attempts at a fresh id when one is already taken (practically never).
_ID_ATTEMPTS = 5


@dataclass
class QueuedRecipient:
    """One recipient of a queued message and how its delivery stands."""

    address: str
    state: str = PENDING
    attempts: int = 0
    next_attempt: float = 0.0
    last_reply: str | None = None


@dataclass
class QueueEntry:
    """The envelope of one queued message: who sent it, to whom, since when."""

    id: str
    sender: str
    created: float
    recipients: list[QueuedRecipient] = field(default_factory=list)

    def to_json(self) -> bytes:
        text = json.dumps(asdict(self), indent=2, ensure_ascii=False)
        return (text + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> QueueEntry:
        """Parse an envelope; ``ValueError`` says what is wrong with it."""
        record = json.loads(data.decode("utf-8"))
        if not isinstance(record, dict):
            raise ValueError("the envelope is not a JSON object")
        recipients = record.get("recipients")
        if not isinstance(recipients, list) or not recipients:
            raise ValueError("the envelope has no recipients")
        try:
            return cls(
                id=_string(record["id"]),
                sender=_string(record["sender"]),
                created=float(record["created"]),
                recipients=[QueuedRecipient(**r) for r in recipients],
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"the envelope is incomplete: {e}") from None


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, found {value!r}")
    return value


def check_id(queue_id: str) -> str:
    """Return ``queue_id`` if it has the spool's form, else ``ValueError``."""
    if not _ID.match(queue_id):
        raise ValueError(f"not a queue id: {queue_id!r}")
    return queue_id


class Spool:
    """Queued messages in one folder; every change is durable before it fires."""

    def __init__(self, path: str, reactor: Any, disk: durable.Disk = durable.DISK) -> None:
        self.path = os.path.abspath(path)
        self.reactor = reactor
        self.disk = disk
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self._syncer = durable.DirectorySyncer(reactor, self.path, disk)
        self._updates: dict[str, defer.Deferred[None]] = {}
        #: Parsed envelopes by id, with the file signature they were read at:
        #: the relayer lists the queue after every enqueue and delivery, and
        #: rereading every envelope each time made a burst quadratic.
        self._parsed: dict[str, tuple[tuple[int, int, int], QueueEntry]] = {}
        self._listeners: list[Callable[[str], None]] = []

    # -- paths ---------------------------------------------------------------

    def message_path(self, queue_id: str) -> str:
        return os.path.join(self.path, check_id(queue_id) + MESSAGE_SUFFIX)

    def envelope_path(self, queue_id: str) -> str:
        return os.path.join(self.path, check_id(queue_id) + ENVELOPE_SUFFIX)

    # -- adding --------------------------------------------------------------

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(queue_id)`` once each new entry is durable (wakes the relayer)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[str], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def enqueue(self, sender: str, recipients: list[str], data: bytes) -> defer.Deferred[str]:
        """Store a message for ``recipients``; fires with its id once durable.

        Fails with ``TemporaryFailure`` if the disk does; nothing is left
        behind then, as far as the disk allows.
        """
        if not recipients:
            raise ValueError("a queued message needs at least one recipient")

        now = self.reactor.seconds()
        entry = QueueEntry(
            id="",
            sender=sender,
            created=now,
            recipients=[QueuedRecipient(address, next_attempt=now) for address in recipients],
        )
        return defer.ensureDeferred(self._enqueue(entry, data))

    async def _enqueue(self, entry: QueueEntry, data: bytes) -> str:
        queue_id = await self._in_thread(self._write_entry, entry, data)

        try:
            await self._syncer.sync()
        except Exception as e:
            await self._in_thread(self._discard, queue_id)
            raise TemporaryFailure(f"cannot sync the queue folder: {e}") from e

        for listener in list(self._listeners):
            try:
                listener(queue_id)
            except Exception:
                log.failure("queue listener failed for {id}", id=queue_id)
        return queue_id

    def _write_entry(self, entry: QueueEntry, data: bytes) -> str:
        """Blocking: write the message, then commit it with its envelope."""
        for _attempt in range(_ID_ATTEMPTS):
            entry.id = new_id(entry.created)
            try:
                durable.write_file(self.message_path(entry.id), data, self.disk)
            except FileExistsError:
                continue
            except OSError as e:
                raise TemporaryFailure(f"cannot write to the queue: {e.strerror}") from e
            break
        else:
            raise TemporaryFailure("no free queue id")

        try:
            self._write_envelope(entry)
        except OSError as e:
            self._discard(entry.id)
            raise TemporaryFailure(f"cannot write to the queue: {e.strerror}") from e
        return entry.id

    def _write_envelope(self, entry: QueueEntry) -> None:
        final = self.envelope_path(entry.id)
        temporary = final + ".tmp"
        durable.write_file(temporary, entry.to_json(), self.disk)
        try:
            self.disk.rename(temporary, final)
        except OSError:
            _unlink_quietly(temporary)
            raise

    def _discard(self, queue_id: str) -> None:
        """Blocking, best effort: remove an entry that was never acknowledged."""
        try:
            self._delete(queue_id)
        except OSError as e:
            log.error(
                "cannot remove failed queue entry {id}: {problem}", id=queue_id, problem=e.strerror
            )

    def _delete(self, queue_id: str) -> None:
        """Blocking: the envelope first, so a crash in between leaves only garbage."""
        _unlink_quietly(self.envelope_path(queue_id))
        _unlink_quietly(self.message_path(queue_id))

    # -- reading -------------------------------------------------------------

    def entries(self) -> list[QueueEntry]:
        """Every committed entry, oldest first (blocking; a small folder).

        An envelope that cannot be parsed is logged and left where it is for
        the operator: it was acknowledged, so it is never deleted here.
        """
        names = set(os.listdir(self.path))
        found = []
        seen = set()
        for name in names:
            queue_id = _id_of(name, ENVELOPE_SUFFIX)
            if queue_id is None or os.path.basename(self.message_path(queue_id)) not in names:
                continue
            entry = self._cached_load(queue_id)
            if entry is not None:
                found.append(entry)
                seen.add(queue_id)
        for gone in set(self._parsed) - seen:
            del self._parsed[gone]
        found.sort(key=lambda e: (e.created, e.id))
        return found

    def entry(self, queue_id: str) -> QueueEntry | None:
        """One committed entry, or None (blocking; one stat, parsed only if it changed).

        The relayer starts a freshly queued message with this rather than
        listing the whole folder, which made every enqueue cost O(queue).
        """
        check_id(queue_id)
        if not os.path.exists(self.message_path(queue_id)):
            return None
        return self._cached_load(queue_id)

    def _cached_load(self, queue_id: str) -> QueueEntry | None:
        """An envelope, parsed again only when its file changed (another process's
        ``queue retry``, or our own update)."""
        try:
            st = os.stat(self.envelope_path(queue_id))
        except FileNotFoundError:
            return None
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._parsed.get(queue_id)
        if cached is not None and cached[0] == signature:
            return cached[1]
        entry = self._load(queue_id)
        if entry is not None:
            self._parsed[queue_id] = (signature, entry)
        return entry

    def _load(self, queue_id: str) -> QueueEntry | None:
        path = self.envelope_path(queue_id)
        try:
            with open(path, "rb") as f:
                entry = QueueEntry.from_json(f.read())
            if entry.id != queue_id:
                raise ValueError(f"its id {entry.id!r} differs from its file name")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.error(
                "queue envelope {path} is unreadable and is skipped: {problem}",
                path=path,
                problem=str(e),
            )
            return None
        return entry

    def read_message(self, queue_id: str) -> bytes:
        """The queued message (blocking; the relayer reads it in a thread)."""
        with open(self.message_path(queue_id), "rb") as f:
            return f.read()

    # -- changing ------------------------------------------------------------

    def update(self, entry: QueueEntry) -> defer.Deferred[None]:
        """Durably replace the envelope with ``entry``'s current state.

        Updates of one entry run one after another, never side by side, so
        two of them cannot race on the temporary file.
        """
        check_id(entry.id)
        data = entry.to_json()
        previous = self._updates.get(entry.id)

        async def write() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            await self._in_thread(self._replace_envelope, entry.id, data)

        d = defer.ensureDeferred(write())
        self._updates[entry.id] = d

        def done(result: Any) -> Any:
            if self._updates.get(entry.id) is d:
                del self._updates[entry.id]
            return result

        return d.addBoth(done)

    def _replace_envelope(self, queue_id: str, data: bytes) -> None:
        try:
            durable.replace_file(self.envelope_path(queue_id), data, self.disk)
        except OSError as e:
            raise TemporaryFailure(f"cannot update queue entry {queue_id}: {e.strerror}") from e

    def remove(self, queue_id: str) -> defer.Deferred[None]:
        """Durably drop a delivered or bounced entry."""
        check_id(queue_id)
        return defer.ensureDeferred(self._remove(queue_id))

    async def _remove(self, queue_id: str) -> None:
        previous = self._updates.get(queue_id)
        if previous is not None:
            # An envelope write still in flight would rename the envelope
            # back into place after we unlinked it: let it land first.
            with contextlib.suppress(Exception):
                await previous
        try:
            await self._in_thread(self._delete, queue_id)
            await self._syncer.sync()
        except OSError as e:
            raise TemporaryFailure(f"cannot remove queue entry {queue_id}: {e}") from e

    # -- start-up ------------------------------------------------------------

    def recover(self) -> list[str]:
        """Remove what a crash left unacknowledged; returns the names removed.

        Call once at start-up, before any ``enqueue`` in this process: an
        entry being written looks exactly like one a crash interrupted.
        """
        names = set(os.listdir(self.path))
        removed = []
        for name in sorted(names):
            if _is_leftover(name, names):
                _unlink_quietly(os.path.join(self.path, name))
                removed.append(name)
        if removed:
            self.disk.fsync_directory(self.path)
            log.warn(
                "removed {count} unacknowledged queue files from {path}: {names}",
                count=len(removed),
                path=self.path,
                names=", ".join(removed),
            )
        return removed

    # -- helpers -------------------------------------------------------------

    def _in_thread(self, function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        pool = self.reactor.getThreadPool()
        return threads.deferToThreadPool(self.reactor, pool, function, *args)


def new_id(now: float) -> str:
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    return f"{stamp}.{secrets.token_hex(4)}"


def _id_of(name: str, suffix: str) -> str | None:
    if not name.endswith(suffix):
        return None
    queue_id = name[: -len(suffix)]
    return queue_id if _ID.match(queue_id) else None


def _is_leftover(name: str, names: set[str]) -> bool:
    """A temporary file, or one half of an entry whose other half is missing."""
    if ".tmp" in name:
        return True
    message_id = _id_of(name, MESSAGE_SUFFIX)
    if message_id is not None:
        return message_id + ENVELOPE_SUFFIX not in names
    envelope_id = _id_of(name, ENVELOPE_SUFFIX)
    if envelope_id is not None:
        return envelope_id + MESSAGE_SUFFIX not in names
    return False


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
