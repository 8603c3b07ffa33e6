"""Durable writes behind one small seam: write, fsync, rename, fsync the folder.

Everything that must survive a crash goes through ``write_file`` and
``DirectorySyncer``, so tests can swap in a failing or counting ``Disk``.
Callers run ``write_file`` in a thread; ``DirectorySyncer`` runs its fsyncs
in threads itself and lets many renames share one directory fsync, which is
what makes durable intake fast under concurrency.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from twisted.internet import defer, threads


class Disk:
    """The file-system calls whose durability matters; tests replace them."""

    def fsync(self, fd: int) -> None:
        # fdatasync flushes the data and what is needed to read it back (the
        # size), skipping only timestamps; the name is made durable by the
        # directory fsync that follows the rename.
        _sync_data(fd)

    def fsync_directory(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, source: str, target: str) -> None:
        os.rename(source, target)


_sync_data = getattr(os, "fdatasync", os.fsync)

DISK = Disk()


def write_file(path: str, data: bytes, disk: Disk = DISK, mtime: float | None = None) -> None:
    """Create ``path`` exclusively with ``data`` and fsync it (blocking)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        disk.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def replace_file(path: str, data: bytes, disk: Disk = DISK) -> None:
    """Atomically replace ``path`` with ``data``, durable on return (blocking)."""
    temporary = f"{path}.tmp.{os.getpid()}"
    _unlink_quietly(temporary)
    write_file(temporary, data, disk)
    disk.rename(temporary, path)
    disk.fsync_directory(os.path.dirname(path) or ".")


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class DirectorySyncer:
    """Fsyncs one directory for many waiters, in a thread.

    ``sync()`` returns a Deferred that fires once an fsync that *started after
    the call* has finished, so every rename done before the call is durable.
    While one fsync runs, all new callers share the next one.
    """

    def __init__(self, reactor: Any, path: str, disk: Disk = DISK) -> None:
        self._reactor = reactor
        self._path = path
        self._disk = disk
        self._running = False
        self._waiting: list[defer.Deferred[None]] = []

    def sync(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)
        if not self._running:
            self._start()
        return d

    def _start(self) -> None:
        waiters, self._waiting = self._waiting, []
        self._running = True
        pool = self._reactor.getThreadPool()
        d = threads.deferToThreadPool(self._reactor, pool, self._disk.fsync_directory, self._path)
        d.addBoth(self._finished, waiters)

    def _finished(self, result: Any, waiters: list[defer.Deferred[None]]) -> None:
        self._running = False
        for waiter in waiters:
            if isinstance(result, Exception) or hasattr(result, "raiseException"):
                waiter.errback(result)
            else:
                waiter.callback(None)
        if self._waiting:
            self._start()
