"""Every SMTP reply the receiver sends, by name, and the one error mapping.

Each reply carries its RFC 5321 code, its RFC 3463 enhanced status code (we
advertise ENHANCEDSTATUSCODES, RFC 2034) and the section that asks for it.
``reply_for_error`` is the single place where store, queue and unexpected
errors become SMTP replies: anything that is not the client's fault is
answered with a temporary 4xx, never a permanent 5xx.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailsuite.store.errors import OverQuota, StoreError


@dataclass(frozen=True)
class Reply:
    """One SMTP reply. ``counts`` marks replies that count as a bad command."""

    code: int
    status: str
    text: str
    counts: bool = False
    wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "wire", _format(self.code, self.status, self.text))

    def with_text(self, text: str) -> Reply:
        """The same code and status with other words (a queue id, a name)."""
        return Reply(self.code, self.status, text, self.counts)

    @property
    def permanent(self) -> bool:
        return self.code >= 500


def _format(code: int, status: str, text: str) -> bytes:
    prefix = f"{code} {status} " if status else f"{code} "
    return (prefix + text + "\r\n").encode("utf-8")


def multiline(code: int, lines: list[str]) -> bytes:
    """A multi-line reply (RFC 5321 4.2.1) in one buffer, sent in one write."""
    body = [f"{code}-{line}\r\n" for line in lines[:-1]]
    body.append(f"{code} {lines[-1]}\r\n")
    return "".join(body).encode("utf-8")


class SMTPReplyError(Exception):
    """Raised by parsing and policy code; the session sends ``reply``."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


# -- positive ----------------------------------------------------------------

# The greeting and the HELO/EHLO replies carry no enhanced code (RFC 2034 3);
# the session writes them itself.
OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Sender ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient ok")
#: The text is replaced by "Ok: queued as <id>".
QUEUED = Reply(250, "2.0.0", "Ok: queued")
#: RFC 5321 3.5.3: VRFY may be answered 252 when we will not disclose users.
CANNOT_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept mail and attempt delivery")
HELP = Reply(214, "2.0.0", "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT")
BYE = Reply(221, "2.0.0", "Bye")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
#: RFC 3207 4.
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")
#: RFC 4954 6.
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")

# -- the session ends ----------------------------------------------------------

#: RFC 5321 4.5.3.2 (timeouts) with RFC 3463 4.4.2 (bad connection).
TIMEOUT = Reply(421, "4.4.2", "Timeout; closing the connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors; closing the connection")
TOO_MANY_AUTH_FAILURES = Reply(421, "4.7.0", "Too many authentication failures; closing")

# -- temporary, our side -------------------------------------------------------

#: Anything unexpected, a disk or queue failure: retry later (never a 5xx).
LOCAL_ERROR = Reply(451, "4.3.0", "Temporary local problem; try again later")
#: RFC 5321 4.5.3.1.10: more than we accept per message; the client retries the rest.
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
#: OverQuota: temporary, so a shared multi-recipient message is not bounced.
MAILBOX_FULL = Reply(452, "4.2.2", "Mailbox full; try again later")
#: RFC 3207 4.
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
#: RFC 4954 6: the checker failed for a reason that is not a wrong password.
AUTH_TEMPORARY = Reply(454, "4.7.0", "Temporary authentication failure")

# -- the client's command ------------------------------------------------------

#: RFC 5321 4.2.4.
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Command not recognized", counts=True)
#: RFC 5321 4.5.3.1.4 limits a command line to 512 octets; we accept up to
#: ``COMMAND_LINE_LIMIT`` for SMTPUTF8 addresses and parameters.
LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long", counts=True)
SYNTAX_ERROR = Reply(501, "5.5.4", "Syntax error in parameters or arguments", counts=True)
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented", counts=True)
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands", counts=True)
#: RFC 2920 3.1: DATA after every RCPT was refused.
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients", counts=True)
#: RFC 5321 4.1.1.11 / RFC 1870 / RFC 6152: a MAIL or RCPT parameter we do not offer.
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Parameter not recognized or not implemented", counts=True)

# -- the envelope --------------------------------------------------------------

#: RFC 5321 3.3 with RFC 3463 5.1.1: the local user does not exist.
NO_SUCH_USER = Reply(550, "5.1.1", "No such user here", counts=True)
#: No open relay: a remote recipient without authentication.
RELAY_DENIED = Reply(550, "5.7.1", "Relay access denied", counts=True)
#: RFC 6531 3.5: a non-ASCII address without the SMTPUTF8 parameter.
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8", counts=True)
#: RFC 1870 6.1: declared (SIZE=) or actual size over the limit.
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")

# -- who may send as whom, on submission (RFC 6409 6.1; RFC 3463 5.7.1) --------

#: MAIL FROM an address the authenticated user does not own, or <>.
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by you", counts=True)
#: End of DATA. RFC 5321 4.3.2 does not list 553 after DATA, but clients
#: act on the first digit (4.2.1); 553 says the same thing as at MAIL.
FROM_NOT_OWNED = Reply(553, "5.7.1", "From: header names an address not owned by you")
#: A From: field that is no plain address list: refused, not taken as no From:.
FROM_UNREADABLE = Reply(553, "5.7.1", "From: header is not a list of addresses")
#: The From: check reads ``headers.HEADER_LIMIT`` octets of header, no more.
HEADER_TOO_LONG = Reply(552, "5.3.4", "Header section too big")
#: MX mail an alias would forward with a From: in our domains (or unreadable):
#: the relayer would DKIM-sign it as ours (see ``policy``).
FORWARD_REFUSED = Reply(550, "5.7.1", "Not forwarded: From: claims one of our domains")

# -- authentication (RFC 4954 6) -----------------------------------------------

AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_CANCELLED = Reply(501, "5.7.0", "Authentication cancelled", counts=True)
AUTH_BAD_RESPONSE = Reply(501, "5.5.2", "Cannot decode the response", counts=True)
AUTH_UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type", counts=True)
AUTH_NOT_OFFERED = Reply(502, "5.5.1", "AUTH is not offered on this port", counts=True)
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated", counts=True)
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "TLS already active", counts=True)


def reply_for_error(error: BaseException | None) -> Reply:
    """The one mapping from an exception to the reply the client gets.

    Errors the client caused arrive as ``SMTPReplyError``. The store's and
    queue's errors are ours: a temporary reply, so the client keeps the
    message and retries. Anything else is a bug, answered the same way; the
    caller logs it.
    """
    if isinstance(error, SMTPReplyError):
        return error.reply
    if isinstance(error, OverQuota):
        return MAILBOX_FULL
    if isinstance(error, StoreError):
        return LOCAL_ERROR
    return LOCAL_ERROR
