"""The password file, and the ``twisted.cred`` checker that logs users in.

The file has one ``address:hash`` line per user; ``#`` comments and blank
lines are kept. New hashes are argon2. Hashes brought over from other
servers (bcrypt, SHA-512-crypt) still verify, and are replaced by argon2 on
the next successful login, so a migration needs no password resets.

The server and the ``mailsuite user`` command share the file: every write
replaces it atomically under a lock, and every read first checks whether the
file changed, so a user added from the command line can log in at once.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from passlib.context import CryptContext
from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite import durable
from mailsuite.maillog import MailLog
from mailsuite.watchedfile import read_if_changed

log = Logger()

#: argon2 for new hashes; the others only so imported hashes verify.
PASSWORDS = CryptContext(schemes=["argon2", "bcrypt", "sha512_crypt"], deprecated="auto")

#: ``run_in_thread(function, *args)`` returns a Deferred of its result.
ThreadRunner = Callable[..., "defer.Deferred[Any]"]


class UserError(Exception):
    """A request the password file cannot honour, worded for the operator."""


def split_address(address: str) -> tuple[str, str]:
    """``(local, domain)`` of a plausible address, or ``UserError``."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise UserError(f"{address!r} is not an address of the form user@domain")
    if any(c.isspace() or c in ":/\\" or ord(c) < 32 for c in address):
        raise UserError(f"{address!r} contains a space, ':', '/', '\\' or a control character")
    if local.startswith(".") or domain.startswith("."):
        # The store keeps mail in <domain>/<local>/; a leading dot is a folder.
        raise UserError(f"{address!r}: neither part may start with '.'")
    return local, domain


def normalize_address(address: str) -> str:
    """The spelling we store: the local part as given, the domain lowercase."""
    local, domain = split_address(address)
    return f"{local}@{domain.lower()}"


@dataclass
class _Line:
    """One line of the file: a user, or text kept as it was (``address`` None)."""

    text: str
    address: str | None = None
    hash: str = ""


