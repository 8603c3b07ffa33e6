"""Turning message octets into text: RFC 2047 words, transfer encodings, charsets.

SEARCH compares text, not octets (RFC 3501 section 6.4.4), so headers and
bodies are decoded before matching. Decoding never fails: unknown charsets
and bad octets fall back to UTF-8 with replacement characters, which is
what Dovecot searches as well.
"""

import base64
import binascii
import codecs
import quopri
import re

_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_SPACE_BETWEEN_WORDS = re.compile(rb"[ \t\r\n]*")
_FOLDING = re.compile(rb"\r?\n[ \t]")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_KNOWN_ENCODINGS = (b"7bit", b"8bit", b"binary", b"base64", b"quoted-printable")

# Python codecs that a charset label could name but that are not charsets.
_NOT_CHARSETS = frozenset(
    ("unicode-escape", "raw-unicode-escape", "punycode", "idna", "undefined", "mbcs", "oem")
)


def text_codec(charset: bytes | str | None) -> str:
    """Return a Python codec name for a MIME charset, UTF-8 when unknown."""
    if isinstance(charset, bytes):
        charset = charset.decode("ascii", "replace")

    if not charset:
        return "utf-8"

    # RFC 2231 allows a language after '*'; it is not part of the charset.
    charset = charset.split("*", 1)[0].strip().lower()
    try:
        name = codecs.lookup(charset).name
    except (LookupError, ValueError):
        return "utf-8"

    if name in _NOT_CHARSETS:
        return "utf-8"

    # 8-bit text labelled us-ascii is nearly always UTF-8, and text labelled
    # latin-1 nearly always windows-1252 (its superset).
    if name == "ascii":
        return "utf-8"
    if name in ("latin-1", "iso8859-1"):
        return "cp1252"
    return name


def decode_bytes(data: bytes, charset: bytes | str | None = None) -> str:
    """Decode ``data`` in ``charset`` (UTF-8 if unknown), replacing what does not fit."""
    try:
        return data.decode(text_codec(charset), "replace")
    except (LookupError, UnicodeError, ValueError):
        # A Python codec that is no charset (base64, rot13...) was named.
        return data.decode("utf-8", "replace")


def _decode_word(charset: bytes, encoding: bytes, payload: bytes) -> str | None:
    """Decode one RFC 2047 encoded word's payload, or None if it is malformed."""
    try:
        if encoding in (b"b", b"B"):
            raw = base64.b64decode(payload + b"=" * (-len(payload) % 4))
        else:
            raw = quopri.decodestring(payload, header=True)
    except (binascii.Error, ValueError):
        return None

    return decode_bytes(raw, charset)


def unfold(value: bytes) -> bytes:
    """Join a folded header value into one line, each fold becoming one space.

    This is how Dovecot presents header values to SEARCH.
    """
    return _FOLDING.sub(b" ", value)


def decode_header(value: bytes) -> str:
    """Unfold a header value and decode its RFC 2047 encoded words.

    Whitespace between two adjacent encoded words is dropped (RFC 2047
    section 6.2); octets outside encoded words are read as UTF-8.
    """
    value = unfold(value)
    out: list[str] = []
    pos = 0
    after_word = False
    for word in _ENCODED_WORD.finditer(value):
        decoded = _decode_word(word.group(1), word.group(2), word.group(3))
        if decoded is None:
            continue

        between = value[pos : word.start()]
        if not (after_word and _SPACE_BETWEEN_WORDS.fullmatch(between)):
            out.append(decode_bytes(between))
        out.append(decoded)
        pos = word.end()
        after_word = True

    out.append(decode_bytes(value[pos:]))
    return "".join(out)


def is_known_transfer_encoding(encoding: bytes | None) -> bool:
    """Say whether :func:`decode_transfer` understands ``encoding`` (RFC 2045 6.1)."""
    return (encoding or b"7bit").lower() in _KNOWN_ENCODINGS


def decode_transfer(body: bytes, encoding: bytes | None) -> bytes:
    """Undo a Content-Transfer-Encoding; other encodings are returned as they are.

    Like Dovecot, only base64 and quoted-printable are decoded: x-uuencode
    and made-up names are searched as written.
    """
    encoding = (encoding or b"").lower()
    if encoding == b"base64":
        cleaned = _NOT_BASE64.sub(b"", body)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4]
        return base64.b64decode(cleaned)

    if encoding == b"quoted-printable":
        return quopri.decodestring(body)

    return body
