"""The POP3 server: RFC 1939 with CAPA (RFC 2449), STLS (RFC 2595) and AUTH PLAIN (RFC 5034).

One ``POP3Session`` per connection, on ``LineSession``: commands are looked
up in the table of the current state, handlers raise ``POP3Error`` or store
errors, and ``_answer_failure`` is the one place that turns any failure into
an ``-ERR`` line. Passwords are accepted only over TLS (or from loopback
when the operator allows it); before that, USER, PASS and AUTH are refused
with ``[AUTH]``, and CAPA offers only STLS.

The maildrop (``maildrop.Maildrop``) is INBOX as it was at login; deletions
and ``\\Seen`` flags reach the store only at QUIT. Messages are served by
``transfer``: in one write up to ``WHOLE_MESSAGE_LIMIT``, streamed beyond
it. The session is its transport's push producer, so neither a big message
nor a client that pipelines without reading makes the server buffer more
than a chunk or a response ahead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite.context import ServiceContext
from mailsuite.lineproto import LineSession
from mailsuite.pop3 import replies, transfer
from mailsuite.pop3.maildrop import Entry, Maildrop, MessageDeleted, NoSuchMessage
from mailsuite.pop3.replies import POP3Error
from mailsuite.pop3.slicing import SLICE_SECONDS, run_in_slices
from mailsuite.sasl import SASLCancelled, SASLError, decode_base64, parse_plain
from mailsuite.store import MessageGone, StoreError
from mailsuite.users import SessionCredentials

log = Logger()

#: RFC 2449 section 4 allows 255 octets; we accept twice that.
COMMAND_LINE_LIMIT = 512

#: RFC 5034 section 4: a response to an AUTH challenge is not bound by the
#: command-line limit.
SASL_LINE_LIMIT = 8192

#: RFC 1939 section 3: the autologout timer is at least 10 minutes.
AUTOLOGOUT_MINIMUM = 600
#: A message number or line count: digits only (no sign, no space).
NUMBER = re.compile(rb"[0-9]{1,10}")

#: RFC 2449 section 6, always offered. EXPIRE NEVER: we never delete by ourselves.
BASE_CAPABILITIES = (
    b"TOP",
    b"UIDL",
    b"RESP-CODES",
    b"AUTH-RESP-CODE",
    b"PIPELINING",
    b"EXPIRE NEVER",
    b"IMPLEMENTATION mailsuite",
)

AUTHORIZATION = "AUTHORIZATION"
TRANSACTION = "TRANSACTION"
UPDATE = "UPDATE"

Handler = Callable[["POP3Session", bytes], "defer.Deferred[Any] | None"]


@implementer(IPushProducer)
class POP3Session(LineSession):
    """One POP3 connection.

    The session is its transport's push producer for the whole connection:
    when the transport holds more unsent data than it wants (a client that
    pipelines commands but does not read), it pauses the session, and no
    further command runs until it resumes. So memory stays bounded whatever
    the client sends, and a big message is streamed at the client's pace.
    """

    max_line_length = COMMAND_LINE_LIMIT

    #: Seconds of login or QUIT work before other sessions get a turn.
    slice_budget = SLICE_SECONDS

    def __init__(self, ctx: ServiceContext, secure: bool) -> None:
        super().__init__(ctx.reactor)
        self.ctx = ctx
        self.secure = secure
        limits = ctx.config.limits
        self.idle_timeout = max(limits.idle_timeout, AUTOLOGOUT_MINIMUM)
        self.max_bad_commands = limits.bad_commands
        self.plaintext_on_loopback = ctx.config.auth.plaintext_on_loopback

        self.state = AUTHORIZATION
        self.user: bytes | None = None
        self.address: str | None = None
        self.maildrop: Maildrop | None = None
        self._awaiting_sasl = False
        self._registered = False
        self._write_paused = False
        self._stream: transfer.MessageStream | None = None
        self._resume_waiter: defer.Deferred[None] | None = None

    # -- session life ----------------------------------------------------------

    def session_started(self) -> None:
        log.debug("pop3 session from {peer} secure={secure}", peer=self.peer, secure=self.secure)
        self.transport.registerProducer(self, True)
        self._registered = True
        self.send(replies.GREETING)

    def session_ended(self) -> None:
        """A dropped connection changes nothing: the maildrop is just let go."""
        if self._stream is not None:
            self._stream.stop()
        self.maildrop = None

    def close(self) -> None:
        """Close after what was written; a stream in progress ends unfinished.

        The producer is unregistered first: a TLS transport does not close
        while one is registered.
        """
        if self.closed:
            return
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()
        super().close()
        if self._stream is not None:
            self._stream.stop()

    def timed_out(self) -> None:
        # Inside a streamed message an -ERR line would read as message text.
        if self._stream is None:
            self.send(replies.AUTOLOGOUT)
        self.close()

    def too_many_bad_commands(self) -> None:
        log.info("pop3 session {peer} closed after too many bad commands", peer=self.peer)
        self.send(replies.TOO_MANY_BAD_COMMANDS)
        self.close()

    def line_too_long(self) -> None:
        self._end_sasl()
        self.send(replies.LINE_TOO_LONG)
        self.bad_command()

    def internal_error(self) -> None:
        self.send(replies.INTERNAL_ERROR)
        self.close()

    # -- dispatch --------------------------------------------------------------

    # -- back-pressure (IPushProducer, called by the transport) -----------------

    def pauseProducing(self) -> None:
        """The transport holds enough unsent data: write no more for now."""
        self._write_paused = True

    def resumeProducing(self) -> None:
        """The transport sent what it held: go on with the stream, or the next command."""
        self._write_paused = False
        if self._stream is not None:
            self._stream.pump(self._writable)
            return

        waiter, self._resume_waiter = self._resume_waiter, None
        if waiter is not None:
            waiter.callback(None)

    def stopProducing(self) -> None:
        """The connection is going away."""
        if self._stream is not None:
            self._stream.stop()

    def _writable(self) -> bool:
        return not self._write_paused and not self.closed

    # -- dispatch --------------------------------------------------------------

    def line_received(self, line: bytes) -> defer.Deferred[Any] | None:
        if self._write_paused:
            # Hold this command (and, through LineSession, all after it)
            # until the client has read what it was sent.
            waiter: defer.Deferred[None] = defer.Deferred()
            waiter.addCallback(lambda _: self._dispatch(line))
            self._resume_waiter = waiter
            return waiter
        return self._dispatch(line)

    def _dispatch(self, line: bytes) -> defer.Deferred[Any] | None:
        if self._awaiting_sasl:
            self._end_sasl()
            return self._run(POP3Session._sasl_response, line)

        verb, _, argument = line.partition(b" ")
        verb = verb.upper()
        handler = COMMANDS[self.state].get(verb)
        if handler is None:
            known = any(verb in table for table in COMMANDS.values())
            self._refuse(replies.WRONG_STATE if known else replies.UNKNOWN_COMMAND)
            return None
        return self._run(handler, argument)

    def _run(self, handler: Handler, argument: bytes) -> defer.Deferred[Any] | None:
        try:
            result = handler(self, argument)
        except Exception:
            self._answer_failure(Failure())
            return None
        if isinstance(result, defer.Deferred):
            result.addErrback(self._answer_failure)
            # A command that closed the session (too many failed logins)
            # leaves no more input to hold back.
            return None if self.closed else result
        return None

    def _answer_failure(self, failure: Failure) -> None:
        """The one place where a failed command becomes an ``-ERR`` line."""
        error = failure.value
        if isinstance(error, POP3Error):
            self._refuse(error.reply, error.bad)
        elif isinstance(error, NoSuchMessage):
            self.send(replies.NO_SUCH_MESSAGE)
        elif isinstance(error, MessageDeleted):
            self.send(replies.MESSAGE_DELETED)
        elif isinstance(error, MessageGone):
            self.send(replies.MESSAGE_GONE)
        elif isinstance(error, StoreError):
            log.warn("pop3 store error for {address}: {error}", address=self.address, error=error)
            self.send(replies.STORE_TEMPORARY if error.temporary else replies.STORE_PERMANENT)
        elif isinstance(error, OSError):
            log.warn("pop3 disk error for {address}: {error}", address=self.address, error=error)
            self.send(replies.STORE_TEMPORARY)
        else:
            log.failure("pop3 command failed for {peer}", failure, peer=self.peer)
            self.send(replies.INTERNAL_ERROR)

    def _refuse(self, reply: bytes, bad: bool = True) -> None:
        self.send(reply)
        if bad:
            self.bad_command()

    # -- AUTHORIZATION state ---------------------------------------------------

    def do_capa(self, argument: bytes) -> None:
        """RFC 2449 section 5; login methods only where a password may be sent."""
        capabilities = list(BASE_CAPABILITIES)
        if self.state == AUTHORIZATION:
            if self.confidential:
                capabilities += [b"USER", b"SASL PLAIN"]
            if not self.secure and self.ctx.tls is not None:
                capabilities.append(b"STLS")

        lines = b"".join(c + b"\r\n" for c in capabilities)
        self.send(replies.CAPA_FOLLOWS + lines + transfer.TERMINATOR)

    def do_stls(self, argument: bytes) -> None:
        """RFC 2595 section 4: discard what was pipelined, and what we knew."""
        if self.secure:
            raise POP3Error(replies.ALREADY_TLS, bad=True)
        if self.ctx.tls is None:
            raise POP3Error(replies.TLS_UNAVAILABLE)

        self.send(replies.STLS_GO_AHEAD)
        self.start_tls(self.ctx.tls)
        self.user = None

    def do_user(self, argument: bytes) -> None:
        self._require_confidential()
        name = argument.strip()
        if not name:
            raise POP3Error(replies.SYNTAX_ERROR, bad=True)

        self.user = name
        self.send(replies.USER_ACCEPTED)

    def do_pass(self, argument: bytes) -> defer.Deferred[None]:
        """RFC 1939 section 7: the password is the rest of the line, spaces included."""
        self._require_confidential()
        if self.user is None:
            raise POP3Error(replies.USER_FIRST, bad=True)

        user, self.user = self.user, None
        return self._login(user, argument)

    def do_auth(self, argument: bytes) -> defer.Deferred[None] | None:
        """RFC 5034: AUTH PLAIN, with or without an initial response."""
        self._require_confidential()
        words = argument.split()
        if not words:
            self.send(replies.SASL_MECHANISMS)
            return None
        if words[0].upper() != b"PLAIN":
            raise POP3Error(replies.UNKNOWN_MECHANISM, bad=True)
        if len(words) > 2:
            raise POP3Error(replies.SYNTAX_ERROR, bad=True)

        if len(words) == 2:
            return self._sasl_response(words[1])
        self._awaiting_sasl = True
        self.max_line_length = SASL_LINE_LIMIT
        self.send(replies.SASL_CONTINUE)
        return None

    def _sasl_response(self, response: bytes) -> defer.Deferred[None]:
        try:
            credentials = parse_plain(decode_base64(response))
        except SASLCancelled:
            raise POP3Error(replies.AUTH_CANCELLED)
        except SASLError:
            raise POP3Error(replies.AUTH_MALFORMED, bad=True)

        user = credentials.username.encode("utf-8")
        return self._login(user, credentials.password.encode("utf-8"))

    def _end_sasl(self) -> None:
        self._awaiting_sasl = False
        self.max_line_length = COMMAND_LINE_LIMIT

    def _require_confidential(self) -> None:
        if not self.confidential:
            raise POP3Error(replies.TLS_REQUIRED, bad=True)

    def _login(self, user: bytes, password: bytes) -> defer.Deferred[None]:
        """Check the password (the checker delays refusals), then open the maildrop."""
        credentials = SessionCredentials(user, password, "pop3", self.peer)
        d = defer.maybeDeferred(self.ctx.checker.requestAvatarId, credentials)
        d.addCallbacks(self._logged_in, self._login_refused)
        return d

    def _login_refused(self, failure: Failure) -> None:
        if failure.check(UnauthorizedLogin):
            raise POP3Error(replies.AUTH_FAILED, bad=True)

        log.failure("pop3 password check failed for {peer}", failure, peer=self.peer)
        raise POP3Error(replies.AUTH_UNAVAILABLE)

    def _logged_in(self, address: str) -> defer.Deferred[None] | None:
        if self.closed:
            return None

        maildrop = Maildrop.open(self.ctx.store, address)
        d = run_in_slices(self.clock, maildrop.measure(), self.slice_budget)
        d.addCallback(lambda _: self._maildrop_ready(maildrop, address))
        return d

    def _maildrop_ready(self, maildrop: Maildrop, address: str) -> None:
        if self.closed:
            return

        self.maildrop = maildrop
        self.address = address
        self.state = TRANSACTION

        count, octets = maildrop.stat()
        log.info(
            "pop3 login {address} from {peer}: {count} messages",
            address=address,
            peer=self.peer,
            count=count,
        )
        self.send(b"+OK logged in, %d messages (%d octets)\r\n" % (count, octets))

    def do_quit_authorization(self, argument: bytes) -> None:
        self.send(replies.BYE)
        self.close()

    # -- TRANSACTION state -----------------------------------------------------

    @property
    def _maildrop(self) -> Maildrop:
        assert self.maildrop is not None, "TRANSACTION state without a maildrop"
        return self.maildrop

    def do_stat(self, argument: bytes) -> None:
        count, octets = self._maildrop.stat()
        self.send(b"+OK %d %d\r\n" % (count, octets))

    def do_list(self, argument: bytes) -> None:
        """RFC 1939 section 5: sizes with CRLF line ends, before dot-stuffing."""
        self._scan_listing(argument, lambda entry: str(entry.size))

    def do_uidl(self, argument: bytes) -> None:
        """RFC 1939 section 7: the persistent unique-id of each message."""
        self._scan_listing(argument, self._maildrop.uidl)

    def _scan_listing(self, argument: bytes, value: Callable[[Entry], str]) -> None:
        """LIST and UIDL: one message's line, or a multi-line listing of all."""
        words = argument.split()
        if len(words) > 1:
            raise POP3Error(replies.SYNTAX_ERROR, bad=True)

        maildrop = self._maildrop
        if words:
            number = _number(words[0])
            line = f"+OK {number} {value(maildrop.entry(number))}\r\n"
            self.send(line.encode("ascii"))
            return

        count, octets = maildrop.stat()
        head = f"+OK {count} messages ({octets} octets)\r\n"
        lines = "".join([f"{n} {value(e)}\r\n" for n, e in maildrop.listing()])
        self.send((head + lines + ".\r\n").encode("ascii"))

    def do_retr(self, argument: bytes) -> defer.Deferred[None] | None:
        words = argument.split()
        if len(words) != 1:
            raise POP3Error(replies.SYNTAX_ERROR, bad=True)

        entry = self._maildrop.entry(_number(words[0]))
        result = self._serve(entry, b"+OK %d octets\r\n" % entry.size, None)
        self._maildrop.retrieved(entry)
        return result

    def do_top(self, argument: bytes) -> defer.Deferred[None] | None:
        """RFC 1939 section 7: TOP does not count as retrieving the message."""
        words = argument.split()
        if len(words) != 2:
            raise POP3Error(replies.SYNTAX_ERROR, bad=True)

        entry = self._maildrop.entry(_number(words[0]))
        return self._serve(entry, replies.TOP_FOLLOWS, _number(words[1]))

    def _serve(self, entry: Entry, status: bytes, top_lines: int | None) -> Any:
        """Write the status line and the message: at once if small, else streamed.

        The file's own size decides, not the size its name claims, so no
        file is ever read whole into memory past ``WHOLE_MESSAGE_LIMIT``.
        """
        file = self._maildrop.folder.open_message(entry.message)
        try:
            stored_size = os.fstat(file.fileno()).st_size
        except BaseException:
            file.close()
            raise

        if stored_size <= transfer.WHOLE_MESSAGE_LIMIT:
            with file:
                stored = file.read()
            self.send(_whole_response(status, stored, entry.size, top_lines))
            return None

        self.send(status)
        pieces = transfer.served(transfer.file_blocks(file, transfer.CHUNK_SIZE), top_lines)
        stream = transfer.MessageStream(
            self.send, pieces, file, abort=self.close, on_progress=self.reset_timeout
        )
        self._stream = stream
        stream.done.addBoth(self._served)
        stream.pump(self._writable)
        return stream.done

    def _served(self, result: Any) -> Any:
        self._stream = None
        return result

    def do_dele(self, argument: bytes) -> None:
        """RFC 1939 section 5: only marked now; removed at QUIT."""
        words = argument.split()
        if len(words) != 1:
            raise POP3Error(replies.SYNTAX_ERROR, bad=True)

        number = _number(words[0])
        self._maildrop.delete(self._maildrop.entry(number))
        self.send(b"+OK message %d deleted\r\n" % number)

    def do_noop(self, argument: bytes) -> None:
        self.send(replies.OK)

    def do_rset(self, argument: bytes) -> None:
        self._maildrop.reset()
        count, octets = self._maildrop.stat()
        self.send(b"+OK maildrop has %d messages (%d octets)\r\n" % (count, octets))

    def do_quit_transaction(self, argument: bytes) -> defer.Deferred[None]:
        """RFC 1939 section 6: the UPDATE state, then close whatever happened.

        The update goes on even if the client leaves meanwhile: it asked for it.
        """
        self.state = UPDATE
        maildrop = self._maildrop
        d = run_in_slices(self.clock, maildrop.update(), self.slice_budget)
        d.addCallbacks(self._updated, self._update_failed, callbackArgs=(maildrop,))
        return d

    def _updated(self, _: None, maildrop: Maildrop) -> None:
        removed = maildrop.removed
        log.info("pop3 logout {address}: {removed} deleted", address=self.address, removed=removed)
        self.send(b"+OK bye, %d messages deleted\r\n" % removed)
        self.close()

    def _update_failed(self, failure: Failure) -> None:
        log.failure("pop3 update failed for {address}", failure, address=self.address)
        self.send(replies.UPDATE_FAILED)
        self.close()


