"""The text SEARCH keys (RFC 3501 section 6.4.4) that look inside a message.

FROM, TO, CC, BCC, SUBJECT, HEADER, BODY and TEXT are all case-insensitive
substring matches on decoded text. What text each key sees follows Dovecot:

- SUBJECT and HEADER see every value of that top-level header, unfolded and
  RFC 2047 decoded (SUBJECT with runs of whitespace squeezed); HEADER with
  an empty string only asks whether the header is there;
- FROM, TO, CC and BCC see the addresses re-written in a normal form
  (``"Name" <user@domain>``), so quoting and comments do not get in the way;
- BODY sees the decoded bodies of every text/* and message/* part (a part
  without Content-Type is text), not the preamble or epilogue of a multipart;
- TEXT sees that and the headers of every part as ``Name: value`` lines.

A match never spans two parts. Size, date and flag keys are the server's.
"""

import re
import unicodedata
from collections.abc import Iterator

from mailsuite.imap.address import parse_addresses, write_addresses
from mailsuite.imap.decode import decode_bytes, decode_header, decode_transfer
from mailsuite.imap.mime import HeaderField, Part
from mailsuite.imap.rfc822 import Rfc822Parser, parse_parameters

ADDRESS_KEYS = ("FROM", "TO", "CC", "BCC")
TEXT_KEYS = (*ADDRESS_KEYS, "SUBJECT", "HEADER", "BODY", "TEXT")

_WHITESPACE = re.compile(r"\s+")


def fold(text: str) -> str:
    """Return ``text`` in the form SEARCH compares: compatibility-normalised, case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


def _parts(root: Part) -> Iterator[Part]:
    stack = [root]
    while stack:
        part = stack.pop()
        yield part
        stack.extend(reversed(part.children))


def _last_header(part: Part, name: bytes) -> HeaderField | None:
    found = None
    for field in part.headers:
        if field.name.lower() == name:
            found = field
    return found


def _searchable_body(data: bytes, part: Part, end: int | None = None) -> str | None:
    """Return the decoded body of a leaf part that SEARCH reads, else None.

    ``end`` overrides where the body ends (for a header-only parse).
    """
    if part.multipart or part.rfc822:
        return None

    charset = None
    content_type = _last_header(part, b"content-type")
    if content_type is not None:
        parser = Rfc822Parser(content_type.value)
        parser.skip_lwsp()
        type_and_subtype = bytearray()
        ret = parser.parse_content_type(type_and_subtype)
        kind = bytes(type_and_subtype).lower()
        if not kind.startswith((b"text/", b"message/")):
            return None
        if ret >= 0:
            charset = dict((k.lower(), v) for k, v in parse_parameters(parser)).get(b"charset")

    encoding = _last_header(part, b"content-transfer-encoding")
    body = data[part.body_start : part.end if end is None else end]
    decoded = decode_transfer(body, encoding.value.strip() if encoding else None)
    return decode_bytes(decoded, charset)


def body_segments(data: bytes, root: Part, with_headers: bool) -> list[str]:
    """Return the searchable text of each part, headers included if asked."""
    return [_segment(data, part, with_headers) for part in _parts(root)]


def single_part_segments(data: bytes, head: Part, with_headers: bool) -> list[str] | None:
    """``body_segments`` of a message that is one leaf part, from a header-only parse.

    Most mail is a single text part: BODY and TEXT then need no MIME walk
    of the body (line counts, boundary scans). None when the top level is
    multipart or message/rfc822, whose parts need the full parse.
    """
    if head.multipart or head.rfc822:
        return None
    return [_segment(data, head, with_headers, len(data))]


def _segment(data: bytes, part: Part, with_headers: bool, end: int | None = None) -> str:
    pieces = []
    if with_headers:
        for field in part.headers:
            name = decode_bytes(field.name)
            pieces.append(f"{name}: {decode_header(field.value)}\r\n")

    body = _searchable_body(data, part, end)
    if body is not None:
        pieces.append(body)
    return "".join(pieces)


def header_values(root: Part, name: str) -> list[str]:
    """Return every value of the top-level header ``name``, unfolded and decoded."""
    wanted = name.lower().encode("ascii", "replace")
    return [decode_header(f.value) for f in root.headers if f.name.lower() == wanted]


def address_texts(root: Part, name: str) -> list[str]:
    """Return the FROM/TO/CC/BCC key's texts: each ``name`` header in normal address form."""
    wanted = name.lower().encode("ascii")
    texts = []
    for field in root.headers:
        if field.name.lower() == wanted:
            written = write_addresses(parse_addresses(field.value, fill_missing=False))
            texts.append(decode_header(written))
    return texts


def matches_text(data: bytes, root: Part, key: str, value: str, header: str = "") -> bool:
    """Say whether the message matches a text SEARCH key.

    ``key`` is one of :data:`TEXT_KEYS`; for HEADER, ``header`` names the
    field. ``value`` is the search string, already decoded from the
    command's CHARSET.
    """
    key = key.upper()
    wanted = fold(value)
    if key in ADDRESS_KEYS:
        haystack = address_texts(root, key)
    elif key == "SUBJECT":
        haystack = [_WHITESPACE.sub(" ", text) for text in header_values(root, "subject")]
    elif key == "HEADER":
        haystack = header_values(root, header)
        if not wanted:
            return bool(haystack)
    elif key in ("BODY", "TEXT"):
        haystack = body_segments(data, root, with_headers=key == "TEXT")
    else:
        raise ValueError(f"not a text search key: {key}")

    return any(wanted in fold(text) for text in haystack)
