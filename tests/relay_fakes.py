"""Test doubles for the relayer: a clock reactor, a DNS server and SMTP sinks.

Everything listens on loopback only. The DNS server answers MX, A and AAAA
from a dict the test writes; the SMTP sinks are scripted per recipient and
per attempt (250, 451 then 250, 550...), and record what they received.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, reactor, ssl, task
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.names import common, dns, server
from twisted.names import error as dns_error
from twisted.protocols.basic import LineReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase

from mailsuite import tls as server_tls

# -- a reactor whose time and threads the test controls -------------------------


class SyncThreadPool:
    """Runs "threaded" work at once, in the caller's thread."""

    def callInThreadWithCallback(self, on_result: Any, function: Any, *a: Any, **kw: Any) -> None:
        try:
            result = function(*a, **kw)
        except BaseException:
            from twisted.python.failure import Failure

            on_result(False, Failure())
        else:
            on_result(True, result)


class ClockReactor(task.Clock):
    """``task.Clock`` plus what the spool and store need: threads run inline."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        super().__init__()
        self.advance(start)
        self._pool = SyncThreadPool()

    def getThreadPool(self) -> SyncThreadPool:
        return self._pool

    def callFromThread(self, function: Any, *args: Any, **kw: Any) -> None:
        function(*args, **kw)


# -- DNS -----------------------------------------------------------------------


class Zone(common.ResolverBase):
    """MX, A and AAAA answers from dicts; names listed in ``servfail`` fail."""

    def __init__(self) -> None:
        super().__init__()
        self.mx: dict[str, list[tuple[int, str]]] = {}
        self.a: dict[str, list[str]] = {}
        self.aaaa: dict[str, list[str]] = {}
        self.servfail: set[str] = set()
        self.queries: list[tuple[str, int]] = []

    def exists(self, name: str) -> bool:
        return name in self.mx or name in self.a or name in self.aaaa

    def _lookup(self, name: Any, cls: int, type: int, timeout: Any) -> defer.Deferred[Any]:
        text = name.decode() if isinstance(name, bytes) else str(name)
        text = text.lower().rstrip(".")
        self.queries.append((text, type))
        if text in self.servfail:
            return defer.fail(RuntimeError("test SERVFAIL"))
        if not self.exists(text):
            return defer.fail(dns_error.AuthoritativeDomainError(text))

        answers = [
            dns.RRHeader(text, type, cls, 60, payload, auth=True)
            for payload in self._payloads(text, type)
        ]
        return defer.succeed((answers, [], []))

    def _payloads(self, name: str, type: int) -> list[Any]:
        if type == dns.MX:
            return [dns.Record_MX(pref, host, ttl=60) for pref, host in self.mx.get(name, [])]
        if type == dns.A:
            return [dns.Record_A(address, ttl=60) for address in self.a.get(name, [])]
        if type == dns.AAAA:
            return [dns.Record_AAAA(address, ttl=60) for address in self.aaaa.get(name, [])]
        return []


class _Silent(DatagramProtocol):
    """A name server that never answers: every query times out."""

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        pass


def start_dns(testcase: TestCase, zone: Zone) -> str:
    """Serve ``zone`` over UDP and TCP on 127.0.0.1; returns "127.0.0.1:port"."""
    factory = server.DNSServerFactory(authorities=[zone])
    for _ in range(20):
        udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
        port = udp.getHost().port
        try:
            tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
        except CannotListenError:
            # The UDP port's number is taken for TCP (an outgoing connection).
            udp.stopListening()
            continue
        testcase.addCleanup(udp.stopListening)
        testcase.addCleanup(tcp.stopListening)
        return f"127.0.0.1:{port}"
    raise RuntimeError("no port free for both UDP and TCP")


def start_silent_dns(testcase: TestCase) -> str:
    udp = reactor.listenUDP(0, _Silent(), interface="127.0.0.1")
    testcase.addCleanup(udp.stopListening)
    return f"127.0.0.1:{udp.getHost().port}"


# -- SMTP sinks -----------------------------------------------------------------


@dataclass
class Received:
    """One transaction a sink took part in."""

    sender: str
    recipients: list[str]
    accepted: list[str]
    raw: bytes = b""
    tls: bool = False
    user: str | None = None

    @property
    def data(self) -> bytes:
        """The message with dot-stuffing undone (RFC 5321 4.5.2)."""
        lines = self.raw.split(b"\r\n")
        return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@dataclass
class SinkScript:
    """How a sink answers; replies are whole lines without CRLF."""

    greeting: str = "220 sink ESMTP"
    extensions: list[str] = field(default_factory=lambda: ["PIPELINING", "8BITMIME", "SIZE 0"])
    #: recipient -> replies for its 1st, 2nd... RCPT; the last one repeats.
    rcpt: dict[str, list[str]] = field(default_factory=dict)
    mail_reply: str = "250 2.1.0 ok"
    data_reply: str = "250 2.0.0 queued"
    #: Never answer the final dot (a remote that hangs after DATA).
    stall_after_data: bool = False
    #: Server TLS options; STARTTLS is offered when set.
    tls: Any = None
    #: Answer 220 to STARTTLS, then send garbage instead of a handshake.
    broken_tls: bool = False
    #: user -> password for AUTH PLAIN/LOGIN.
    users: dict[str, str] = field(default_factory=dict)


class SinkSession(LineReceiver):
    """A small, strict ESMTP server for tests; records every transaction."""

    delimiter = b"\r\n"
    MAX_LENGTH = 100_000

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.script = sink.script
        self.secure = sink.implicit_tls
        self.user: str | None = None
        self.current: Received | None = None
        self.raw: list[bytes] = []
        self.in_data = False
        self.auth_state: str | None = None
        self.login_user = ""
        self.bare_lf_seen = False

    def connectionMade(self) -> None:
        self.sink.connections += 1
        self.send(self.script.greeting)
        if not self.script.greeting.startswith("2"):
            self.transport.loseConnection()

    def send(self, line: str) -> None:
        self.transport.write(line.encode() + b"\r\n")

    def dataReceived(self, data: bytes) -> None:
        if self.in_data:
            self.sink.raw_bytes += data
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        self.sink.lines.append(line)
        if self.in_data:
            self._data_line(line)
            return
        if self.auth_state:
            self._auth_step(line)
            return
        verb, _, rest = line.decode("utf-8", "replace").partition(" ")
        handler = getattr(self, f"do_{verb.upper()}", None)
        if handler is None:
            self.send("500 5.5.1 unknown command")
        else:
            handler(rest)

    def do_EHLO(self, rest: str) -> None:
        extensions = list(self.script.extensions)
        if self.script.tls is not None and not self.secure:
            extensions.append("STARTTLS")
        if self.script.users:
            extensions.append("AUTH PLAIN LOGIN")
        lines = ["sink", *extensions]
        text = "".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}"
        self.send(text)

    def do_HELO(self, rest: str) -> None:
        self.send("250 sink")

    def do_STARTTLS(self, rest: str) -> None:
        self.send("220 2.0.0 go ahead")
        if self.script.broken_tls:
            # Plain text where the ServerHello should be: the handshake fails.
            self.transport.write(b"this is not TLS\r\n" * 10)
            self.transport.loseConnection()
            return
        self.transport.startTLS(self.script.tls)
        self.secure = True

    def do_AUTH(self, rest: str) -> None:
        self.sink.auth_seen_secure.append(self.secure)
        mechanism, _, initial = rest.partition(" ")
        if mechanism.upper() == "PLAIN" and initial:
            _, user, password = base64.b64decode(initial).decode().split("\0")
            self._auth_result(user, password)
        elif mechanism.upper() == "LOGIN":
            self.auth_state = "user"
            self.send("334 VXNlcm5hbWU6")
        else:
            self.send("504 5.5.4 unsupported")

    def _auth_step(self, line: bytes) -> None:
        value = base64.b64decode(line).decode()
        if self.auth_state == "user":
            self.login_user = value
            self.auth_state = "password"
            self.send("334 UGFzc3dvcmQ6")
        else:
            self.auth_state = None
            self._auth_result(self.login_user, value)

    def _auth_result(self, user: str, password: str) -> None:
        if self.script.users.get(user) == password:
            self.user = user
            self.send("235 2.7.0 ok")
        else:
            self.send("535 5.7.8 bad credentials")

    def do_MAIL(self, rest: str) -> None:
        sender = rest.partition("<")[2].partition(">")[0]
        self.sink.mail_params.append(rest.partition(">")[2].strip())
        self.current = Received(sender, [], [], tls=self.secure, user=self.user)
        self.send(self.script.mail_reply)

    def do_RCPT(self, rest: str) -> None:
        address = rest.partition("<")[2].partition(">")[0]
        assert self.current is not None
        self.current.recipients.append(address)
        count = self.sink.rcpt_counts.get(address, 0)
        self.sink.rcpt_counts[address] = count + 1
        replies = self.script.rcpt.get(address, ["250 2.1.5 ok"])
        reply = replies[min(count, len(replies) - 1)]
        if reply.startswith("2"):
            self.current.accepted.append(address)
        self.send(reply)

    def do_DATA(self, rest: str) -> None:
        if self.current is None or not self.current.accepted:
            self.send("554 5.5.1 no valid recipients")
            return
        self.in_data = True
        self.raw = []
        self.send("354 go ahead")

    def _data_line(self, line: bytes) -> None:
        if line != b".":
            self.raw.append(line)
            return
        self.in_data = False
        assert self.current is not None
        self.current.raw = b"\r\n".join(self.raw) + b"\r\n"
        self.sink.received.append(self.current)
        self.sink.data_done.append(self.current)
        if self.script.stall_after_data:
            self.sink.stalled = True
            return
        self.send(self.script.data_reply)
        self.current = None

    def do_RSET(self, rest: str) -> None:
        self.current = None
        self.send("250 ok")

    def do_NOOP(self, rest: str) -> None:
        self.send("250 ok")

    def do_QUIT(self, rest: str) -> None:
        self.send("221 bye")
        self.transport.loseConnection()


class Sink(Factory):
    """A listening test MX (or smarthost); see ``SinkScript``."""

    def __init__(self, script: SinkScript | None = None, implicit_tls: bool = False) -> None:
        self.script = script or SinkScript()
        self.implicit_tls = implicit_tls
        self.received: list[Received] = []
        self.data_done: list[Received] = []
        self.rcpt_counts: dict[str, int] = {}
        self.lines: list[bytes] = []
        self.mail_params: list[str] = []
        self.auth_seen_secure: list[bool] = []
        self.raw_bytes = b""
        self.connections = 0
        self.stalled = False
        self.port: Any = None

    def buildProtocol(self, addr: Any) -> SinkSession:
        session = SinkSession(self)
        session.factory = self
        return session

    def delivered_to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.accepted]


def start_sink(
    testcase: TestCase,
    address: str,
    port: int = 0,
    script: SinkScript | None = None,
    implicit_tls: Any = None,
) -> Sink:
    """Listen on ``address``:``port`` (0 picks one); stopped at cleanup."""
    sink = Sink(script, implicit_tls=implicit_tls is not None)
    factory: Any = sink
    if implicit_tls is not None:
        factory = TLSMemoryBIOFactory(implicit_tls, False, sink)
    sink.port = reactor.listenTCP(port, factory, interface=address)
    testcase.addCleanup(sink.port.stopListening)
    return sink


def port_free_on(addresses: list[str]) -> int:
    """A TCP port that is free on every one of ``addresses`` (all loopback)."""
    for _ in range(50):
        probe = socket.socket()
        probe.bind((addresses[0], 0))
        port = probe.getsockname()[1]
        probe.close()
        if all(_free(a, port) for a in addresses):
            return port
    raise RuntimeError("no common free port")


def _free(address: str, port: int) -> bool:
    s = socket.socket()
    try:
        s.bind((address, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# -- TLS material -----------------------------------------------------------------


@dataclass
class TLSMaterial:
    """A self-signed certificate for ``hostname`` and what both sides need."""

    hostname: str
    cert_path: str
    key_path: str

    def server_options(self) -> Any:
        with open(self.cert_path, "rb") as f, open(self.key_path, "rb") as k:
            return ssl.PrivateCertificate.loadPEM(f.read() + k.read()).options()

    def trust_root(self) -> ssl.Certificate:
        with open(self.cert_path, "rb") as f:
            return ssl.Certificate.loadPEM(f.read())

    @property
    def folder(self) -> str:
        return os.path.dirname(self.cert_path)


def make_tls(testcase: TestCase, hostname: str) -> TLSMaterial:
    """A certificate naming ``hostname``, localhost, 127.0.0.1 and ::1."""
    folder = testcase.mktemp()
    os.makedirs(folder)
    cert = os.path.join(folder, "cert.pem")
    key = os.path.join(folder, "key.pem")
    server_tls.generate_self_signed(cert, key, hostname)
    return TLSMaterial(hostname, cert, key)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> defer.Deferred[None]:
    """Poll ``condition`` on the real reactor; fails after ``timeout`` seconds."""
    d: defer.Deferred[None] = defer.Deferred()
    deadline = reactor.seconds() + timeout

    def check() -> None:
        if condition():
            d.callback(None)
        elif reactor.seconds() > deadline:
            d.errback(AssertionError("condition not met in time"))
        else:
            reactor.callLater(0.02, check)

    check()
    return d
