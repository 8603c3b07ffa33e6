"""Every fixed POP3 reply, named, with the RFC section it answers.

Bracketed response codes are RFC 2449 section 8 and RFC 3206: ``[AUTH]``
(the credentials, or the lack of TLS, are the problem), ``[SYS/TEMP]`` (our
fault, try again later), ``[SYS/PERM]`` (our fault, retrying will not help).
``[IN-USE]`` and ``[LOGIN-DELAY]`` are never sent: maildrops are not locked
and logins are not rate-limited by time.
"""

from __future__ import annotations

# -- positive replies ------------------------------------------------------

#: RFC 1939 section 4. No APOP timestamp: APOP (MD5 of a shared secret) is not offered.
GREETING = b"+OK mailsuite POP3 server ready\r\n"

OK = b"+OK\r\n"

#: RFC 2449 section 5.
CAPA_FOLLOWS = b"+OK capability list follows\r\n"

#: RFC 1939 section 7, USER: the name is not checked here, so that replies
#: do not tell which users exist.
USER_ACCEPTED = b"+OK send PASS\r\n"

#: RFC 2595 section 4.
STLS_GO_AHEAD = b"+OK begin TLS negotiation\r\n"

#: RFC 5034 section 4: an empty server challenge for PLAIN.
SASL_CONTINUE = b"+ \r\n"

#: RFC 5034 section 4 AUTH without a mechanism lists them (an older
#: extension that some clients still send).
SASL_MECHANISMS = b"+OK\r\nPLAIN\r\n.\r\n"

TOP_FOLLOWS = b"+OK top of message follows\r\n"

#: RFC 1939 section 4, QUIT in the AUTHORIZATION state.
BYE = b"+OK bye\r\n"

# -- client errors ---------------------------------------------------------

UNKNOWN_COMMAND = b"-ERR unknown command\r\n"
WRONG_STATE = b"-ERR command not valid in this state\r\n"
SYNTAX_ERROR = b"-ERR syntax error in arguments\r\n"
INVALID_NUMBER = b"-ERR invalid message number\r\n"
NO_SUCH_MESSAGE = b"-ERR no such message\r\n"
MESSAGE_DELETED = b"-ERR message is deleted\r\n"

#: RFC 2449 section 4: a command line is at most 255 octets; we accept 512.
LINE_TOO_LONG = b"-ERR line too long\r\n"

TOO_MANY_BAD_COMMANDS = b"-ERR too many bad commands, closing connection\r\n"

#: RFC 1939 section 3: the autologout timer closes without the UPDATE state.
AUTOLOGOUT = b"-ERR autologout: idle for too long, nothing deleted\r\n"

# -- authentication --------------------------------------------------------

#: No password crosses the network in the clear (RFC 2595 section 2.1);
#: Dovecot uses the same code for the same refusal.
TLS_REQUIRED = b"-ERR [AUTH] plaintext login not allowed: use STLS first\r\n"

#: RFC 3206 section 4: the credentials were refused.
AUTH_FAILED = b"-ERR [AUTH] invalid user name or password\r\n"

#: The password file could not be consulted; it is our fault.
AUTH_UNAVAILABLE = b"-ERR [SYS/TEMP] authentication temporarily unavailable\r\n"

USER_FIRST = b"-ERR send USER first\r\n"
UNKNOWN_MECHANISM = b"-ERR unsupported authentication mechanism\r\n"

#: RFC 5034 section 4: the client answered a challenge with "*".
AUTH_CANCELLED = b"-ERR authentication cancelled\r\n"
AUTH_MALFORMED = b"-ERR malformed authentication data\r\n"

ALREADY_TLS = b"-ERR TLS is already active\r\n"
TLS_UNAVAILABLE = b"-ERR TLS is not available\r\n"

# -- our side --------------------------------------------------------------

#: Another session or program removed the message after this one's login.
MESSAGE_GONE = b"-ERR [SYS/TEMP] message was removed by another session\r\n"
STORE_TEMPORARY = b"-ERR [SYS/TEMP] mail store temporarily unavailable\r\n"
STORE_PERMANENT = b"-ERR [SYS/PERM] mailbox unavailable\r\n"
INTERNAL_ERROR = b"-ERR [SYS/TEMP] internal error, please try again\r\n"

#: RFC 1939 section 6: removal failed; nothing after the failure was removed.
UPDATE_FAILED = b"-ERR [SYS/TEMP] some deleted messages not removed\r\n"


class POP3Error(Exception):
    """A command fails with ``reply``; ``bad`` counts it against the client."""

    def __init__(self, reply: bytes, bad: bool = False) -> None:
        super().__init__(reply.decode("ascii").strip())
        self.reply = reply
        self.bad = bad