def _whole_response(status: bytes, stored: bytes, size: int, top_lines: int | None) -> bytes:
    """A whole RETR or TOP answer for a message read into memory."""
    # CRLF conversion only ever adds octets, so a file as long as its served
    # size is in served form already (our own deliveries).
    normalise = len(stored) != size
    return b"".join([status, *transfer.served([stored], top_lines, normalise)])


def _number(text: bytes) -> int:
    """A message number or line count; anything but plain digits is refused."""
    if NUMBER.fullmatch(text) is None:
        raise POP3Error(replies.INVALID_NUMBER, bad=True)
    return int(text)


#: Per-state command tables (RFC 1939 sections 4 to 7, RFC 2449, 2595, 5034).
COMMANDS: dict[str, dict[bytes, Handler]] = {
    AUTHORIZATION: {
        b"CAPA": POP3Session.do_capa,
        b"STLS": POP3Session.do_stls,
        b"USER": POP3Session.do_user,
        b"PASS": POP3Session.do_pass,
        b"AUTH": POP3Session.do_auth,
        b"QUIT": POP3Session.do_quit_authorization,
    },
    TRANSACTION: {
        b"CAPA": POP3Session.do_capa,
        b"STAT": POP3Session.do_stat,
        b"LIST": POP3Session.do_list,
        b"UIDL": POP3Session.do_uidl,
        b"RETR": POP3Session.do_retr,
        b"TOP": POP3Session.do_top,
        b"DELE": POP3Session.do_dele,
        b"NOOP": POP3Session.do_noop,
        b"RSET": POP3Session.do_rset,
        b"QUIT": POP3Session.do_quit_transaction,
    },
    UPDATE: {},
}


class POP3Factory(Factory):
    """Builds POP3 sessions; ``implicit_tls`` for pop3s, whose transport the tap wraps."""

    noisy = False

    def __init__(self, ctx: ServiceContext, implicit_tls: bool) -> None:
        self.ctx = ctx
        self.implicit_tls = implicit_tls

    def buildProtocol(self, addr: Any) -> POP3Session:
        session = POP3Session(self.ctx, secure=self.implicit_tls)
        session.factory = self
        return session
