"""The line-oriented session that SMTP, POP3 and IMAP servers are built on.

Twisted's ``LineReceiver`` drops the connection on an overlong line and keeps
delivering lines that were pipelined behind STARTTLS. Mail protocols need the
opposite on both counts, so this base class:

- splits input on LF (a CR before it is stripped), bounds the buffered line,
  and reports an overlong line once, then skips to its end, so the protocol can
  answer with an error instead of hanging up;
- stops reading while a command is in progress (a handler that returns a
  Deferred), so pipelined commands run strictly in order and a client that
  keeps sending cannot grow our buffers;
- has a raw mode for DATA and literals, with the same back-pressure;
- starts TLS by throwing away every byte already received (RFC 3207 section
  4.2, RFC 2595 section 3.1), which closes the STARTTLS command-injection hole;
- sets TCP_NODELAY, because Twisted leaves Nagle on and a reply written in
  pieces would otherwise stall for about 40 ms;
- times out idle clients and counts bad commands.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class LineSession(Protocol):
    """A server session that reads lines, or raw bytes when asked to."""

    #: The longest line accepted, LF excluded. Subclasses set their RFC limit.
    max_line_length = 8192

    #: Seconds without input before ``timed_out`` is called.
    idle_timeout: float = 600.0

    #: Bad commands tolerated before the session is closed.
    max_bad_commands = 10

    #: Twisted's interfaces are not typed for mypy without the zope plugin.
    transport: Any

    #: Set by the factory from ``auth.plaintext_on_loopback``.
    plaintext_on_loopback = False

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.secure = False
        self.peer = "unknown"
        self._buffer = bytearray()
        self._raw_mode = False
        self._skipping_long_line = False
        self._busy = False
        self._closed = False
        self._bad_commands = 0
        self._timeout_call: Any = None
        self._last_activity = 0.0

    # -- connection life ---------------------------------------------------

    def connectionMade(self) -> None:
        self._set_nodelay()
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        self.reset_timeout()
        self.session_started()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closed = True
        self._cancel_timeout()
        self._buffer.clear()
        self.session_ended()

    def _set_nodelay(self) -> None:
        transport: Any = self.transport
        set_nodelay = getattr(transport, "setTcpNoDelay", None)
        if set_nodelay is None:
            return
        try:
            set_nodelay(True)
        except (OSError, AttributeError):
            log.debug("TCP_NODELAY not set for {peer}", peer=self.peer)

    # -- hooks for subclasses ----------------------------------------------

    def session_started(self) -> None:
        """Send the greeting."""

    def session_ended(self) -> None:
        """Release what the session holds."""

    def line_received(self, line: bytes) -> defer.Deferred[Any] | None:
        """Handle one line, CRLF removed. Return a Deferred to hold input."""
        raise NotImplementedError

    def raw_received(self, data: bytes) -> defer.Deferred[Any] | None:
        """Handle bytes in raw mode. Return a Deferred to hold input."""
        raise NotImplementedError

    def line_too_long(self) -> None:
        """The current line passed ``max_line_length``; the rest is skipped."""
        self.send(b"500 Line too long\r\n")

    def timed_out(self) -> None:
        """No input for ``idle_timeout`` seconds."""
        self.close()

    def too_many_bad_commands(self) -> None:
        """Called once ``max_bad_commands`` is passed; the default closes."""
        self.close()

    # -- services for subclasses -------------------------------------------

    def send(self, data: bytes) -> None:
        """Write one whole response; it leaves in as few segments as possible."""
        if not self._closed:
            self.transport.write(data)

    def close(self) -> None:
        """Close after what was written has been sent."""
        if not self._closed:
            self._closed = True
            self._cancel_timeout()
            self.transport.loseConnection()

    @property
    def confidential(self) -> bool:
        """May a password be sent now? Under TLS, or from loopback when allowed."""
        if self.secure:
            return True
        if not self.plaintext_on_loopback:
            return False
        host = getattr(self.transport.getPeer(), "host", "")
        return isinstance(host, str) and (host.startswith("127.") or host == "::1")

    @property
    def closed(self) -> bool:
        return self._closed

    def bad_command(self) -> bool:
        """Count a bad command; return True when the session was closed for it."""
        self._bad_commands += 1
        if self._bad_commands > self.max_bad_commands:
            self.too_many_bad_commands()
            return True
        return False

    def set_raw_mode(self) -> None:
        self._raw_mode = True

    def set_line_mode(self, rest: bytes = b"") -> None:
        """Leave raw mode; ``rest`` is input that came after the raw part."""
        self._raw_mode = False
        if rest:
            self._buffer[:0] = rest

    def start_tls(self, context_factory: Any) -> None:
        """Switch to TLS, discarding everything the client sent before it.

        Call it after writing the reply that invites the handshake; anything
        pipelined behind the STARTTLS command is dropped here, unread.
        """
        self._buffer.clear()
        self._skipping_long_line = False
        self.transport.startTLS(context_factory)
        self.secure = True

    def reset_timeout(self) -> None:
        """Note activity. The timer is re-armed lazily, not on every read."""
        self._last_activity = self.clock.seconds()
        if self._timeout_call is None and self.idle_timeout and not self._closed:
            self._timeout_call = self.clock.callLater(self.idle_timeout, self._on_timeout)

    def _cancel_timeout(self) -> None:
        if self._timeout_call is not None and self._timeout_call.active():
            self._timeout_call.cancel()
        self._timeout_call = None

    def _on_timeout(self) -> None:
        self._timeout_call = None
        if self._closed:
            return
        remaining = self._last_activity + self.idle_timeout - self.clock.seconds()
        if remaining > 0:
            self._timeout_call = self.clock.callLater(remaining, self._on_timeout)
            return
        log.info("session {peer} timed out", peer=self.peer)
        self.timed_out()

    # -- input ---------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self.reset_timeout()
        self._buffer += data
        if not self._busy:
            self._process()

    def _process(self) -> None:
        while self._buffer and not self._busy and not self._closed:
            if self._raw_mode:
                chunk = bytes(self._buffer)
                self._buffer.clear()
                result = self._call(self.raw_received, chunk)
            else:
                line = self._next_line()
                if line is None:
                    self._check_partial_line()
                    return
                result = self._call(self.line_received, line)
            if isinstance(result, defer.Deferred):
                self._hold(result)

    def _next_line(self) -> bytes | None:
        end = self._buffer.find(b"\n")
        if end < 0:
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if self._skipping_long_line:
            self._skipping_long_line = False
            return self._next_line() if self._buffer else None
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line_length:
            self.line_too_long()
            return self._next_line() if self._buffer else None
        return line

    def _check_partial_line(self) -> None:
        """Drop a line that is already too long before its LF arrives."""
        if len(self._buffer) <= self.max_line_length + 1:
            return
        self._buffer.clear()
        if not self._skipping_long_line:
            self._skipping_long_line = True
            self.line_too_long()

    def _call(self, handler: Any, data: bytes) -> Any:
        try:
            return handler(data)
        except Exception:
            log.failure("unexpected error handling input from {peer}", peer=self.peer)
            self.internal_error()
            return None

    def internal_error(self) -> None:
        """Answer an unexpected failure; subclasses send a temporary error."""
        self.close()

    def _hold(self, d: defer.Deferred[Any]) -> None:
        """Stop reading until ``d`` fires, then go on with buffered input."""
        self._busy = True
        self._pause_transport()

        def release(result: Any) -> Any:
            self._busy = False
            if isinstance(result, Failure):
                log.failure("unexpected error in command from {peer}", result, peer=self.peer)
                self.internal_error()
            if not self._closed:
                self._resume_transport()
                self._process()
            return None

        d.addBoth(release)

    def _pause_transport(self) -> None:
        pause = getattr(self.transport, "pauseProducing", None)
        if pause is not None:
            pause()

    def _resume_transport(self) -> None:
        resume = getattr(self.transport, "resumeProducing", None)
        if resume is not None:
            resume()
