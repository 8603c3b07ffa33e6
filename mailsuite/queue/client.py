"""Our ESMTP client: one mail transaction with one remote host.

``ReplyReader`` is the protocol: it parses replies (multi-line, bounded) and
hands them out one by one, with a timeout for each. ``Transaction`` drives
it: greeting, EHLO (HELO if refused), STARTTLS, AUTH for a smarthost, MAIL,
RCPT per recipient (pipelined when offered, RFC 2920), DATA and QUIT.

A transaction may instead leave its connection open (``keep_open``) once the
remote has answered the final dot, and a later transaction may start on it
at MAIL (``session``): RFC 5321 3.3 allows many transactions per session,
and the greeting, EHLO and TLS handshake were most of a short message's cost.

The message leaves as CRLF lines only: a bare CR or LF that reached the
queue is turned into CRLF before dot-stuffing, so no byte sequence in a
message can end the DATA early on a receiver that reads bare LF as a line
end (the "SMTP smuggling" family of bugs).

Errors that concern the whole host (no greeting, EHLO refused, TLS failed,
the connection dropped) raise ``HostFailure``, so the deliverer can try the
next MX host. Everything after the host took MAIL is per recipient and is
returned in ``TransactionResult``.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure

log = Logger()

#: RFC 5321 4.5.3.1.5 allows 512 octets; real servers send longer text.
MAX_REPLY_LINE = 4096
#: Lines in one reply (EHLO lists a few dozen at most).
MAX_REPLY_LINES = 128
#: Replies received but not yet read: a pipelined batch plus a margin.
MAX_UNREAD_REPLIES = 512


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait, after RFC 5321 section 4.5.3.2."""

    greeting: float = 300.0
    command: float = 300.0
    data_start: float = 120.0
    #: Without any progress while the message is being written.
    data_block: float = 180.0
    data_end: float = 600.0
    quit: float = 30.0


class ReplyError(Exception):
    """The remote broke the protocol (a malformed or overlong reply)."""


class ConnectionClosed(Exception):
    """The connection ended while a reply was awaited."""

    def __init__(self, reason: Failure | None, during_tls: bool) -> None:
        super().__init__(reason.getErrorMessage() if reason else "connection closed")
        self.reason = reason
        self.during_tls = during_tls


