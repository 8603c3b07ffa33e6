"""Parsing SMTP command arguments: HELO names, paths and MAIL/RCPT parameters.

The grammar is RFC 5321 4.1.2, widened by RFC 6531 3.3 so that UTF-8 may
appear in local parts and domains; whether the transaction allows UTF-8 is
the session's check (``Address.ascii``), because the SMTPUTF8 parameter
comes after the path it governs. Errors are raised as ``SMTPReplyError``.

Leniencies real clients need, each one harmless: a space after ``FROM:`` or
``TO:``, a path without angle brackets, trailing spaces, source routes
(accepted and ignored, RFC 5321 4.1.2 and appendix C), and no limit on the
local part's length (RFC 5321 4.5.3.1.1 says 64, but SRS and VERP addresses
are longer and every MTA takes them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailsuite.smtp import replies
from mailsuite.smtp.replies import SMTPReplyError

_UTF8 = "\u0080-\U0010ffff"
_ATEXT = f"A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\\-{_UTF8}"
_DOT_STRING = f"[{_ATEXT}]+(?:\\.[{_ATEXT}]+)*"
_QUOTED = f'"(?:[\\x20\\x21\\x23-\\x5b\\x5d-\\x7e{_UTF8}]|\\\\[\\x20-\\x7e])*"'
_LABEL = f"[A-Za-z0-9{_UTF8}](?:[A-Za-z0-9\\-{_UTF8}]*[A-Za-z0-9{_UTF8}])?"
_DOMAIN = f"{_LABEL}(?:\\.{_LABEL})*"
#: RFC 5321 4.1.3 address literal: "[" 1*dcontent "]", dcontent %d33-90 / %d94-126.
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"
_MAILBOX = f"(?P<local>{_DOT_STRING}|{_QUOTED})@(?P<domain>{_DOMAIN}|{_LITERAL})"
_ROUTE = f"@{_DOMAIN}(?:,@{_DOMAIN})*:"

_BRACKETED = re.compile(f"<(?:{_ROUTE})?{_MAILBOX}>")
_BARE = re.compile(f"(?:{_ROUTE})?{_MAILBOX}(?= |$)")
_POSTMASTER = re.compile(r"<postmaster>", re.IGNORECASE)

_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_VALUE = re.compile(f"[\\x21-\\x3c\\x3e-\\x7e{_UTF8}]+")
_HELO = re.compile(r"[\x21-\x7e]{1,255}")
_VERB = re.compile(rb"[A-Za-z]{1,12}")
_SIZE = re.compile(r"\d{1,20}")
#: A bare CR inside a line, NUL, or any other control character.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: RFC 6152: the BODY values we take. BINARYMIME needs CHUNKING, not offered.
BODY_TYPES = frozenset({"7BIT", "8BITMIME"})


@dataclass(frozen=True)
class Address:
    """A path from MAIL or RCPT: ``text`` as given ("" for ``<>``)."""

    text: str
    local: str = ""
    domain: str = ""

    @property
    def ascii(self) -> bool:
        return self.text.isascii()

    @property
    def null(self) -> bool:
        return not self.text


NULL_PATH = Address("")


@dataclass(frozen=True)
class MailCommand:
    """What MAIL FROM said."""

    sender: Address
    size: int | None = None
    body: str | None = None
    smtputf8: bool = False


def split_command(line: bytes) -> tuple[str, str]:
    """``(VERB, argument)``: the verb upper-cased, the argument as UTF-8 text."""
    verb, _, argument = line.partition(b" ")
    if not _VERB.fullmatch(verb):
        raise SMTPReplyError(replies.UNKNOWN_COMMAND)
    try:
        text = argument.decode("utf-8")
    except UnicodeDecodeError:
        raise SMTPReplyError(replies.SYNTAX_ERROR)
    if _CONTROL.search(text):
        raise SMTPReplyError(replies.SYNTAX_ERROR)
    return verb.decode("ascii").upper(), text.strip(" ")


def parse_helo(argument: str) -> str:
    """The client's name from HELO or EHLO: one printable ASCII word."""
    if not _HELO.fullmatch(argument):
        raise SMTPReplyError(replies.SYNTAX_ERROR.with_text("Syntax: EHLO hostname"))
    return argument


