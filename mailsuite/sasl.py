"""SASL PLAIN and LOGIN, shared by SMTP AUTH, POP3 AUTH and IMAP AUTHENTICATE.

Only the decoding lives here; each protocol frames the challenges its own way
(``334`` in SMTP, ``+`` in POP3 and IMAP) and maps failures to its replies.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

#: Mechanisms we offer, in the order clients should prefer them.
MECHANISMS = ("PLAIN", "LOGIN")


class SASLError(Exception):
    """The client's SASL data is malformed (RFC 4954 501, RFC 3501 BAD)."""


class SASLIdentityRefused(SASLError):
    """Well-formed, but asks to act as another user (RFC 4616 authzid)."""


class SASLCancelled(Exception):
    """The client answered a challenge with ``*`` (RFC 4954 section 4)."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def decode_base64(data: bytes) -> bytes:
    """Decode a client response; ``*`` cancels, ``=`` is an empty response."""
    data = data.strip()
    if data == b"*":
        raise SASLCancelled()
    if data == b"=":
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SASLError("invalid base64") from None


def parse_plain(response: bytes) -> Credentials:
    """RFC 4616: ``[authzid] NUL authcid NUL passwd``; authzid must be empty or the user."""
    parts = response.split(b"\x00")
    if len(parts) != 3:
        raise SASLError("PLAIN response needs exactly two NUL separators")
    authzid, authcid, password = (_text(p) for p in parts)
    if not authcid:
        raise SASLError("empty user name")
    if authzid and authzid.lower() != authcid.lower():
        # We do not let one user act for another (RFC 4616 section 2).
        raise SASLIdentityRefused("authorization identity differs from user")
    return Credentials(authcid, password)


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError("not UTF-8") from None


def login_text(raw: bytes) -> str:
    """A LOGIN user name or password, already base64-decoded."""
    return _text(raw)


#: The LOGIN mechanism's challenges ("Username:", "Password:") base64-encoded.
LOGIN_USERNAME_CHALLENGE = base64.b64encode(b"Username:")
LOGIN_PASSWORD_CHALLENGE = base64.b64encode(b"Password:")
