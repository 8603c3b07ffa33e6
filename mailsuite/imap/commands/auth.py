"""STARTTLS, LOGIN and AUTHENTICATE PLAIN (RFC 3501 6.2, RFC 4959 SASL-IR).

No password is accepted before TLS: without it LOGIN and AUTHENTICATE are
refused with ``NO [PRIVACYREQUIRED]`` (RFC 5530), and the capability list
says LOGINDISABLED (RFC 3501 6.2.3). The one exception is the operator's
``auth.plaintext_on_loopback``, for peers on 127.0.0.0/8 and ::1. The
checker slows failed logins down; it also writes the operator's
``auth_failed`` event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger

from mailsuite import sasl
from mailsuite.imap import responses
from mailsuite.imap.commands.base import PENDING, Command
from mailsuite.imap.responses import (
    AUTHENTICATIONFAILED,
    BAD,
    CAPABILITY,
    OK,
    PRIVACYREQUIRED,
    UNAVAILABLE,
    Reply,
    bad,
    no,
)
from mailsuite.users import SessionCredentials

if TYPE_CHECKING:
    from mailsuite.imap.server import IMAPSession

log = Logger()


def starttls(session: IMAPSession, command: Command) -> None:
    """RFC 3501 6.2.1; what was pipelined behind the command is discarded."""
    command.args.end()
    if session.secure:
        raise bad("TLS is already active")
    if session.ctx.tls is None:
        raise no("TLS is not available", UNAVAILABLE)
    session.finish(command, Reply(OK, "Begin TLS negotiation now"))
    session.start_tls(session.ctx.tls)
    return PENDING


def login(session: IMAPSession, command: Command) -> Any:
    reader = command.args
    reader.space()
    user = reader.astring()
    reader.space()
    password = reader.astring()
    reader.end()
    refuse_plaintext(session)
    return check_password(session, user, password)


def authenticate(session: IMAPSession, command: Command) -> Any:
    """RFC 3501 6.2.2 with an optional initial response (RFC 4959)."""
    reader = command.args
    reader.space()
    mechanism = reader.atom().upper()
    initial = None
    if reader.take(b" "):
        initial = reader.atom()
    reader.end()
    if mechanism != b"PLAIN":
        raise no("Unsupported authentication mechanism")
    refuse_plaintext(session)
    if initial is not None:
        return _plain(session, initial)
    session.write_now(responses.continuation())
    session.continuation = lambda line: _response(session, command, line)
    return PENDING


def _response(session: IMAPSession, command: Command, line: bytes) -> defer.Deferred[Any] | None:
    """The client's answer to our ``+``: a base64 PLAIN response, or ``*``."""
    session.continuation = None
    return session.run(command, lambda s, c: _plain(s, line))


def _plain(session: IMAPSession, response: bytes) -> Any:
    try:
        credentials = sasl.parse_plain(sasl.decode_base64(response))
    except sasl.SASLCancelled:
        # RFC 3501 6.2.2: a cancelled exchange is answered BAD.
        return Reply(BAD, "Authentication cancelled")
    except sasl.SASLError as e:
        raise bad(f"Invalid SASL response: {e}")
    return check_password(
        session, credentials.username.encode("utf-8"), credentials.password.encode("utf-8")
    )


def refuse_plaintext(session: IMAPSession) -> None:
    """Passwords only under TLS, or from loopback when ``auth.plaintext_on_loopback``."""
    if not session.confidential:
        raise no("Use STARTTLS before sending a password", PRIVACYREQUIRED)


async def check_password(session: IMAPSession, user: bytes, password: bytes) -> Reply:
    credentials = SessionCredentials(user, password, "imap", session.peer)
    try:
        address = await defer.maybeDeferred(session.ctx.checker.requestAvatarId, credentials)
    except UnauthorizedLogin:
        return Reply(responses.NO, "Authentication failed", AUTHENTICATIONFAILED)
    except Exception:
        log.failure("password check failed for {peer}", peer=session.peer)
        return Reply(responses.NO, "Cannot check passwords now, try later", UNAVAILABLE)

    account = session.ctx.store.account(address)
    account.ensure_default_folders()
    session.logged_in(address, account)
    log.info("IMAP login {user} from {peer}", user=address, peer=session.peer)
    caps = " ".join(session.capabilities())
    return Reply(OK, "Logged in", f"{CAPABILITY} {caps}")