class ReplyTimeout(Exception):
    """No (complete) reply within the time allowed."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """One line for logs, the spool and a DSN: "550 5.1.1 no such user"."""
        body = " ".join(line.strip() for line in self.lines if line.strip())
        return f"{self.code} {body}".strip()

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


class HostFailure(Exception):
    """This host cannot take the message now; the next one may."""

    def __init__(
        self, reply: str, temporary: bool = True, tls_failed: bool = False, spoke: bool = True
    ) -> None:
        super().__init__(reply)
        self.reply = reply
        self.temporary = temporary
        #: The STARTTLS handshake (or certificate check) failed.
        self.tls_failed = tls_failed
        #: The host was reached (False: no address, no connection).
        self.spoke = spoke


class ReplyReader(Protocol):
    """The client side of the wire: replies in, whole commands out."""

    transport: Any

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._code: int | None = None
        self._replies: deque[Reply] = deque()
        self._waiter: defer.Deferred[Reply] | None = None
        self._timer: Any = None
        self._error: BaseException | None = None
        self._tls_pending = False

    # -- connection life ----------------------------------------------------

    def connectionMade(self) -> None:
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            with contextlib.suppress(OSError):
                set_nodelay(True)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._error is None:
            self._error = ConnectionClosed(reason, self._tls_pending)
        self._fail_waiter()

    # -- writing ------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Write one or more whole command lines in one write."""
        if self._error is None:
            self.transport.write(data)

    def start_tls(self, creator: Any) -> None:
        """Start the handshake; anything the server sent before it is dropped.

        A reply that arrived after "220" but before the handshake was sent in
        the clear by someone; believing it would let a man in the middle
        answer our EHLO (RFC 3207 section 4.2, the client side of the
        STARTTLS injection hole).
        """
        self._buffer.clear()
        self._lines.clear()
        self._code = None
        self._replies.clear()
        self._tls_pending = True
        self.transport.startTLS(creator)

    @property
    def idle_clean(self) -> bool:
        """Connected, nothing unread and nothing half-received: fit for a new MAIL.

        A reply that arrived while the connection was idle (a "421 timeout")
        would otherwise be read as the answer to the next MAIL.
        """
        return (
            self._error is None
            and self.transport is not None
            and not self._replies
            and not self._lines
            and not self._buffer
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        if self.transport is not None:
            getattr(self.transport, "abortConnection", self.transport.loseConnection)()

    # -- reading ------------------------------------------------------------

    def next_reply(self, timeout: float) -> defer.Deferred[Reply]:
        """The next complete reply; fails on timeout, a bad reply or a lost link."""
        if self._replies:
            return defer.succeed(self._replies.popleft())
        if self._error is not None:
            return defer.fail(self._error)

        self._waiter = defer.Deferred()
        self._timer = self.clock.callLater(timeout, self._timed_out)
        return self._waiter

    def dataReceived(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._tls_pending = False
        self._buffer += data
        try:
            self._parse()
        except ReplyError as e:
            self._error = e
            self._fail_waiter()
            self.abort()

    def _parse(self) -> None:
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_REPLY_LINE:
                    raise ReplyError("reply line too long")
                return
            raw = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            if len(raw) > MAX_REPLY_LINE:
                raise ReplyError("reply line too long")
            self._line(raw)

    def _line(self, raw: bytes) -> None:
        if len(raw) < 3 or not raw[:3].isdigit() or raw[3:4] not in (b"", b" ", b"-"):
            raise ReplyError(f"malformed reply line {raw[:40]!r}")
        code = int(raw[:3])
        if self._code is not None and code != self._code:
            raise ReplyError("reply code changed within a multi-line reply")

        self._code = code
        self._lines.append(raw[4:].decode("utf-8", "replace"))
        if len(self._lines) > MAX_REPLY_LINES:
            raise ReplyError("reply has too many lines")
        if raw[3:4] == b"-":
            return

        reply = Reply(code, tuple(self._lines))
        self._code = None
        self._lines = []
        self._deliver(reply)

    def _deliver(self, reply: Reply) -> None:
        waiter = self._take_waiter()
        if waiter is not None:
            waiter.callback(reply)
            return
        self._replies.append(reply)
        if len(self._replies) > MAX_UNREAD_REPLIES:
            raise ReplyError("too many unsolicited replies")

    def _take_waiter(self) -> defer.Deferred[Reply] | None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        return waiter

    def _fail_waiter(self) -> None:
        waiter = self._take_waiter()
        if waiter is not None and self._error is not None:
            waiter.errback(self._error)

    def _timed_out(self) -> None:
        self._timer = None
        self._error = ReplyTimeout("no reply in time")
        self._fail_waiter()
        self.abort()


class DataEncoder:
    """CRLF line ends and dot-stuffing for DATA, chunk by chunk (RFC 5321 4.5.2).

    Every CR LF, bare CR and bare LF becomes CR LF, exactly as the store
    normalises messages, so a DKIM signature made over the normalised
    message still holds for what is sent.
    """

    def __init__(self) -> None:
        self._at_line_start = True
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk
        self._carry = b""
        if data.endswith(b"\r"):
            # It may be the first half of a CR LF split across chunks.
            self._carry = b"\r"
            data = data[:-1]
        if not data:
            return b""

        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._at_line_start and data.startswith(b"."):
            data = b"." + data
        data = data.replace(b"\n.", b"\n..")
        self._at_line_start = data.endswith(b"\n")
        return data.replace(b"\n", b"\r\n")

    def finish(self) -> bytes:
        """The end of the message: a final line end if needed, then ".\\r\\n"."""
        ending = b""
        if self._carry or not self._at_line_start:
            ending = b"\r\n"
        self._carry = b""
        self._at_line_start = True
        return ending + b".\r\n"


@dataclass
class Envelope:
    """What one transaction sends."""

    sender: str
    recipients: list[str]
    #: Opens the message (CRLF or not; it is normalised on the way out).
    open_message: Callable[[], IO[bytes]]
    #: The message's size in octets, for SIZE= (RFC 1870).
    size: int
    #: Lines put before the message, e.g. a DKIM-Signature header.
    prefix: bytes = b""
    #: The message has octets above 127 (announced as BODY=8BITMIME).
    eight_bit: bool = False


@dataclass
class Security:
    """How TLS is used on this connection."""

    #: The connection is TLS from its first byte (port 465, a "tls:" endpoint).
    implicit: bool = False
    #: Use STARTTLS when the server offers it.
    opportunistic: bool = True
    #: Give up on a host that does not get to TLS (smarthost, verify_tls).
    required: bool = False
    #: Makes the ``IOpenSSLClientConnectionCreator`` for STARTTLS.
    creator: Callable[[], Any] | None = None


@dataclass
class Login:
    """Credentials for AUTH (RFC 4954); only ever sent over TLS."""

    user: str
    password: str


@dataclass
class Session:
    """An open connection after a finished transaction, ready for the next MAIL."""

    reader: ReplyReader
    extensions: dict[str, str]
    secure: bool


@dataclass
class TransactionResult:
    """The remote's reply for each recipient, and how the connection went."""

    host: str
    tls: bool
    replies: dict[str, Reply] = field(default_factory=dict)
    #: Recipients the remote took with its reply to the final dot.
    accepted: list[str] = field(default_factory=list)


#: Called with the result as soon as the reply to the final dot arrives, and
#: awaited before anything else (QUIT) happens.
ResultHook = Callable[[TransactionResult], Awaitable[None]]


def local_reply(code: int, text: str) -> Reply:
    """A reply we make up ourselves, worded like a remote one."""
    return Reply(code, (text,))


class Transaction:
    """One mail transaction over a connected ``ReplyReader``."""

    def __init__(
        self,
        reader: ReplyReader,
        *,
        host: str,
        helo_name: str,
        envelope: Envelope,
        security: Security,
        login: Login | None = None,
        on_result: ResultHook | None = None,
        timeouts: Timeouts | None = None,
        session: Session | None = None,
        keep_open: bool = False,
    ) -> None:
        self.reader = reader
        self.host = host
        self.helo_name = helo_name
        self.envelope = envelope
        self.security = security
        self.login = login
        self.on_result = on_result
        self.timeouts = timeouts or Timeouts()
        self.secure = security.implicit
        self.extensions: dict[str, str] = {}
        self.last_command = "greeting"
        #: Start at MAIL on this already greeted (and secured) connection.
        self.session = session
        if session is not None:
            self.secure = session.secure
            self.extensions = dict(session.extensions)
        self.keep_open = keep_open
        #: The remote answered the final dot: the session is back at MAIL.
        self.reusable = False
        #: Any reply was read in this transaction (a reused connection that
        #: fails before one was found dead, and nothing was decided).
        self.answered = False
        #: The connection was left open for the next transaction.
        self.kept: Session | None = None

    async def run(self) -> TransactionResult:
        """Run to the end; ``HostFailure`` when this host cannot take the message."""
        try:
            result = await self._run()
        except HostFailure:
            self.reader.abort()
            raise
        except (ConnectionClosed, ReplyTimeout, ReplyError) as e:
            self.reader.abort()
            raise self._host_failure(e) from None
        except BaseException:
            self.reader.abort()
            raise
        if self.keep_open and self.reusable and self.reader.idle_clean:
            self.kept = Session(self.reader, self.extensions, self.secure)
            return result
        await self._quit()
        return result

    async def _run(self) -> TransactionResult:
        if self.session is not None:
            return await self._mail()

        greeting = await self._read(self.timeouts.greeting)
        if greeting.code != 220:
            # RFC 5321 3.1: a 554 greeting means "no service here", try the next.
            raise HostFailure(self._said(greeting), greeting.temporary or greeting.code < 500)

        await self._hello()
        await self._secure()
        if self.login is not None:
            await self._authenticate(self.login)

        return await self._mail()

    # -- session set-up -------------------------------------------------------

    async def _hello(self) -> None:
        reply = await self._command(f"EHLO {self.helo_name}", self.timeouts.command)
        if reply.positive:
            self.extensions = parse_extensions(reply)
            return
        if reply.temporary:
            raise HostFailure(self._said(reply))

        # An old server without ESMTP (RFC 5321 3.2): HELO, and no extensions.
        reply = await self._command(f"HELO {self.helo_name}", self.timeouts.command)
        if not reply.positive:
            raise HostFailure(self._said(reply), reply.temporary or reply.code < 500)
        self.extensions = {}

    async def _secure(self) -> None:
        security = self.security
        if self.secure or not (security.opportunistic or security.required):
            return

        if "STARTTLS" not in self.extensions or security.creator is None:
            if security.required:
                raise HostFailure(f"{self.host} does not offer STARTTLS, which is required")
            return

        reply = await self._command("STARTTLS", self.timeouts.command)
        if reply.code != 220:
            if security.required:
                raise HostFailure(self._said(reply))
            # RFC 3207 4: a refused STARTTLS leaves the session as it was.
            return

        self.reader.start_tls(security.creator())
        self.secure = True
        try:
            await self._hello()
        except ConnectionClosed as e:
            raise HostFailure(
                f"TLS with {self.host} failed: {e}", temporary=True, tls_failed=True
            ) from None

    async def _authenticate(self, login: Login) -> None:
        if not self.secure:
            # Never reached while AUTH is only configured with TLS required.
            raise HostFailure(f"refusing to send a password to {self.host} without TLS")

        offered = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in offered:
            token = base64.b64encode(f"\0{login.user}\0{login.password}".encode()).decode()
            reply = await self._command(f"AUTH PLAIN {token}", self.timeouts.command, "AUTH")
        elif "LOGIN" in offered:
            reply = await self._auth_login(login)
        else:
            raise HostFailure(f"{self.host} offers no AUTH PLAIN or LOGIN (offers: {offered})")

        if reply.code != 235:
            # A wrong password is an operator's problem: keep the mail, say why.
            raise HostFailure(f"authentication with {self.host} failed: {reply.text}")

    async def _auth_login(self, login: Login) -> Reply:
        reply = await self._command("AUTH LOGIN", self.timeouts.command, "AUTH")
        for secret in (login.user, login.password):
            if reply.code != 334:
                return reply
            encoded = base64.b64encode(secret.encode()).decode()
            reply = await self._command(encoded, self.timeouts.command, "AUTH")
        return reply

    # -- the mail transaction -----------------------------------------------

    async def _mail(self) -> TransactionResult:
        envelope = self.envelope
        result = TransactionResult(self.host, self.secure)

        refusal = self._refuse_before_mail()
        if refusal is not None:
            result.replies = dict.fromkeys(envelope.recipients, refusal)
            await self._report(result)
            return result

        for recipient in envelope.recipients:
            if not _usable_address(recipient):
                result.replies[recipient] = local_reply(553, "5.1.3 unusable recipient address")
        recipients = [r for r in envelope.recipients if r not in result.replies]
        if not recipients:
            await self._report(result)
            return result

        commands = [self._mail_command()] + [f"RCPT TO:<{r}>" for r in recipients]
        if "PIPELINING" in self.extensions:
            return await self._pipelined(commands, recipients, result)
        return await self._one_by_one(commands, recipients, result)

    def _refuse_before_mail(self) -> Reply | None:
        """Failures we can tell without asking the remote."""
        envelope = self.envelope
        limit = self.extensions.get("SIZE", "").strip()
        if limit.isdigit() and 0 < int(limit) < envelope.size:
            # RFC 1870 section 6.2: do not send what the server said it will refuse.
            return local_reply(
                552, f"5.3.4 message of {envelope.size} octets exceeds {self.host}'s limit"
            )
        if envelope.sender and not _usable_address(envelope.sender):
            return local_reply(553, "5.1.7 unusable sender address")
        if self._needs_smtputf8() and "SMTPUTF8" not in self.extensions:
            # RFC 6531 3.2: without SMTPUTF8 a non-ASCII address cannot be sent.
            return local_reply(553, f"5.6.7 {self.host} does not support SMTPUTF8 addresses")
        return None

    def _needs_smtputf8(self) -> bool:
        addresses = [self.envelope.sender, *self.envelope.recipients]
        return not all(a.isascii() for a in addresses)

    def _mail_command(self) -> str:
        params = []
        if "SIZE" in self.extensions:
            params.append(f"SIZE={self.envelope.size}")
        if self.envelope.eight_bit and "8BITMIME" in self.extensions:
            params.append("BODY=8BITMIME")
        if self._needs_smtputf8():
            params.append("SMTPUTF8")
        suffix = "".join(f" {p}" for p in params)
        return f"MAIL FROM:<{self.envelope.sender}>{suffix}"

    async def _pipelined(
        self, commands: list[str], recipients: list[str], result: TransactionResult
    ) -> TransactionResult:
        """RFC 2920: MAIL, every RCPT and DATA in one write, replies read in order."""
        self.last_command = "MAIL"
        self.reader.send("".join(f"{c}\r\n" for c in [*commands, "DATA"]).encode("utf-8"))

        mail = await self._read(self.timeouts.command)
        rcpt_replies = [await self._read(self.timeouts.command) for _ in recipients]
        self.last_command = "DATA"
        data = await self._read(self.timeouts.data_start)

        self._check_mail(mail)
        if mail.positive:
            result.replies.update(zip(recipients, rcpt_replies, strict=True))
        else:
            result.replies.update(dict.fromkeys(recipients, mail))
        return await self._data(data, result)

    async def _one_by_one(
        self, commands: list[str], recipients: list[str], result: TransactionResult
    ) -> TransactionResult:
        mail = await self._command(commands[0], self.timeouts.command)
        self._check_mail(mail)
        if not mail.positive:
            result.replies.update(dict.fromkeys(recipients, mail))
            await self._report(result)
            return result

        for recipient, command in zip(recipients, commands[1:], strict=True):
            result.replies[recipient] = await self._command(command, self.timeouts.command)

        if not any(r.positive for r in result.replies.values()):
            await self._report(result)
            return result

        data = await self._command("DATA", self.timeouts.data_start)
        return await self._data(data, result)

    def _check_mail(self, reply: Reply) -> None:
        """A 4xx to MAIL is about this host (busy, greylisting): try the next one."""
        if reply.temporary:
            raise HostFailure(self._said(reply))

    async def _data(self, data: Reply, result: TransactionResult) -> TransactionResult:
        accepted = [r for r, reply in result.replies.items() if reply.positive]

        if data.code != 354:
            if accepted:
                for recipient in accepted:
                    result.replies[recipient] = data
            await self._report(result)
            return result

        if not accepted:
            # RFC 2920 3.1: DATA was taken though no recipient was; end it empty.
            self.reader.send(b".\r\n")
            await self._read(self.timeouts.data_end)
            await self._report(result)
            return result

        await self._send_message()
        self.last_command = "end of data"
        final = await self._read(self.timeouts.data_end)
        # RFC 5321 3.8: a 421 means the server is closing the channel.
        self.reusable = final.code != 421
        for recipient in accepted:
            result.replies[recipient] = final
        if final.positive:
            result.accepted = accepted
        await self._report(result)
        return result

    async def _send_message(self) -> None:
        """Stream the message through the encoder, with a timeout on progress."""
        encoder = DataEncoder()
        self.last_command = "message data"
        self.reader.send(encoder.feed(self.envelope.prefix))

        timer = _ProgressTimer(self.reader, self.timeouts.data_block)

        def encode(chunk: bytes) -> bytes:
            timer.progress()
            return encoder.feed(chunk)

        with self.envelope.open_message() as message:
            sender = FileSender()
            try:
                await sender.beginFileTransfer(message, self.reader.transport, encode)
            except Exception:
                raise ConnectionClosed(None, False) from None
            finally:
                timer.stop()
        self.reader.send(encoder.finish())

    async def _report(self, result: TransactionResult) -> None:
        if self.on_result is not None:
            await self.on_result(result)

    async def _quit(self) -> None:
        """Say goodbye politely, but never let it change the result."""
        self.reader.send(b"QUIT\r\n")
        with contextlib.suppress(Exception):
            await self.reader.next_reply(self.timeouts.quit)
        self.reader.close()

    # -- helpers --------------------------------------------------------------

    async def _command(self, line: str, timeout: float, name: str | None = None) -> Reply:
        self.last_command = name or line.split(" ", 1)[0].split(":", 1)[0].upper()
        self.reader.send(line.encode("utf-8") + b"\r\n")
        return await self._read(timeout)

    async def _read(self, timeout: float) -> Reply:
        reply = await self.reader.next_reply(timeout)
        self.answered = True
        return reply

    def _said(self, reply: Reply) -> str:
        return f"{reply.text} (from {self.host} after {self.last_command})"

    def _host_failure(self, error: BaseException) -> HostFailure:
        if isinstance(error, ConnectionClosed) and error.during_tls:
            return HostFailure(f"TLS with {self.host} failed: {error}", True, tls_failed=True)
        if isinstance(error, ReplyTimeout):
            problem = "timed out"
        elif isinstance(error, ReplyError):
            problem = f"protocol error: {error}"
        else:
            problem = f"connection lost: {error}"
        return HostFailure(f"451 4.4.2 {self.host} {problem} after {self.last_command}")


class _ProgressTimer:
    """Aborts the connection when no chunk has left for ``timeout`` seconds."""

    def __init__(self, reader: ReplyReader, timeout: float) -> None:
        self.reader = reader
        self.timeout = timeout
        self.call = reader.clock.callLater(timeout, self._expired)

    def progress(self) -> None:
        if self.call.active():
            self.call.reset(self.timeout)

    def stop(self) -> None:
        if self.call.active():
            self.call.cancel()

    def _expired(self) -> None:
        log.info("no progress writing the message; aborting")
        self.reader.abort()


def _usable_address(address: str) -> bool:
    """No character that could end or split a command line (CR, LF, <, >, space)."""
    return bool(address) and not any(c in "<>\r\n\0 \t" for c in address)


_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


def parse_extensions(reply: Reply) -> dict[str, str]:
    """EHLO's extension lines (all but the first) as ``{KEYWORD: parameters}``."""
    extensions: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if _KEYWORD.match(keyword):
            extensions[keyword.upper()] = params
    return extensions