class UserDatabase:
    """The ``address:hash`` file, reread whenever it changes on disk."""

    def __init__(self, path: str, context: CryptContext = PASSWORDS) -> None:
        self.path = path
        self.context = context
        self._lines: list[_Line] = []
        self._index: dict[str, _Line] = {}
        self._signature: tuple[int, int, int] | None = None
        self._lock = threading.RLock()

    # -- reading -------------------------------------------------------------

    def exists(self, address: str) -> bool:
        return self.canonical(address) is not None

    def canonical(self, address: str) -> str | None:
        """The stored spelling of ``address``, matched without regard to case."""
        line = self._find(address)
        return line.address if line else None

    def addresses(self) -> list[str]:
        with self._lock:
            self._refresh()
            return [
                line.address
                for line in self._lines
                if line.address and self._index.get(line.address.lower()) is line
            ]

    def lookup(self, address: str) -> tuple[str, str] | None:
        """``(stored spelling, hash)`` of a user, matched without regard to case."""
        with self._lock:
            line = self._find(address)
            if line is None or line.address is None:
                return None
            return line.address, line.hash

    def _find(self, address: str) -> _Line | None:
        with self._lock:
            self._refresh()
            return self._index.get(address.lower())

    def _refresh(self) -> None:
        """Reread the file if its inode, size or mtime changed."""
        lines, signature = read_if_changed(self.path, self._signature)
        if lines is not None:
            self._load(lines, signature)

    def _load(self, texts: list[str], signature: tuple[int, int, int] | None) -> None:
        lines = [self._parse(number, text) for number, text in enumerate(texts, 1)]
        index: dict[str, _Line] = {}
        for number, line in enumerate(lines, 1):
            if not line.address:
                continue
            if line.address.lower() in index:
                self._warn(number, f"{line.address} is listed twice; the first line counts")
                continue
            index[line.address.lower()] = line

        self._lines = lines
        self._index = index
        self._signature = signature

    def _parse(self, number: int, text: str) -> _Line:
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            return _Line(text)

        address, _, hashed = stripped.rpartition(":")
        problem = self._problem(address, hashed)
        if problem:
            self._warn(number, problem)
            return _Line(text)
        return _Line(text, address, hashed)

    def _warn(self, number: int, problem: str) -> None:
        log.warn(
            "{path} line {line}: {problem}; the line is ignored",
            path=self.path,
            line=number,
            problem=problem,
        )

    def _problem(self, address: str, hashed: str) -> str | None:
        if not address:
            return "not of the form address:hash"
        try:
            split_address(address)
        except UserError as e:
            return str(e)
        if self.context.identify(hashed, required=False) is None:
            return "the password hash is of no known kind"
        return None

    # -- writing -------------------------------------------------------------

    def add(self, address: str, password: str) -> str:
        """Add a user; returns the stored spelling. ``UserError`` if present."""
        address = normalize_address(address)
        hashed = self.context.hash(password)
        with self._writing():
            if address.lower() in self._index:
                raise UserError(f"{address} already exists")
            self._lines.append(_Line(f"{address}:{hashed}", address, hashed))

        return address

    def set_password(self, address: str, password: str) -> str:
        """Give a user a new password; returns the stored spelling."""
        hashed = self.context.hash(password)
        with self._writing():
            line = self._existing(address)
            self._set_hash(line, hashed)
        return line.address or address

    def delete(self, address: str) -> str:
        """Remove a user; returns the stored spelling. Their mail stays."""
        with self._writing():
            line = self._existing(address)
            self._lines.remove(line)
        return line.address or address

    def replace_hash(self, address: str, old: str, new: str) -> bool:
        """Swap ``old`` for ``new`` unless the password changed meanwhile."""
        with self._writing():
            line = self._index.get(address.lower())
            if line is None or line.hash != old:
                return False
            self._set_hash(line, new)
        return True

    def _existing(self, address: str) -> _Line:
        line = self._index.get(address.lower())
        if line is None:
            raise UserError(f"there is no user {address}")
        return line

    def _set_hash(self, line: _Line, hashed: str) -> None:
        line.hash = hashed
        line.text = f"{line.address}:{hashed}"

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Read fresh, let the caller edit ``_lines``, then replace the file.

        The lock file serialises the server and ``mailsuite user`` commands,
        so neither writes over a change the other just made.
        """
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o700, exist_ok=True)

        with self._lock, _file_lock(self.path + ".lock"):
            self._signature = None
            self._refresh()
            try:
                yield
                data = "".join(line.text + "\n" for line in self._lines)
                durable.replace_file(self.path, data.encode("utf-8", "surrogateescape"))
            finally:
                # Whether or not the edit went through, the file is the truth.
                self._signature = None
                self._refresh()


@contextmanager
def _file_lock(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class SessionCredentials(UsernamePassword):
    """Username and password, plus where they came from for the mail log.

    Protocols may pass plain ``UsernamePassword``; the log then says
    ``protocol=unknown``.
    """

    def __init__(self, username: bytes, password: bytes, protocol: str, session: str) -> None:
        super().__init__(username, password)
        self.protocol = protocol
        self.session = session


@implementer(ICredentialsChecker)
class PasswordChecker:
    """Checks ``IUsernamePassword`` against a ``UserDatabase``.

    The Deferred fires with the canonical address. Any refusal (unknown
    user, wrong password, a username that is not an address) looks the same
    and arrives ``failure_delay`` seconds late, to slow down guessing. A
    problem on our side (the file cannot be read) is not a refusal: it
    fails with that error at once, and protocols answer "try again later".
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        db: UserDatabase,
        reactor: Any,
        failure_delay: float,
        maillog: MailLog,
        run_in_thread: ThreadRunner | None = None,
    ) -> None:
        self.db = db
        self.reactor = reactor
        self.failure_delay = failure_delay
        self.maillog = maillog
        self.run_in_thread = run_in_thread or self._thread_pool_runner
        self._dummy_hash: str | None = None

    def _thread_pool_runner(self, function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        pool = self.reactor.getThreadPool()
        return threads.deferToThreadPool(self.reactor, pool, function, *args)

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[Any]:
        """Fires with the canonical address (a str; Twisted's stub says bytes)."""
        username = _text(credentials.username)
        password = credentials.password
        if isinstance(password, str):
            password = password.encode("utf-8")

        d = self.run_in_thread(self._verify, username, password)
        d.addCallback(self._result, credentials, username)
        return d

    def _verify(self, username: str | None, password: bytes) -> str | None:
        """Blocking: the canonical address if the password is right, else None."""
        entry = self.db.lookup(username) if username and "@" in username else None
        if entry is None:
            self.db.context.verify(password, self._dummy())
            return None

        address, stored = entry
        valid, new_hash = self.db.context.verify_and_update(password, stored)
        if not valid:
            return None
        if new_hash is not None:
            self._upgrade(address, stored, new_hash)
        return address

    def _upgrade(self, address: str, old: str, new: str) -> None:
        """Store the stronger hash; failing to is no reason to refuse the login."""
        try:
            replaced = self.db.replace_hash(address, old, new)
        except OSError:
            log.failure("Could not store the upgraded hash of {address}", address=address)
            return

        if replaced:
            log.info("Upgraded the password hash of {address}", address=address)

    def _dummy(self) -> str:
        """A hash nobody knows the password of, so unknown users cost the same."""
        if self._dummy_hash is None:
            self._dummy_hash = self.db.context.hash(secrets.token_hex(16))
        return self._dummy_hash

    def _result(self, address: str | None, credentials: Any, username: str | None) -> Any:
        if address is not None:
            return address

        self.maillog.auth_failed(
            protocol=getattr(credentials, "protocol", "unknown"),
            session=getattr(credentials, "session", "-"),
            username=username if username is not None else repr(credentials.username),
        )
        return task.deferLater(self.reactor, self.failure_delay, _refuse)


def _refuse() -> None:
    raise error.UnauthorizedLogin("authentication failed")


def _text(value: bytes | str) -> str | None:
    """A username as text, or None when it is not UTF-8."""
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None
