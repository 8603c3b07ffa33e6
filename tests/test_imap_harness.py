"""A harness for IMAP session tests: a real store, a fake clock, a string transport.

``Harness`` builds an ``IMAPFactory`` over a ``Store`` in a temporary folder.
Its reactor is a ``task.Clock`` whose thread pool runs work at once, so a
store write completes inside the command that asked for it and no test
waits on real time. Each ``connect()`` gives a ``Client`` that feeds bytes
to a session and collects what it wrote.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from mailsuite.config import default_config
from mailsuite.context import ServiceContext
from mailsuite.imap.server import IMAPFactory, IMAPSession
from mailsuite.maillog import MailLog
from mailsuite.store import Store


class SyncThreadPool:
    """Runs "threaded" work immediately, in the caller's thread."""

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kw: Any) -> None:
        try:
            result = f(*args, **kw)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class SyncReactor(task.Clock):
    """A clock that also runs thread-pool work and thread callbacks at once."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = SyncThreadPool()

    def getThreadPool(self) -> SyncThreadPool:
        return self.pool

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        f(*args, **kw)


class FakeChecker:
    """Passwords from a dict; refusals arrive after ``delay`` seconds on the clock."""

    def __init__(self, clock: task.Clock, users: dict[str, str], delay: float = 2.0) -> None:
        self.clock = clock
        self.users = users
        self.delay = delay
        self.requests: list[Any] = []

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[str]:
        self.requests.append(credentials)
        username = credentials.username.decode("utf-8")
        password = credentials.password.decode("utf-8")
        for address, secret in self.users.items():
            if address.lower() == username.lower() and secret == password:
                return defer.succeed(address)

        def refuse() -> str:
            raise UnauthorizedLogin("no")

        return task.deferLater(self.clock, self.delay, refuse)


class TLSStringTransport(StringTransport):
    """A string transport that records STARTTLS instead of doing a handshake."""

    def __init__(self, peer: str = "127.0.0.1") -> None:
        super().__init__(peerAddress=IPv4Address("TCP", peer, 40000))
        self.tls_context: Any = None
        self.tls_started_with: bytes | None = None

    def startTLS(self, context: Any) -> None:
        self.tls_context = context
        self.tls_started_with = self.value()


ALICE = "alice@example.com"
PASSWORD = "secret"
TLS_CONTEXT = object()


class Harness:
    """One factory over one store, and helpers to talk to it."""

    def __init__(
        self, testcase: unittest.TestCase, plaintext_on_loopback: bool = False, **limits: Any
    ) -> None:
        base = testcase.mktemp()
        os.makedirs(base)
        config = default_config(base)
        config = dataclasses.replace(
            config,
            limits=dataclasses.replace(config.limits, **limits),
            auth=dataclasses.replace(config.auth, plaintext_on_loopback=plaintext_on_loopback),
        )
        self.reactor = SyncReactor()
        self.store = Store(os.path.join(base, "maildirs"), self.reactor)
        self.checker = FakeChecker(self.reactor, {ALICE: PASSWORD})
        self.ctx = ServiceContext(
            config=config,
            reactor=self.reactor,
            store=self.store,
            checker=self.checker,
            tls=TLS_CONTEXT,
            spool=None,
            maillog=MailLog(),
        )
        self.imap = IMAPFactory(self.ctx, implicit_tls=False)
        self.imaps = IMAPFactory(self.ctx, implicit_tls=True)
        self.clients: list[Client] = []
        testcase.addCleanup(self.disconnect_all)

    def connect(self, secure: bool = True, peer: str = "127.0.0.1") -> Client:
        factory = self.imaps if secure else self.imap
        client = Client(factory, peer)
        self.clients.append(client)
        return client

    def login(self, user: str = ALICE, password: str = PASSWORD) -> Client:
        client = self.connect()
        client.command(f'LOGIN {user} "{password}"')
        return client

    def selected(self, mailbox: str = "INBOX", examine: bool = False) -> Client:
        client = self.login()
        client.command(("EXAMINE " if examine else "SELECT ") + mailbox)
        return client

    def deliver(self, data: bytes, address: str = ALICE, folder: str = "INBOX") -> str:
        """Deliver as SMTP does; the synchronous reactor finishes it at once."""
        return str(result_of(self.store.deliver(address, data, folder)))

    def disconnect_all(self) -> None:
        for client in self.clients:
            if not client.session.closed:
                client.session.connectionLost(None)


def result_of(d: defer.Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired (the reactor is synchronous)."""
    results: list[Any] = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError("Deferred has not fired")
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class Client:
    """Talks to one session over a string transport."""

    def __init__(self, factory: IMAPFactory, peer: str = "127.0.0.1") -> None:
        self.session: IMAPSession = factory.buildProtocol(None)
        self.transport = TLSStringTransport(peer)
        self.session.makeConnection(self.transport)
        self._tags = 0
        self.greeting = self.take()

    def take(self) -> bytes:
        """Everything written since the last call."""
        value = self.transport.value()
        self.transport.clear()
        return value

    def send(self, data: bytes) -> bytes:
        """Feed raw bytes; return what the server wrote in response."""
        self.session.dataReceived(data)
        return self.take()

    def next_tag(self) -> str:
        self._tags += 1
        return f"a{self._tags}"

    def command(self, text: str | bytes) -> bytes:
        """Send one tagged command line; return the whole response."""
        tag = self.next_tag().encode()
        line = text.encode("utf-8") if isinstance(text, str) else text
        return self.send(tag + b" " + line + b"\r\n")

    def lines(self, text: str | bytes) -> list[bytes]:
        return self.command(text).split(b"\r\n")[:-1]

    def tagged(self, text: str | bytes) -> bytes:
        """Only the tagged completion line of a command."""
        return self.lines(text)[-1]

    @property
    def last_tag(self) -> bytes:
        return f"a{self._tags}".encode()


MESSAGE = (
    b"From: Bob <bob@example.net>\r\n"
    b"To: Alice <alice@example.com>\r\n"
    b"Subject: Hello there\r\n"
    b"Date: Mon, 2 Jan 2023 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.net>\r\n"
    b"\r\n"
    b"First line of the body.\r\n"
    b"Second line.\r\n"
)


def message(n: int, subject: str = "Message", body: str = "Body text") -> bytes:
    return (
        f"From: Sender {n} <sender{n}@example.net>\r\n"
        f"To: alice@example.com\r\n"
        f"Subject: {subject} {n}\r\n"
        f"Date: Mon, {n % 28 + 1} Jan 2024 10:00:00 +0000\r\n"
        f"\r\n"
        f"{body} {n}\r\n"
    ).encode()
