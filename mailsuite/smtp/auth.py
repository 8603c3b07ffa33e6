"""The SMTP side of AUTH PLAIN and LOGIN (RFC 4954): challenges, responses.

``mailsuite.sasl`` decodes; this steps through a mechanism's challenges. The
session frames each challenge as ``334 <base64>`` and maps ``SASLError`` and
``SASLCancelled`` to its replies. Credentials are never logged.
"""

from __future__ import annotations

from mailsuite import sasl
from mailsuite.sasl import Credentials

#: A challenge to send (base64, may be empty), or the credentials at the end.
Step = bytes | Credentials


class UnknownMechanism(Exception):
    """The client asked for a mechanism we do not offer."""


class Exchange:
    """One AUTH exchange; ``start`` then ``respond`` until credentials come out."""

    def start(self, initial: bytes | None) -> Step:
        raise NotImplementedError

    def respond(self, line: bytes) -> Step:
        raise NotImplementedError


class Plain(Exchange):
    """RFC 4616: one response, with or without the initial-response shortcut."""

    def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return b""
        return self.respond(initial)

    def respond(self, line: bytes) -> Step:
        return sasl.parse_plain(sasl.decode_base64(line))


class Login(Exchange):
    """The LOGIN mechanism: user name, then password, each asked for."""

    def __init__(self) -> None:
        self.username: str | None = None

    def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return sasl.LOGIN_USERNAME_CHALLENGE
        return self.respond(initial)

    def respond(self, line: bytes) -> Step:
        text = sasl.login_text(sasl.decode_base64(line))
        if self.username is None:
            if not text:
                raise sasl.SASLError("empty user name")
            self.username = text
            return sasl.LOGIN_PASSWORD_CHALLENGE
        return Credentials(self.username, text)


MECHANISMS: dict[str, type[Exchange]] = {"PLAIN": Plain, "LOGIN": Login}


def exchange_for(mechanism: str) -> Exchange:
    factory = MECHANISMS.get(mechanism.upper())
    if factory is None:
        raise UnknownMechanism(mechanism)
    return factory()
