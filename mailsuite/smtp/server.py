"""The ESMTP receiver: MX (port 25), submission (587) and submissions (465).

One ``SMTPSession`` per connection, on ``LineSession`` (bounded lines, raw
DATA, in-order pipelining with back-pressure, STARTTLS that drops pipelined
input). The session parses and sequences; ``RecipientPolicy`` decides who
may receive, ``DataReader`` reads the message, ``Intake`` stores it, and
``replies`` maps every error to its reply in one place.

The three kinds differ only in their ``Mode``:

- ``smtp``: mail from the world for our users. No AUTH (``502``), so no
  relay at all; STARTTLS offered when TLS is configured.
- ``submission``: our users' mail to anyone. AUTH PLAIN/LOGIN is offered and
  accepted only under TLS (``538`` before STARTTLS), or from a loopback peer
  when ``auth.plaintext_on_loopback`` is set; MAIL needs AUTH first, and
  ``SenderPolicy`` checks the sender at MAIL and the From: header after DATA.
- ``submissions``: the same over TLS from the first byte (the listener wraps
  this factory in TLS, so sessions start ``secure``).

A command line may be 2048 octets (RFC 5321 4.5.3.1.4 asks for 512; SMTPUTF8
addresses and parameters need more), an AUTH line 12288 (RFC 4954 4). A
longer line is answered ``500 5.5.6`` and skipped; the session goes on.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from twisted.cred import error as cred_error
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsuite import quota, sasl
from mailsuite.aliases import open_aliases
from mailsuite.context import ServiceContext
from mailsuite.lineproto import LineSession
from mailsuite.smtp import auth, replies
from mailsuite.smtp.data import DataReader
from mailsuite.smtp.intake import Intake
from mailsuite.smtp.parse import parse_helo, parse_mail, parse_rcpt, split_command
from mailsuite.smtp.policy import (
    AliasDirectory,
    Recipient,
    RecipientPolicy,
    SenderPolicy,
    UserDirectory,
)
from mailsuite.smtp.received import protocol_name, received_header
from mailsuite.smtp.replies import Reply, SMTPReplyError
from mailsuite.users import SessionCredentials

log = Logger()

COMMAND_LINE_LIMIT = 2048
AUTH_LINE_LIMIT = 12288
#: RFC 5321 4.5.3.1.8: at least 100 must be accepted.
MAX_RECIPIENTS = 100
MAX_AUTH_FAILURES = 3

#: Lines a web browser sends when tricked into talking to port 25.
HTTP_VERBS = frozenset({"GET", "POST", "PUT", "HEAD", "CONNECT", "OPTIONS"})


@dataclass(frozen=True)
class Mode:
    """What one listener kind offers and requires."""

    name: str
    offers_auth: bool
    requires_auth: bool
    implicit_tls: bool


MODES = {
    "smtp": Mode("smtp", offers_auth=False, requires_auth=False, implicit_tls=False),
    "submission": Mode("submission", offers_auth=True, requires_auth=True, implicit_tls=False),
    "submissions": Mode("submissions", offers_auth=True, requires_auth=True, implicit_tls=True),
}


class State(Enum):
    GREETING = "before HELO"
    READY = "after HELO"
    MAIL = "after MAIL"
    RCPT = "after RCPT"


_ANYTIME = frozenset({"EHLO", "HELO", "NOOP", "RSET", "QUIT", "HELP", "VRFY", "EXPN"})

#: Which commands each state takes; a known command elsewhere gets 503.
COMMANDS: dict[State, frozenset[str]] = {
    State.GREETING: _ANYTIME | {"STARTTLS", "AUTH"},
    State.READY: _ANYTIME | {"STARTTLS", "AUTH", "MAIL"},
    State.MAIL: _ANYTIME | {"RCPT", "DATA"},
    State.RCPT: _ANYTIME | {"RCPT", "DATA"},
}
KNOWN_COMMANDS = frozenset().union(*COMMANDS.values())


@dataclass
class Transaction:
    """One MAIL ... DATA exchange."""

    sender: str
    smtputf8: bool
    recipients: list[Recipient] = field(default_factory=list)
    refused: int = 0


class SMTPSession(LineSession):
    """One client connection."""

    max_line_length = AUTH_LINE_LIMIT

    def __init__(self, factory: SMTPFactory) -> None:
        super().__init__(factory.ctx.reactor)
        ctx = factory.ctx
        self.factory = factory
        self.ctx = ctx
        self.mode = factory.mode
        self.limit = ctx.config.limits.message_size
        self.idle_timeout = ctx.config.limits.idle_timeout
        self.max_bad_commands = ctx.config.limits.bad_commands
        self.secure = factory.mode.implicit_tls
        self.plaintext_on_loopback = ctx.config.auth.plaintext_on_loopback
        self.session_id = secrets.token_hex(5)
        self.state = State.GREETING
        self.helo: str | None = None
        self.esmtp = False
        self.user: str | None = None
        self.transaction: Transaction | None = None
        self.reader: DataReader | None = None
        self._sasl: auth.Exchange | None = None
        self._auth_failures = 0
        self._transactions = 0

    # -- LineSession hooks ---------------------------------------------------

    def session_started(self) -> None:
        self.send(f"220 {self.ctx.config.hostname} ESMTP mailsuite\r\n".encode())

    def session_ended(self) -> None:
        # A message cut off mid-DATA is dropped: it was never acknowledged.
        self.reader = None
        self.transaction = None
        self._sasl = None

    def line_received(self, line: bytes) -> defer.Deferred[Any] | None:
        if self._sasl is not None:
            return self._guarded(self._sasl_response, line)
        if len(line) > COMMAND_LINE_LIMIT and line[:5].upper() != b"AUTH ":
            self.line_too_long()
            return None
        return self._guarded(self._command, line)

    def raw_received(self, data: bytes) -> defer.Deferred[Any] | None:
        reader = self.reader
        assert reader is not None
        if not reader.feed(data):
            return None
        self.set_line_mode(reader.rest or b"")
        return self._message_complete(reader)

    def line_too_long(self) -> None:
        if self._sasl is not None:
            # RFC 4954 4: an overlong response ends the exchange.
            self._sasl = None
        self.reply(replies.LINE_TOO_LONG)

    def timed_out(self) -> None:
        self.send(replies.TIMEOUT.wire)
        self.close()

    def too_many_bad_commands(self) -> None:
        self.send(replies.TOO_MANY_ERRORS.wire)
        self.close()

    def internal_error(self) -> None:
        """A bug surfaced: answer 451; mid-DATA we cannot find our place, so close."""
        self.send(replies.LOCAL_ERROR.wire)
        if self.reader is not None:
            self.close()
            return
        self._sasl = None
        self._reset_transaction()

    # -- replies -------------------------------------------------------------

    def reply(self, reply: Reply) -> None:
        """Send a reply; one that counts as a bad command may end the session."""
        self.send(reply.wire)
        if reply.counts:
            self.bad_command()

    def _guarded(self, handler: Any, line: bytes) -> defer.Deferred[Any] | None:
        """Run a handler; an ``SMTPReplyError`` it raises becomes its reply."""
        try:
            return handler(line)
        except SMTPReplyError as e:
            self.reply(e.reply)
            return None

    # -- dispatch ------------------------------------------------------------

    def _command(self, line: bytes) -> defer.Deferred[Any] | None:
        verb, argument = split_command(line)
        if verb in HTTP_VERBS and self.state is State.GREETING:
            log.info("closing {peer}: HTTP request on the SMTP port", peer=self.peer)
            self.close()
            return None
        if verb not in KNOWN_COMMANDS:
            raise SMTPReplyError(replies.UNKNOWN_COMMAND)
        if verb not in COMMANDS[self.state]:
            raise SMTPReplyError(self._out_of_sequence(verb))
        handler = getattr(self, "smtp_" + verb)
        return handler(argument)

    def _out_of_sequence(self, verb: str) -> Reply:
        transaction = self.transaction
        if verb == "DATA" and transaction is not None and transaction.refused:
            return replies.NO_VALID_RECIPIENTS
        return replies.BAD_SEQUENCE

    # -- session commands ------------------------------------------------------

    def smtp_EHLO(self, argument: str) -> None:
        self._greet(parse_helo(argument), esmtp=True)
        self.send(replies.multiline(250, self._ehlo_lines()))

    def smtp_HELO(self, argument: str) -> None:
        self._greet(parse_helo(argument), esmtp=False)
        self.send(f"250 {self.ctx.config.hostname}\r\n".encode())

    def _greet(self, name: str, esmtp: bool) -> None:
        """RFC 5321 4.1.4: HELO/EHLO also resets any transaction."""
        self.helo = name
        self.esmtp = esmtp
        self._reset_transaction()

    def _ehlo_lines(self) -> list[str]:
        host = self.ctx.config.hostname
        lines = [
            f"{host} Hello {self.helo} [{self._peer_ip()}]",
            "PIPELINING",
            f"SIZE {self.limit}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
        ]
        if self._can_start_tls():
            lines.append("STARTTLS")
        if self.mode.offers_auth and self.confidential:
            lines.append("AUTH " + " ".join(sasl.MECHANISMS))
        return lines

    def smtp_RSET(self, argument: str) -> None:
        if argument:
            raise SMTPReplyError(replies.SYNTAX_ERROR)
        self._reset_transaction()
        self.send(replies.OK.wire)

    def smtp_NOOP(self, argument: str) -> None:
        self.send(replies.OK.wire)

    def smtp_QUIT(self, argument: str) -> None:
        self.send(replies.BYE.wire)
        self.close()

    def smtp_HELP(self, argument: str) -> None:
        self.send(replies.HELP.wire)

    def smtp_VRFY(self, argument: str) -> None:
        if not argument:
            raise SMTPReplyError(replies.SYNTAX_ERROR)
        self.send(replies.CANNOT_VRFY.wire)

    def smtp_EXPN(self, argument: str) -> None:
        # RFC 5321 3.5.3: we have no lists to expand, and would not say.
        raise SMTPReplyError(replies.NOT_IMPLEMENTED)

    def _reset_transaction(self) -> None:
        self.transaction = None
        self.reader = None
        self.state = State.READY if self.helo is not None else State.GREETING

    # -- STARTTLS (RFC 3207) ---------------------------------------------------

    def _can_start_tls(self) -> bool:
        return not self.secure and self.ctx.tls is not None

    def smtp_STARTTLS(self, argument: str) -> None:
        if argument:
            raise SMTPReplyError(replies.SYNTAX_ERROR)
        if self.secure:
            raise SMTPReplyError(replies.TLS_ALREADY_ACTIVE)
        if self.ctx.tls is None:
            raise SMTPReplyError(replies.TLS_UNAVAILABLE)

        self.send(replies.READY_FOR_TLS.wire)
        # Drops whatever the client pipelined after STARTTLS (RFC 3207 4.2).
        self.start_tls(self.ctx.tls)

        # RFC 3207 4.2: forget everything learned before TLS, as if new.
        self.helo = None
        self.esmtp = False
        self.user = None
        self._reset_transaction()

    # -- AUTH (RFC 4954) -------------------------------------------------------

    def smtp_AUTH(self, argument: str) -> defer.Deferred[Any] | None:
        if not self.mode.offers_auth:
            raise SMTPReplyError(replies.AUTH_NOT_OFFERED)
        if not self.esmtp:
            raise SMTPReplyError(replies.BAD_SEQUENCE)
        if not self.confidential:
            raise SMTPReplyError(replies.ENCRYPTION_REQUIRED)
        if self.user is not None:
            raise SMTPReplyError(replies.ALREADY_AUTHENTICATED)

        mechanism, _, initial = argument.partition(" ")
        try:
            exchange = auth.exchange_for(mechanism)
        except auth.UnknownMechanism:
            raise SMTPReplyError(replies.AUTH_UNKNOWN_MECHANISM)
        response = initial.encode("utf-8") if initial else None
        return self._sasl_step(exchange, lambda: exchange.start(response))

    def _sasl_response(self, line: bytes) -> defer.Deferred[Any] | None:
        exchange = self._sasl
        assert exchange is not None
        return self._sasl_step(exchange, lambda: exchange.respond(line))

    def _sasl_step(self, exchange: auth.Exchange, step: Any) -> defer.Deferred[Any] | None:
        self._sasl = None
        try:
            result = step()
        except sasl.SASLCancelled:
            raise SMTPReplyError(replies.AUTH_CANCELLED)
        except sasl.SASLIdentityRefused:
            raise SMTPReplyError(replies.AUTH_FAILED)
        except sasl.SASLError:
            raise SMTPReplyError(replies.AUTH_BAD_RESPONSE)

        if isinstance(result, bytes):
            self._sasl = exchange
            self.send(b"334 " + result + b"\r\n")
            return None
        return self._check_credentials(result)

    def _check_credentials(self, credentials: sasl.Credentials) -> defer.Deferred[Any]:
        request = SessionCredentials(
            credentials.username.encode("utf-8"),
            credentials.password.encode("utf-8"),
            protocol=self.mode.name,
            session=self.session_id,
        )
        d = defer.maybeDeferred(self.ctx.checker.requestAvatarId, request)
        return d.addCallbacks(self._authenticated, self._not_authenticated)

    def _authenticated(self, address: str) -> None:
        self.user = address
        log.info("{peer} authenticated as {user}", peer=self.peer, user=address)
        self.send(replies.AUTH_OK.wire)

    def _not_authenticated(self, failure: Failure) -> None:
        # The checker logs auth_failed to the mail log, with our session id.
        if not failure.check(cred_error.UnauthorizedLogin):
            log.failure("password check failed for {peer}", failure, peer=self.peer)
            self.send(replies.AUTH_TEMPORARY.wire)
            return

        self._auth_failures += 1
        self.send(replies.AUTH_FAILED.wire)
        if self._auth_failures >= MAX_AUTH_FAILURES:
            self.send(replies.TOO_MANY_AUTH_FAILURES.wire)
            self.close()

    # -- the envelope ----------------------------------------------------------

    def smtp_MAIL(self, argument: str) -> None:
        if self.mode.requires_auth and self.user is None:
            raise SMTPReplyError(replies.AUTH_REQUIRED)

        mail = parse_mail(argument, self.esmtp, self.mode.offers_auth)
        if not mail.sender.ascii and not mail.smtputf8:
            raise SMTPReplyError(replies.NEEDS_SMTPUTF8)
        if self.user is not None:
            self._check_sender(self.user, mail.sender.text)
        if mail.size is not None and mail.size > self.limit:
            self._rejected("MAIL", replies.MESSAGE_TOO_BIG, sender=mail.sender.text)
            raise SMTPReplyError(replies.MESSAGE_TOO_BIG)

        self.transaction = Transaction(mail.sender.text, mail.smtputf8)
        self.state = State.MAIL
        self.send(replies.SENDER_OK.wire)

    def _check_sender(self, user: str, sender: str) -> None:
        try:
            self.factory.senders.envelope(user, sender)
        except SMTPReplyError as e:
            self._rejected("MAIL", e.reply, sender=sender or "<>", user=user)
            raise

    def smtp_RCPT(self, argument: str) -> None:
        transaction = self.transaction
        assert transaction is not None
        address = parse_rcpt(argument, self.esmtp)
        if not address.ascii and not transaction.smtputf8:
            raise SMTPReplyError(replies.NEEDS_SMTPUTF8)
        if len(transaction.recipients) >= MAX_RECIPIENTS:
            self.send(replies.TOO_MANY_RECIPIENTS.wire)
            return

        try:
            recipient = self.factory.policy.recipient(address, self.user is not None)
            self._check_quota(recipient)
        except SMTPReplyError as e:
            transaction.refused += 1
            self._rejected("RCPT", e.reply, sender=transaction.sender, recipient=address.text)
            raise

        transaction.recipients.append(recipient)
        self.state = State.RCPT
        self.send(replies.RECIPIENT_OK.wire)

    def _check_quota(self, recipient: Recipient) -> None:
        """A full mailbox is refused at RCPT with 452 4.2.2, so the other
        recipients of the message are not held back; the one message that
        crosses the limit is still taken (a soft quota, as Dovecot's LMTP)."""
        limit = self.ctx.config.limits.quota
        if not limit:
            return
        for mailbox in recipient.mailboxes:
            if quota.storage_used(self.ctx.store.account(mailbox)) >= limit:
                raise SMTPReplyError(replies.MAILBOX_FULL)

    def _rejected(self, stage: str, reply: Reply, **fields: str) -> None:
        self.ctx.maillog.rejected(
            session=self.session_id,
            stage=stage,
            reply=reply.wire.decode("utf-8").rstrip(),
            peer=self.peer,
            **fields,
        )

    # -- DATA ------------------------------------------------------------------

    def smtp_DATA(self, argument: str) -> None:
        if argument:
            raise SMTPReplyError(replies.SYNTAX_ERROR)
        transaction = self.transaction
        if transaction is None or not transaction.recipients:
            raise SMTPReplyError(self._out_of_sequence("DATA"))

        self.reader = DataReader(self.limit)
        self.set_raw_mode()
        self.send(replies.START_DATA.wire)

    def _message_complete(self, reader: DataReader) -> defer.Deferred[Any] | None:
        transaction = self.transaction
        assert transaction is not None
        self._reset_transaction()

        message = reader.message()
        if message is None:
            self._rejected("DATA", replies.MESSAGE_TOO_BIG, sender=transaction.sender)
            self.send(replies.MESSAGE_TOO_BIG.wire)
            return None

        refusal = self._check_message(transaction, message)
        if refusal is not None:
            self.send(refusal.wire)
            return None

        self._transactions += 1
        transaction_id = f"{self.session_id}.{self._transactions}"
        data = self._received_header(transaction, transaction_id) + message
        d = self.factory.intake.accept(
            transaction_id, transaction.sender, transaction.recipients, data
        )
        return d.addCallbacks(self._accepted, self._not_accepted, (transaction_id,))

    def _check_message(self, transaction: Transaction, message: bytes) -> Reply | None:
        """The reply refusing a From: the user does not own, or one we must not forward."""
        senders = self.factory.senders
        try:
            if self.user is not None:
                senders.message(self.user, transaction.sender, message)
            elif any(r.remote for r in transaction.recipients):
                senders.forwarded(message)
        except SMTPReplyError as e:
            self._rejected("DATA", e.reply, sender=transaction.sender, user=self.user or "")
            return e.reply
        return None

    def _received_header(self, transaction: Transaction, transaction_id: str) -> bytes:
        recipients = transaction.recipients
        protocol = protocol_name(
            esmtp=self.esmtp,
            tls=self.secure,
            authenticated=self.user is not None,
            smtputf8=transaction.smtputf8,
        )
        return received_header(
            helo=self.helo or "unknown",
            peer_ip=self._peer_ip(),
            hostname=self.ctx.config.hostname,
            protocol=protocol,
            transaction_id=transaction_id,
            recipient=recipients[0].address if len(recipients) == 1 else None,
            when=self.clock.seconds(),
        )

    def _accepted(self, _: None, transaction_id: str) -> None:
        self.send(replies.QUEUED.with_text(f"Ok: queued as {transaction_id}").wire)

    def _not_accepted(self, failure: Failure) -> None:
        reply = replies.reply_for_error(failure.value)
        log.failure(
            "could not store a message from {peer}; answered {code}",
            failure,
            peer=self.peer,
            code=reply.code,
        )
        self.send(reply.wire)

    # -- helpers -----------------------------------------------------------------

    def _peer_ip(self) -> str:
        return str(getattr(self.transport.getPeer(), "host", "unknown"))


class SMTPFactory(Factory):
    """Builds sessions of one kind ("smtp", "submission" or "submissions")."""

    def __init__(
        self,
        ctx: ServiceContext,
        kind: str,
        users: UserDirectory | None = None,
        aliases: AliasDirectory | None = None,
    ) -> None:
        if kind not in MODES:
            raise ValueError(f"unknown SMTP listener kind {kind!r}; use one of {sorted(MODES)}")
        users = users or getattr(ctx.checker, "db", None)
        if users is None:
            raise ValueError("SMTPFactory needs users=, or a checker with a .db user list")
        aliases = aliases or ctx.aliases or open_aliases(ctx.config)

        self.ctx = ctx
        self.kind = kind
        self.mode = MODES[kind]
        self.policy = RecipientPolicy(ctx.config, users, aliases)
        self.senders = SenderPolicy(aliases, ctx.config.domains)
        self.intake = Intake(ctx.store, ctx.spool, ctx.maillog)

    def buildProtocol(self, addr: Any) -> SMTPSession:
        return SMTPSession(self)
