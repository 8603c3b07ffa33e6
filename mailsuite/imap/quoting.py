"""IMAP string syntax (RFC 3501 section 4.3): NIL, quoted strings and literals.

The choice between a quoted string and a literal follows Dovecot, so that our
ENVELOPE and BODYSTRUCTURE are byte-for-byte what a mature server sends:
a literal whenever the value holds CR, LF or 8-bit octets, or more than four
characters that would need a backslash in quotes.
"""

import re
from collections.abc import Iterable

# Dovecot switches to a literal after this many quoted-specials: from there on
# a literal is no longer than the escaped quoted string.
_MAX_QUOTED_ESCAPES = 4

_NOT_PLAIN = re.compile(rb'[\r\n\0"\\\x80-\xff]')
_NEEDS_LITERAL = re.compile(rb"[\r\n\x80-\xff]")
_QUOTED_SPECIAL = re.compile(rb'(["\\])')
_BREAK_BEFORE_TEXT = re.compile(rb"[\r\n](?=[^ \t\r\n])")
_HUMAN_SPACE = re.compile(rb"[ \t\r\n]+")
_HUMAN_NEEDS_LITERAL = re.compile(rb'["\\\0\x80-\xff]')

ImapValue = bytes | None | Iterable["ImapValue"]


def imap_literal(value: bytes) -> bytes:
    """Return ``value`` as a synchronising literal, ``{n}`` CRLF then the octets."""
    return b"{%d}\r\n" % len(value) + value


def imap_nstring(value: bytes | None) -> bytes:
    """Return ``value`` as an IMAP nstring, choosing quoted or literal as Dovecot does.

    NUL, which no IMAP string may carry (RFC 3501 section 9, CHAR8), is sent
    as 0x80, Dovecot's substitute.
    """
    if value is None:
        return b"NIL"

    if not _NOT_PLAIN.search(value):
        return b'"' + value + b'"'

    value = value.replace(b"\0", b"\x80")
    escapes = value.count(b'"') + value.count(b"\\")
    if escapes > _MAX_QUOTED_ESCAPES or _NEEDS_LITERAL.search(value):
        return imap_literal(value)

    return b'"' + _QUOTED_SPECIAL.sub(rb"\\\1", value) + b'"'


def imap_string(value: bytes | str | None) -> bytes:
    """Return ``value`` as a quoted string or a literal, or ``NIL`` for ``None``.

    A ``str`` is sent as UTF-8. A literal is used when the value holds CR, LF,
    NUL or 8-bit octets, or when quoting would need more than four escapes.
    """
    if isinstance(value, str):
        value = value.encode("utf-8")

    return imap_nstring(value)


def imap_nstring_nolf(value: bytes | None) -> bytes:
    """Return ``value`` as an nstring with its line breaks taken out.

    A line break before whitespace is dropped (unfolding); one before text
    becomes a space so that words do not run together. Dovecot writes
    Content-ID, -Description, -MD5, -Location and the envelope's Date,
    In-Reply-To and Message-ID this way.
    """
    if value is None or (b"\r" not in value and b"\n" not in value):
        return imap_nstring(value)

    spaced = _BREAK_BEFORE_TEXT.sub(b" ", value)
    return imap_nstring(spaced.replace(b"\r", b"").replace(b"\n", b""))


def imap_string_for_humans(value: bytes) -> bytes:
    """Return a display text (subject, address name) tidied the way Dovecot tidies it.

    Runs of whitespace and line breaks become one space, leading and trailing
    whitespace goes, NUL becomes 0x80. Text that needed tidying, or holds
    quotes, backslashes or 8-bit octets, is sent as a literal.
    """
    tidy = _HUMAN_SPACE.sub(b" ", value).strip(b" ").replace(b"\0", b"\x80")
    if tidy == value and not _HUMAN_NEEDS_LITERAL.search(value):
        return b'"' + value + b'"'

    if not tidy:
        return b'""'

    return imap_literal(tidy)


def imap_list(items: Iterable[ImapValue]) -> bytes:
    """Return a parenthesised IMAP list of already-encoded items.

    Each item is bytes written as given (an atom, number, or the output of
    :func:`imap_string`), ``None`` for ``NIL``, or a nested iterable for a
    nested list.
    """
    out = []
    for item in items:
        if item is None:
            out.append(b"NIL")
        elif isinstance(item, bytes):
            out.append(item)
        else:
            out.append(imap_list(item))

    return b"(" + b" ".join(out) + b")"
