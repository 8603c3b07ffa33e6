"""Hostile input over real sockets: the suite answers with a protocol error or
hangs up cleanly, never a traceback, a hang or unbounded memory, and keeps
serving everyone else.

Every test runs the real suite on loopback (``tests/support.py``), attacks it
with a raw blocking client in a thread, then checks that a fresh, well-behaved
client of each protocol is still served. A log observer fails the test on any
``log.failure`` event (an unhandled exception inside the suite).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from twisted.internet import threads
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial import unittest
from zope.interface import provider

from mailsuite.config import LISTENER_NAMES
from mailsuite.context import ServiceContext
from mailsuite.tap import FactoryMaker, real_factory
from tests.support import RunningSuite, start_suite

ADDRESS = "alice@example.com"
PASSWORD = "hostile s3cret"
TIMEOUT = 20

#: ``\0alice@example.com\0hostile s3cret`` for AUTH PLAIN.
PLAIN_TOKEN = b"AGFsaWNlQGV4YW1wbGUuY29tAGhvc3RpbGUgczNjcmV0"

GARBAGE = b"\x00\x01\x02\xff\xfe garbage \x00\x80\x1b[2J\r\n"
TEN_MB = 10 * 1024 * 1024

#: The plain listener of each protocol, its implicit-TLS twin, and commands.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "smtp": {
        "plain": "smtp",
        "starttls": (b"EHLO x\r\nSTARTTLS\r\n", b"220 "),
        "tls": "submissions",
        "probe": b"NOOP\r\n",
        "probe_ok": b"250 ",
        "error": (b"500 ", b"501 ", b"502 "),
        "too_long": b"500 5.5.6",
        "greeting": b"220 ",
    },
    "pop3": {
        "plain": "pop3",
        "starttls": (b"STLS\r\n", b"+OK"),
        "tls": "pop3s",
        "probe": b"CAPA\r\n",
        "probe_ok": b".\r\n",
        "error": (b"-ERR",),
        "too_long": b"-ERR",
        "greeting": b"+OK",
    },
    "imap": {
        "plain": "imap",
        "starttls": (b"t STARTTLS\r\n", b"t OK"),
        "tls": "imaps",
        "probe": b"p NOOP\r\n",
        "probe_ok": b"p OK",
        "error": (b"* BAD", b"p BAD", b"* NO"),
        "too_long": b"* BAD [TOOBIG]",
        "greeting": b"* OK",
    },
}

MESSAGE = (
    b"From: Bob <bob@example.net>\r\nTo: alice@example.com\r\n"
    b"Subject: target\r\nDate: Mon, 2 Jan 2023 10:00:00 +0000\r\n\r\nbody\r\n"
)

T = TypeVar("T")


class Peer:
    """A raw blocking client: exact bytes out, lines or everything back."""

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(TIMEOUT)
        self.sock = sock
        self.file = sock.makefile("rb")

    @classmethod
    def plain(cls, port: int) -> Peer:
        return cls(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT))

    @classmethod
    def tls(cls, suite: RunningSuite, port: int) -> Peer:
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        context = suite.client_ssl_context()
        return cls(context.wrap_socket(sock, server_hostname="127.0.0.1"))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline(65536)

    def until(self, marker: bytes) -> bytes:
        """Lines up to and including the first that starts with ``marker``."""
        seen = b""
        while True:
            line = self.line()
            seen += line
            if not line or line.startswith(marker):
                return seen

    def rest(self) -> bytes:
        """Everything until the server closes (bounded)."""
        return self.file.read(1024 * 1024)

    def starttls(self, suite: RunningSuite) -> None:
        context = suite.client_ssl_context()
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def client_hello() -> bytes:
    """The first flight of a real TLS handshake, as raw bytes."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """``total`` octets of one newline-free line, without holding it in memory."""
    block = b"A" * size
    sent = 0
    while sent < total:
        yield block[: min(size, total - sent)]
        sent += size


# -- a log observer and a buffer meter -------------------------------------------


def watch_failures(testcase: unittest.TestCase) -> list[dict[str, Any]]:
    """Collect ``log.failure`` events from now until the test's cleanups end."""
    failures: list[dict[str, Any]] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    testcase.addCleanup(globalLogPublisher.removeObserver, observe)
    return failures