def parse_mail(argument: str, extensions: bool, auth_offered: bool) -> MailCommand:
    """``MAIL FROM:<path> [params]`` (RFC 5321 4.1.1.2, RFC 1870, 6152, 6531, 4954)."""
    rest = _after_prefix(argument, "FROM:", "Syntax: MAIL FROM:<address>")
    if rest.startswith("<>"):
        sender, params = NULL_PATH, rest[2:]
    else:
        sender, params = _path(rest, "Syntax: MAIL FROM:<address>")

    values = _parameters(params, extensions)
    size = body = None
    smtputf8 = False
    for keyword, value in values.items():
        if keyword == "SIZE" and value is not None and _SIZE.fullmatch(value):
            size = int(value)
        elif keyword == "BODY" and value is not None and value.upper() in BODY_TYPES:
            body = value.upper()
        elif keyword == "SMTPUTF8" and value is None:
            smtputf8 = True
        elif keyword == "AUTH" and auth_offered and value is not None:
            # RFC 4954 5: the submitter's identity for trusted relays; we
            # trust none, and it may be ignored.
            continue
        elif keyword in ("SIZE", "BODY", "SMTPUTF8"):
            raise SMTPReplyError(replies.SYNTAX_ERROR.with_text(f"Bad value for {keyword}"))
        else:
            raise SMTPReplyError(replies.UNKNOWN_PARAMETER)
    return MailCommand(sender, size, body, smtputf8)


def parse_rcpt(argument: str, extensions: bool) -> Address:
    """``RCPT TO:<path>``; ``<postmaster>`` alone is allowed (RFC 5321 4.1.1.3)."""
    rest = _after_prefix(argument, "TO:", "Syntax: RCPT TO:<address>")
    match = _POSTMASTER.match(rest)
    if match:
        address, params = Address("postmaster", "postmaster", ""), rest[match.end() :]
    else:
        address, params = _path(rest, "Syntax: RCPT TO:<address>")
    if _parameters(params, extensions):
        # We offer no RCPT parameters (no DSN): NOTIFY, ORCPT and the rest.
        raise SMTPReplyError(replies.UNKNOWN_PARAMETER)
    return address


def _after_prefix(argument: str, prefix: str, usage: str) -> str:
    if argument[: len(prefix)].upper() != prefix:
        raise SMTPReplyError(replies.SYNTAX_ERROR.with_text(usage))
    return argument[len(prefix) :].lstrip(" ")


def _path(text: str, usage: str) -> tuple[Address, str]:
    """The mailbox at the start of ``text`` and what follows it."""
    match = _BRACKETED.match(text) or _BARE.match(text)
    if match is None:
        raise SMTPReplyError(replies.SYNTAX_ERROR.with_text(usage))
    local, domain = match.group("local"), match.group("domain")
    return Address(f"{local}@{domain}", local, domain), text[match.end() :]


def _parameters(text: str, extensions: bool) -> dict[str, str | None]:
    """``KEYWORD[=value]`` items after the path; none are allowed after HELO."""
    if text and not text.startswith(" "):
        raise SMTPReplyError(replies.SYNTAX_ERROR)
    items = text.split()
    if items and not extensions:
        raise SMTPReplyError(replies.UNKNOWN_PARAMETER)

    found: dict[str, str | None] = {}
    for item in items:
        keyword, equals, value = item.partition("=")
        if not _KEYWORD.fullmatch(keyword) or (equals and not _VALUE.fullmatch(value)):
            raise SMTPReplyError(replies.SYNTAX_ERROR)
        keyword = keyword.upper()
        if keyword in found:
            raise SMTPReplyError(replies.SYNTAX_ERROR.with_text(f"Duplicate {keyword}"))
        found[keyword] = value if equals else None
    return found


def unquote_local(local: str) -> str:
    """The local part without RFC 5321 quoting, for looking up users."""
    if not (local.startswith('"') and local.endswith('"')):
        return local
    return re.sub(r"\\(.)", r"\1", local[1:-1])
