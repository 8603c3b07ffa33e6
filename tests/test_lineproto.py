"""The line session under every protocol: limits, pipelining, STARTTLS, timeouts."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from mailsuite.lineproto import LineSession


class TLSRecordingTransport(StringTransport):
    """A transport that records startTLS and the bytes written after it."""

    def __init__(self) -> None:
        super().__init__()
        self.tls_started = False

    def startTLS(self, context: Any) -> None:
        self.tls_started = True


class EchoSession(LineSession):
    """Answers each line; STARTTLS switches; HOLD waits for a Deferred."""

    max_line_length = 20
    idle_timeout = 60.0
    max_bad_commands = 2

    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self.lines: list[bytes] = []
        self.raw: list[bytes] = []
        self.held: list[defer.Deferred[None]] = []
        self.too_long = 0

    def line_received(self, line: bytes) -> defer.Deferred[None] | None:
        self.lines.append(line)
        if line == b"STARTTLS":
            self.send(b"OK go\r\n")
            self.start_tls(object())
        elif line == b"HOLD":
            d: defer.Deferred[None] = defer.Deferred()
            self.held.append(d)
            return d
        elif line == b"RAW":
            self.set_raw_mode()
        elif line == b"BAD":
            self.bad_command()
        elif line == b"BOOM":
            raise RuntimeError("boom")
        return None

    def raw_received(self, data: bytes) -> None:
        end = data.find(b"END")
        if end < 0:
            self.raw.append(data)
            return
        self.raw.append(data[:end])
        self.set_line_mode(data[end + 3 :])

    def line_too_long(self) -> None:
        self.too_long += 1
        self.send(b"ERR too long\r\n")


class LineSessionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.session = EchoSession(self.clock)
        self.transport = TLSRecordingTransport()
        self.session.makeConnection(self.transport)

    def test_lines_split_on_crlf_and_lf(self) -> None:
        """CRLF and bare LF both end a line; a partial line waits for more."""
        self.session.dataReceived(b"one\r\ntwo\nthr")
        self.session.dataReceived(b"ee\r\n")

        self.assertEqual([b"one", b"two", b"three"], self.session.lines)

    def test_overlong_line_is_reported_once_and_skipped(self) -> None:
        """A too-long line gets one error; the next line is handled; nothing is dropped."""
        self.session.dataReceived(b"x" * 50)
        self.session.dataReceived(b"y" * 50)
        self.session.dataReceived(b"z\r\nnext\r\n")

        self.assertEqual(1, self.session.too_long)
        self.assertEqual([b"next"], self.session.lines)
        self.assertFalse(self.transport.disconnecting)

    def test_overlong_complete_line_is_skipped(self) -> None:
        """A long line arriving whole with its LF is refused just the same."""
        self.session.dataReceived(b"a" * 21 + b"\r\nok\r\n")

        self.assertEqual(1, self.session.too_long)
        self.assertEqual([b"ok"], self.session.lines)

    def test_buffer_stays_bounded_without_newlines(self) -> None:
        """A client sending megabytes without LF cannot grow our buffer."""
        for _ in range(100):
            self.session.dataReceived(b"q" * 10_000)

        self.assertLessEqual(len(self.session._buffer), self.session.max_line_length + 1)

    def test_input_is_held_while_a_command_is_pending(self) -> None:
        """Pipelined lines wait for the pending command and the transport is paused."""
        self.session.dataReceived(b"HOLD\r\nafter\r\n")

        self.assertEqual([b"HOLD"], self.session.lines)
        self.assertEqual("paused", self.transport.producerState)
        self.session.held[0].callback(None)
        self.assertEqual([b"HOLD", b"after"], self.session.lines)
        self.assertEqual("producing", self.transport.producerState)

    def test_starttls_discards_pipelined_input(self) -> None:
        """Commands sent behind STARTTLS in the same packet are never run."""
        self.session.dataReceived(b"STARTTLS\r\nMAIL FROM:<evil>\r\n")

        self.assertTrue(self.transport.tls_started)
        self.assertTrue(self.session.secure)
        self.assertEqual([b"STARTTLS"], self.session.lines)
        self.session.dataReceived(b"after tls\r\n")
        self.assertEqual([b"STARTTLS", b"after tls"], self.session.lines)

    def test_raw_mode_and_back(self) -> None:
        """Raw bytes go to raw_received; what follows the raw part is read as lines."""
        self.session.dataReceived(b"RAW\r\nabc\r\nde")
        self.session.dataReceived(b"fEND\r\nline\r\n")

        self.assertEqual(b"abc\r\ndef", b"".join(self.session.raw))
        self.assertEqual([b"RAW", b"", b"line"], self.session.lines)

    def test_idle_timeout_closes(self) -> None:
        """Silence for the idle timeout closes; input resets the clock."""
        self.clock.advance(59)
        self.session.dataReceived(b"hi\r\n")
        self.clock.advance(59)
        self.assertFalse(self.transport.disconnecting)

        self.clock.advance(2)

        self.assertTrue(self.transport.disconnecting)

    def test_too_many_bad_commands_close(self) -> None:
        """Passing the bad-command limit closes the session."""
        self.session.dataReceived(b"BAD\r\nBAD\r\n")
        self.assertFalse(self.transport.disconnecting)

        self.session.dataReceived(b"BAD\r\nnever\r\n")

        self.assertTrue(self.transport.disconnecting)
        self.assertNotIn(b"never", self.session.lines)

    def test_handler_exception_is_contained(self) -> None:
        """An unexpected exception is logged and the session closed, not propagated."""
        self.session.dataReceived(b"BOOM\r\n")

        self.assertEqual(1, len(self.flushLoggedErrors(RuntimeError)))
        self.assertTrue(self.transport.disconnecting)

    def test_nothing_is_processed_after_connection_lost(self) -> None:
        """A client that vanished mid-command leaves no timer and runs nothing more."""
        self.session.dataReceived(b"HOLD\r\n")
        self.session.connectionLost(None)

        self.session.held[0].callback(None)
        self.session.dataReceived(b"late\r\n")

        self.assertEqual([b"HOLD"], self.session.lines)
        self.assertEqual([], self.clock.getDelayedCalls())


class ConfidentialityTests(unittest.TestCase):
    def make(self, host: str, allow: bool) -> EchoSession:
        session = EchoSession(task.Clock())
        session.plaintext_on_loopback = allow
        transport = TLSRecordingTransport()
        transport.peerAddr = IPv4Address("TCP", host, 40000)
        session.makeConnection(transport)
        return session

    def test_passwords_need_tls_by_default(self) -> None:
        """Without the loopback option, only TLS makes a session confidential."""
        session = self.make("127.0.0.1", allow=False)
        self.assertFalse(session.confidential)

        session.dataReceived(b"STARTTLS\r\n")

        self.assertTrue(session.confidential)

    def test_loopback_option_trusts_only_loopback(self) -> None:
        """With the option, loopback peers are trusted and others are not."""
        self.assertTrue(self.make("127.0.0.1", allow=True).confidential)
        self.assertFalse(self.make("192.0.2.7", allow=True).confidential)