def metered(peaks: dict[str, int]) -> dict[str, FactoryMaker]:
    """Real factories whose sessions record their largest input buffer.

    ``LineSession`` keeps unparsed input in ``_buffer``; its size after each
    read is how much memory one client can make the server hold. The octets
    each listener received are counted under ``"<name> total"``, so a test
    can tell that the meter really sat in the path.
    """

    def maker(name: str) -> FactoryMaker:
        inner = real_factory(name)

        def make(context: ServiceContext) -> IProtocolFactory:
            factory: Any = inner(context)
            build = factory.buildProtocol

            def buildProtocol(addr: Any) -> Any:
                session = build(addr)
                received = session.dataReceived

                def dataReceived(data: bytes) -> None:
                    received(data)
                    size = len(session._buffer)
                    peaks[name] = max(peaks.get(name, 0), size)
                    total = f"{name} total"
                    peaks[total] = peaks.get(total, 0) + len(data)

                session.dataReceived = dataReceived
                return session

            factory.buildProtocol = buildProtocol
            return factory

        return make

    return {name: maker(name) for name in LISTENER_NAMES}


class AttackTestCase(unittest.TestCase):
    """Starts a suite with one user; checks the log and a fresh client at the end."""

    async def started(self, **overrides: Any) -> RunningSuite:
        self.failures = watch_failures(self)
        self.addCleanup(self.assert_no_failures)
        self.suite = await start_suite(self, **overrides)
        self.suite.add_user(ADDRESS, PASSWORD)
        return self.suite

    def assert_no_failures(self) -> None:
        self.assertEqual([], [formatEvent(e) for e in self.failures])

    def in_thread(self, f: Callable[..., T], *args: Any) -> Any:
        return threads.deferToThread(f, *args)

    async def assert_still_serving(self) -> None:
        """A well-behaved client of every protocol logs in and is answered."""
        suite = self.suite

        def run() -> list[bytes]:
            results = []
            for name, listener, login, probe, ok in (
                (
                    "smtp",
                    "submissions",
                    b"AUTH PLAIN " + PLAIN_TOKEN + b"\r\n",
                    b"NOOP\r\n",
                    b"250",
                ),
                (
                    "pop3",
                    "pop3s",
                    b"USER %s\r\nPASS %s\r\n" % (ADDRESS.encode(), PASSWORD.encode()),
                    b"STAT\r\n",
                    b"+OK",
                ),
                (
                    "imap",
                    "imaps",
                    b'l LOGIN "%s" "%s"\r\n' % (ADDRESS.encode(), PASSWORD.encode()),
                    b"s SELECT INBOX\r\n",
                    b"s OK",
                ),
            ):
                peer = Peer.tls(suite, suite.port(listener))
                peer.line()
                peer.send(login + probe)
                answer = peer.until(ok)
                peer.close()
                results.append(answer.splitlines()[-1][: len(ok)] if answer else name.encode())
            return results

        self.assertEqual([b"250", b"+OK", b"s OK"], await self.in_thread(run))

    async def exchange(self, listener: str, data: bytes, marker: bytes) -> bytes:
        """Greeting skipped; send ``data`` on plain ``listener``; read up to ``marker``."""
        port = self.suite.port(listener)

        def run() -> bytes:
            peer = Peer.plain(port)
            peer.line()
            peer.send(data)
            answer = peer.until(marker)
            peer.close()
            return answer

        result: bytes = await self.in_thread(run)
        return result


# -- every protocol ---------------------------------------------------------------


class EveryProtocolTests(AttackTestCase):
    """The same abuse on SMTP, POP3 and IMAP."""

    async def test_garbage_and_nuls_get_an_error_and_the_session_goes_on(self) -> None:
        """Binary junk and NULs are answered with a protocol error, not a traceback."""
        await self.started()

        for name, p in PROTOCOLS.items():
            answer = await self.exchange(p["plain"], GARBAGE + p["probe"], p["probe_ok"])

            first = answer.split(b"\r\n")[0]
            self.assertTrue(first.startswith(p["error"]), (name, answer))
            self.assertIn(p["probe_ok"], answer, name)

        await self.assert_still_serving()

    async def test_ten_megabyte_line_is_refused_without_buffering_it(self) -> None:
        """A 10 MB line with no newline: an error, the session recovers, memory stays bounded."""
        peaks: dict[str, int] = {}
        await self.started(factories=metered(peaks))

        for name, p in PROTOCOLS.items():
            port = self.suite.port(p["plain"])

            def run(port: int = port, p: dict[str, Any] = p) -> bytes:
                peer = Peer.plain(port)
                peer.line()
                for chunk in chunks(TEN_MB):
                    peer.send(chunk)
                peer.send(b"\r\n" + p["probe"])
                answer = peer.until(p["probe_ok"])
                peer.close()
                return answer

            answer = await self.in_thread(run)

            self.assertTrue(answer.startswith(p["too_long"]), (name, answer[:200]))
            self.assertIn(p["probe_ok"], answer, name)
            self.assertLessEqual(TEN_MB, peaks[p["plain"] + " total"], name)
            self.assertLess(peaks[p["plain"]], 256 * 1024, name)

        await self.assert_still_serving()

    async def test_tls_client_hello_on_a_plain_port(self) -> None:
        """A TLS handshake sent to a plain port gets a protocol error or a close."""
        await self.started()
        hello = client_hello()

        for name, p in PROTOCOLS.items():
            port = self.suite.port(p["plain"])

            def run(port: int = port) -> bytes:
                peer = Peer.plain(port)
                peer.line()
                peer.send(hello)
                peer.sock.shutdown(socket.SHUT_WR)
                answer = peer.rest()
                peer.close()
                return answer

            answer = await self.in_thread(run)

            for line in answer.splitlines():
                self.assertTrue(line.startswith(p["error"]), (name, answer[:300]))

        await self.assert_still_serving()

    async def test_plain_text_on_a_tls_port_is_not_answered_in_plain_text(self) -> None:
        """Commands sent in the clear to an implicit-TLS port get no plaintext reply."""
        await self.started()

        for name, p in PROTOCOLS.items():
            port = self.suite.port(p["tls"])

            def run(port: int = port, probe: bytes = p["probe"]) -> bytes:
                peer = Peer.plain(port)
                peer.send(b"EHLO attacker\r\nUSER x\r\n" + probe)
                answer = peer.rest()
                peer.close()
                return answer

            answer = await self.in_thread(run)

            self.assertFalse(answer.startswith(p["greeting"]), (name, answer[:100]))
            self.assertNotIn(p["probe_ok"], answer, name)

        await self.assert_still_serving()

    async def test_clients_vanishing_mid_command_and_mid_handshake(self) -> None:
        """Half a command, or half a TLS handshake (implicit or after STARTTLS), then gone."""
        await self.started()
        hello = client_hello()

        for p in PROTOCOLS.values():
            plain, tls = self.suite.port(p["plain"]), self.suite.port(p["tls"])

            def run(plain: int = plain, tls: int = tls, starttls: Any = p["starttls"]) -> None:
                peer = Peer.plain(plain)
                peer.line()
                peer.send(b"A1 LOGIN half-a-comm")
                peer.close()

                peer = Peer.plain(plain)
                peer.line()
                peer.send(starttls[0])
                peer.until(starttls[1])
                peer.send(hello[: len(hello) // 2])
                peer.close()

                peer = Peer.plain(tls)
                peer.send(hello[: len(hello) // 2])
                peer.close()

                peer = Peer.plain(tls)
                peer.send(hello)
                peer.sock.recv(100)
                peer.close()

            await self.in_thread(run)

        await self.assert_still_serving()


# -- STARTTLS and passwords in the clear -------------------------------------------


class StartTLSTests(AttackTestCase):
    """Commands pipelined behind STARTTLS never run; no password before TLS."""

    async def test_smtp_auth_pipelined_behind_starttls_does_not_run(self) -> None:
        """AUTH sent in the clear after STARTTLS is dropped: MAIL still needs AUTH."""
        suite = await self.started()

        def run() -> bytes:
            peer = Peer.plain(suite.port("submission"))
            peer.line()
            peer.send(b"EHLO x\r\nSTARTTLS\r\nAUTH PLAIN " + PLAIN_TOKEN + b"\r\n")
            peer.until(b"220 ")
            peer.starttls(suite)
            peer.send(b"EHLO x\r\nMAIL FROM:<alice@example.com>\r\n")
            peer.until(b"250 ")
            answer = peer.line()
            peer.close()
            return answer

        answer = await self.in_thread(run)

        self.assertTrue(answer.startswith(b"530 "), answer)
        await self.assert_still_serving()

    async def test_pop3_login_pipelined_behind_stls_does_not_run(self) -> None:
        """USER/PASS sent in the clear after STLS are dropped: STAT is refused."""
        suite = await self.started()

        def run() -> bytes:
            peer = Peer.plain(suite.port("pop3"))
            peer.line()
            peer.send(b"STLS\r\nUSER %s\r\nPASS %s\r\n" % (ADDRESS.encode(), PASSWORD.encode()))
            peer.line()
            peer.starttls(suite)
            peer.send(b"STAT\r\n")
            answer = peer.line()
            peer.close()
            return answer

        answer = await self.in_thread(run)

        self.assertTrue(answer.startswith(b"-ERR"), answer)
        await self.assert_still_serving()

    async def test_imap_login_pipelined_behind_starttls_does_not_run(self) -> None:
        """LOGIN sent in the clear after STARTTLS is dropped: SELECT is refused."""
        suite = await self.started()

        def run() -> bytes:
            peer = Peer.plain(suite.port("imap"))
            peer.line()
            peer.send(
                b't STARTTLS\r\nl LOGIN "%s" "%s"\r\n' % (ADDRESS.encode(), PASSWORD.encode())
            )
            peer.until(b"t ")
            peer.starttls(suite)
            peer.send(b"s SELECT INBOX\r\n")
            answer = peer.until(b"s ")
            peer.close()
            return answer

        answer = await self.in_thread(run)

        self.assertTrue(answer.startswith(b"s BAD") or answer.startswith(b"s NO"), answer)
        await self.assert_still_serving()

    async def test_passwords_before_tls_are_refused_everywhere(self) -> None:
        """AUTH, USER/PASS, LOGIN and AUTHENTICATE on plain ports are all refused."""
        await self.started()
        user, password = ADDRESS.encode(), PASSWORD.encode()

        smtp = await self.exchange(
            "submission", b"EHLO x\r\nAUTH PLAIN " + PLAIN_TOKEN + b"\r\n", b"5"
        )
        pop3 = await self.exchange("pop3", b"USER %s\r\nPASS %s\r\n" % (user, password), b"-ERR")
        imap_login = await self.exchange(
            "imap", b'a LOGIN "%s" "%s"\r\n' % (user, password), b"a "
        )
        imap_auth = await self.exchange(
            "imap", b"a AUTHENTICATE PLAIN " + PLAIN_TOKEN + b"\r\n", b"a "
        )

        self.assertRegex(smtp.splitlines()[-1], rb"^5\d\d ")
        self.assertTrue(pop3.splitlines()[-1].startswith(b"-ERR"), pop3)
        self.assertTrue(imap_login.startswith(b"a NO"), imap_login)
        self.assertTrue(imap_auth.startswith((b"a NO", b"a BAD")), imap_auth)
        await self.assert_still_serving()


# -- SMTP ------------------------------------------------------------------------


class SMTPAttackTests(AttackTestCase):
    """DATA abuse on the MX."""

    def inbox(self) -> list[bytes]:
        folder = self.suite.context.store.account(ADDRESS).folder("INBOX")
        folder.refresh(force=True)
        return [folder.read(m) for m in folder.messages]

    async def test_client_vanishing_mid_data_delivers_nothing(self) -> None:
        """Half a message then a hang-up: no partial message reaches the mailbox."""
        suite = await self.started()

        def run() -> None:
            peer = Peer.plain(suite.port("smtp"))
            peer.line()
            peer.send(b"EHLO x\r\nMAIL FROM:<bob@example.net>\r\nRCPT TO:<alice@example.com>\r\n")
            peer.send(b"DATA\r\n")
            peer.until(b"354 ")
            peer.send(b"Subject: half\r\n\r\nthis message never ends")
            peer.close()

        await self.in_thread(run)
        await self.assert_still_serving()

        self.assertEqual([], self.inbox())

    async def test_bare_lf_dot_does_not_end_data(self) -> None:
        """SMTP smuggling: ``\\n.\\n`` inside DATA neither ends it nor starts a message."""
        suite = await self.started()

        def run() -> bytes:
            peer = Peer.plain(suite.port("smtp"))
            peer.line()
            peer.send(b"EHLO x\r\nMAIL FROM:<bob@example.net>\r\nRCPT TO:<alice@example.com>\r\n")
            peer.send(b"DATA\r\n")
            peer.until(b"354 ")
            peer.send(
                b"Subject: outer\r\n\r\nx\n.\nMAIL FROM:<evil@example.net>\r\n"
                b"RCPT TO:<alice@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\n.\r\n"
            )
            answer = peer.line()
            peer.send(b"QUIT\r\n")
            answer += peer.rest()
            peer.close()
            return answer

        answer = await self.in_thread(run)

        self.assertEqual(1, answer.count(b"250 "), answer)
        inbox = self.inbox()
        self.assertEqual(1, len(inbox))
        self.assertIn(b"Subject: outer", inbox[0])
        await self.assert_still_serving()


# -- POP3 ------------------------------------------------------------------------


class POP3AttackTests(AttackTestCase):
    """Message numbers that are not there."""

    async def test_zero_negative_and_huge_message_numbers_change_nothing(self) -> None:
        """DELE 0, RETR 0, TOP 1 -1 and 20-digit numbers get -ERR; nothing is deleted."""
        suite = await self.started()
        await suite.context.store.deliver(ADDRESS, MESSAGE)
        commands = [
            b"DELE 0",
            b"RETR 0",
            b"TOP 1 -1",
            b"LIST 99999999999999999999",
            b"UIDL -1",
            b"TOP 1 99999999999999999999999",
            b"RETR 1 2",
        ]

        def run() -> list[bytes]:
            peer = Peer.tls(suite, suite.port("pop3s"))
            peer.line()
            peer.send(b"USER %s\r\nPASS %s\r\n" % (ADDRESS.encode(), PASSWORD.encode()))
            peer.line()
            peer.line()
            answers = []
            for command in commands:
                peer.send(command + b"\r\n")
                answers.append(peer.line())
            peer.send(b"QUIT\r\n")
            answers.append(peer.line())
            peer.close()
            return answers

        answers = await self.in_thread(run)

        for command, answer in zip(commands, answers, strict=False):
            self.assertTrue(answer.startswith(b"-ERR"), (command, answer))
        self.assertIn(b" 0 ", answers[-1])
        folder = suite.context.store.account(ADDRESS).folder("INBOX")
        folder.refresh(force=True)
        self.assertEqual(1, len(folder.messages))
        await self.assert_still_serving()


# -- IMAP ------------------------------------------------------------------------


class IMAPAttackTests(AttackTestCase):
    """Literals, sequence sets, nesting, sections and names an attacker picks."""

    async def logged_in(self, commands: list[bytes], before_login: bool = False) -> list[bytes]:
        """Run ``commands`` (tags ``c0``, ``c1``...) on imaps; each one's response."""
        suite = self.suite

        def run() -> list[bytes]:
            peer = Peer.tls(suite, suite.port("imaps"))
            peer.line()
            if not before_login:
                peer.send(b'l LOGIN "%s" "%s"\r\n' % (ADDRESS.encode(), PASSWORD.encode()))
                peer.until(b"l ")
                peer.send(b"s SELECT INBOX\r\n")
                peer.until(b"s ")
            answers = []
            for n, command in enumerate(commands):
                tag = b"c%d" % n
                peer.send(tag + b" " + command + b"\r\n")
                answers.append(peer.until(tag + b" "))
            peer.close()
            return answers

        result: list[bytes] = await self.in_thread(run)
        return result

    async def with_mail(self) -> RunningSuite:
        suite = await self.started()
        for _ in range(3):
            await suite.context.store.deliver(ADDRESS, MESSAGE)
        return suite

    def last_line(self, answer: bytes) -> bytes:
        return answer.rstrip(b"\r\n").split(b"\r\n")[-1]

    async def test_four_gigabyte_literal_is_refused_at_once(self) -> None:
        """``{4294967295}`` gets ``NO [TOOBIG]`` before any data, logged in or not."""
        await self.started()

        after = await self.logged_in([b"APPEND INBOX {4294967295}", b"NOOP"])
        before = await self.logged_in([b"LOGIN {4294967295}", b"NOOP"], before_login=True)

        for answers in (after, before):
            self.assertTrue(answers[0].startswith(b"c0 NO [TOOBIG]"), answers[0])
            self.assertTrue(answers[1].startswith(b"c1 OK"), answers[1])
        await self.assert_still_serving()

    async def test_non_synchronizing_huge_literal_before_login_hangs_up(self) -> None:
        """``{4294967295+}`` from a stranger is answered with BYE and a close."""
        suite = await self.started()

        def run() -> bytes:
            peer = Peer.tls(suite, suite.port("imaps"))
            peer.line()
            peer.send(b"a LOGIN {4294967295+}\r\nxxxxxxxx")
            answer = peer.rest()
            peer.close()
            return answer

        answer = await self.in_thread(run)

        self.assertTrue(answer.startswith(b"* BYE [TOOBIG]"), answer)
        await self.assert_still_serving()

    async def test_huge_sequence_sets(self) -> None:
        """``1:4294967295`` is a clear BAD as sequence numbers, all messages as UIDs."""
        await self.with_mail()

        answers = await self.logged_in(
            [
                b"FETCH 1:4294967295 FLAGS",
                b"UID FETCH 1:4294967295 FLAGS",
                b"FETCH 1:4294967296 FLAGS",
                b"UID SEARCH UID 1:4294967295",
                b"STORE 1:4294967295 +FLAGS (\\Seen)",
            ]
        )

        self.assertTrue(answers[0].startswith(b"c0 BAD"), answers[0])
        self.assertEqual(3, answers[1].count(b" FETCH (UID "), answers[1])
        self.assertTrue(self.last_line(answers[1]).startswith(b"c1 OK"), answers[1])
        self.assertTrue(answers[2].startswith(b"c2 BAD"), answers[2])
        self.assertIn(b"* SEARCH 1 2 3\r\n", answers[3])
        self.assertTrue(answers[4].startswith(b"c4 BAD"), answers[4])
        await self.assert_still_serving()

    async def test_deep_nesting_is_refused_not_recursed(self) -> None:
        """5000 nested parentheses, NOTs and ORs get BAD, not a RecursionError."""
        await self.with_mail()
        deep = 5000

        answers = await self.logged_in(
            [
                b"SEARCH " + b"(" * deep + b"ALL" + b")" * deep,
                b"SEARCH " + b"NOT " * deep + b"ALL",
                b"SEARCH " + b"OR ALL " * deep + b"ALL",
                b"FETCH 1 " + b"(" * deep + b"FLAGS" + b")" * deep,
                b"STORE 1 FLAGS " + b"(" * deep + b"\\Seen" + b")" * deep,
                b"FETCH 1 BODY[" + b"1." * deep + b"1]",
                b"NOOP",
            ]
        )

        for n, answer in enumerate(answers[:-1]):
            self.assertTrue(answer.startswith(b"c%d BAD" % n), answer[:200])
        self.assertTrue(answers[-1].startswith(b"c6 OK"), answers[-1])
        await self.assert_still_serving()

    async def test_deep_body_section_of_a_single_part_message(self) -> None:
        """``BODY[1.2.3.4.5.6.7.8.9.10.11.12]`` of a text message is empty, not an error."""
        await self.with_mail()

        answers = await self.logged_in(
            [
                b"FETCH 1 BODY[1.2.3.4.5.6.7.8.9.10.11.12]",
                b"FETCH 1 BODY.PEEK[1.2.3.4.5.6.7.8.9.10.11.12.MIME]",
                b"FETCH 1 BODY.PEEK[]<4294967295.4294967295>",
            ]
        )

        self.assertIn(b'BODY[1.2.3.4.5.6.7.8.9.10.11.12] ""', answers[0])
        self.assertTrue(self.last_line(answers[0]).startswith(b"c0 OK"), answers[0])
        self.assertTrue(self.last_line(answers[1]).startswith(b"c1 OK"), answers[1])
        self.assertIn(b'BODY[]<4294967295> ""', answers[2])
        await self.assert_still_serving()

    async def test_broken_modified_utf7_names_are_refused(self) -> None:
        """Bad modified UTF-7 and raw 8-bit names get ``NO [CANNOT]``; nothing is created."""
        suite = await self.started()
        names = [b'"&AGE"', b"&Jjo!", b'"&ZeVnLIqe-x&"', b'"\xc3\xa9t\xc3\xa9"', b"&AC8-x"]
        account = suite.context.store.account(ADDRESS)
        await self.logged_in([b"NOOP"])  # the first login makes the default folders
        before = sorted(account.folder_names())

        answers = await self.logged_in(
            [b"CREATE " + name for name in names] + [b"SELECT &Jjo!", b'LIST "" *']
        )

        for answer in answers[:-1]:
            self.assertRegex(answer, rb"^c\d+ NO \[CANNOT\]")
        self.assertEqual(before, sorted(account.folder_names()))
        await self.assert_still_serving()

    async def test_dot_dot_names_stay_inside_the_users_maildir(self) -> None:
        """``CREATE ../../x`` is refused, and never makes a directory outside the user's."""
        suite = await self.started()
        home = suite.context.store.account(ADDRESS).path
        outside = [
            os.path.join(home, "..", "escaped"),
            os.path.join(home, "..", "..", "escaped"),
            os.path.join(suite.store_path, "..", "escaped"),
        ]

        answers = await self.logged_in(
            [b"CREATE ../escaped", b"CREATE ../../escaped", b"CREATE a/../../b"]
        )

        for answer in answers[:3]:
            self.assertRegex(answer, rb"^c\d+ NO \[CANNOT\]")
        for path in outside:
            self.assertFalse(os.path.exists(path), path)
        entries = set(os.listdir(os.path.dirname(home)))
        self.assertEqual({os.path.basename(home)}, entries)
        await self.assert_still_serving()

    async def test_search_with_an_unknown_charset(self) -> None:
        """``SEARCH CHARSET KOI8-R`` gets ``NO [BADCHARSET ...]`` listing what works."""
        await self.with_mail()

        answers = await self.logged_in(
            [
                b"SEARCH CHARSET KOI8-R ALL",
                b"SEARCH CHARSET KOI8-R SUBJECT {4}\r\n\xf0\xd2\xc9\xd7",
                b'SEARCH CHARSET UTF-8 SUBJECT "\xff\xfe"',
            ]
        )

        self.assertRegex(answers[0], rb"^c0 NO \[BADCHARSET \(.*UTF-8.*\)\]")
        self.assertRegex(self.last_line(answers[1]), rb"^c1 NO \[BADCHARSET")
        self.assertTrue(self.last_line(answers[2]).startswith(b"c2 "), answers[2])
        await self.assert_still_serving()

    async def test_client_vanishing_mid_literal_appends_nothing(self) -> None:
        """Half an APPEND literal then a hang-up: INBOX stays empty."""
        suite = await self.started()

        def run() -> None:
            peer = Peer.tls(suite, suite.port("imaps"))
            peer.line()
            peer.send(b'l LOGIN "%s" "%s"\r\n' % (ADDRESS.encode(), PASSWORD.encode()))
            peer.until(b"l ")
            peer.send(b"a APPEND INBOX (\\Seen) {%d}\r\n" % len(MESSAGE))
            peer.line()
            peer.send(MESSAGE[:20])
            peer.close()

        await self.in_thread(run)
        await self.assert_still_serving()

        folder = suite.context.store.account(ADDRESS).folder("INBOX")
        folder.refresh(force=True)
        self.assertEqual([], folder.messages)
