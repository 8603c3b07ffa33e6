"""BODY and BODYSTRUCTURE (RFC 3501 sections 6.4.5 and 7.4.2) of a parsed MIME tree.

The Content-* headers are read as Dovecot reads them: the first occurrence
of each wins (a Content-Disposition without parameters may still be
replaced by a later one), type and subtype keep the case they were written
in, a broken Content-Type is reported as ``"" ""`` rather than guessed, and
a part without one is text/plain; charset=us-ascii. RFC 2231 parameters are
joined but not decoded.
"""

from dataclasses import dataclass, field

from mailsuite.imap.envelope import EMPTY_ENVELOPE, envelope
from mailsuite.imap.mime import Part
from mailsuite.imap.quoting import imap_nstring, imap_nstring_nolf
from mailsuite.imap.rfc822 import Rfc822Parser, parse_parameters

_DEFAULT_CHARSET = b'"charset" "us-ascii"'
_EMPTY_BODY = b'("text" "plain" (%s) NIL NIL "7bit" 0 0' % _DEFAULT_CHARSET
_EMPTY_EXTENSIONS = b" NIL NIL NIL NIL"


@dataclass
class ContentFields:
    """What a part's Content-* headers say, before any defaults are applied."""

    type: bytes | None = None
    subtype: bytes | None = None
    params: list[tuple[bytes, bytes]] = field(default_factory=list)
    transfer_encoding: bytes | None = None
    id: bytes | None = None
    description: bytes | None = None
    md5: bytes | None = None
    disposition: bytes | None = None
    disposition_params: list[tuple[bytes, bytes]] = field(default_factory=list)
    language: list[bytes] | None = None
    location: bytes | None = None


def content_fields(part: Part) -> ContentFields:
    """Read the part's Content-* headers; a part that is not MIME has none."""
    fields = ContentFields()
    if not part.is_mime:
        return fields

    for header in part.headers:
        name = header.name.lower()
        if name.startswith(b"content-"):
            _read_content_header(fields, name[8:], header.value)
    return fields


def _read_content_header(fields: ContentFields, name: bytes, value: bytes) -> None:
    if name == b"type" and fields.type is None:
        _read_type(fields, value)
    elif name == b"transfer-encoding" and fields.transfer_encoding is None:
        fields.transfer_encoding = _read_transfer_encoding(value)
    elif name == b"id" and fields.id is None:
        fields.id = value
    elif name == b"md5" and fields.md5 is None:
        fields.md5 = value
    elif name == b"description" and fields.description is None:
        fields.description = value
    elif name == b"location" and fields.location is None:
        fields.location = value
    elif name == b"language" and fields.language is None:
        fields.language = _read_language(value)
    elif name == b"disposition" and not fields.disposition_params:
        _read_disposition(fields, value)


def _read_type(fields: ContentFields, value: bytes) -> None:
    parser = Rfc822Parser(value)
    parser.skip_lwsp()
    type_and_subtype = bytearray()
    ret = parser.parse_content_type(type_and_subtype)
    main, _slash, sub = bytes(type_and_subtype).partition(b"/")
    fields.type, fields.subtype = main, sub
    if ret >= 0:
        fields.params = parse_parameters(parser)


def _read_transfer_encoding(value: bytes) -> bytes | None:
    """Return the encoding token, or None when anything else follows it."""
    parser = Rfc822Parser(value)
    parser.skip_lwsp()
    token = bytearray()
    if parser.parse_mime_token(token) < 0 or parser.skip_lwsp() != 0 or not token:
        return None

    return bytes(token)


def _read_language(value: bytes) -> list[bytes] | None:
    parser = Rfc822Parser(value)
    parser.skip_lwsp()
    languages = []
    while True:
        atom = bytearray()
        if parser.parse_atom(atom) < 0:
            break
        languages.append(bytes(atom))
        if parser.peek() != ord(","):
            break
        parser.pos += 1
        parser.skip_lwsp()

    return languages or None


def _read_disposition(fields: ContentFields, value: bytes) -> None:
    parser = Rfc822Parser(value)
    parser.skip_lwsp()
    token = bytearray()
    if parser.parse_mime_token(token) < 0:
        return

    fields.disposition = bytes(token)
    fields.disposition_params = parse_parameters(parser)


def _params(params: list[tuple[bytes, bytes]], default_charset: bool) -> bytes:
    """Return body-fld-param; a text part always gets a charset."""
    if not params and not default_charset:
        return b"NIL"

    items = [imap_nstring(name) + b" " + imap_nstring(value) for name, value in params]
    if default_charset and not any(name.lower() == b"charset" for name, _ in params):
        items.append(_DEFAULT_CHARSET)
    return b"(" + b" ".join(items) + b")"


def _extensions(fields: ContentFields) -> bytes:
    """Return body-fld-dsp, body-fld-lang and body-fld-loc."""
    if fields.disposition is None:
        disposition = b"NIL"
    else:
        params = _params(fields.disposition_params, default_charset=False)
        disposition = b"(%s %s)" % (imap_nstring(fields.disposition), params)

    if fields.language is None:
        language = b"NIL"
    else:
        language = b"(" + b" ".join(imap_nstring(tag) for tag in fields.language) + b")"

    return b" %s %s %s" % (disposition, language, imap_nstring_nolf(fields.location))


def _multipart(part: Part, fields: ContentFields, extensible: bool) -> bytes:
    if part.children:
        children = b"".join(bodystructure(child, extensible) for child in part.children)
    else:
        # A multipart without parts is not allowed; report one empty text part.
        children = _EMPTY_BODY + (_EMPTY_EXTENSIONS if extensible else b"") + b")"

    out = children + b" " + imap_nstring(fields.subtype or b"")
    if extensible:
        out += b" " + _params(fields.params, default_charset=False) + _extensions(fields)
    return b"(" + out + b")"


def _single(part: Part, fields: ContentFields, extensible: bool) -> bytes:
    if part.rfc822:
        text = False
        out = b'"message" "rfc822"'
    elif fields.type is None:
        text = True
        out = b'"text" "plain"'
    else:
        text = fields.type.lower() == b"text"
        out = imap_nstring(fields.type) + b" " + imap_nstring(fields.subtype or b"")

    out += b" %s %s %s %s %d" % (
        _params(fields.params, default_charset=text),
        imap_nstring_nolf(fields.id),
        imap_nstring_nolf(fields.description),
        imap_nstring(fields.transfer_encoding or b"7bit"),
        part.body_size,
    )
    if text:
        out += b" %d" % part.body_lines
    elif part.rfc822:
        message = part.children[0]
        child_envelope = envelope(message.headers) if message.headers else EMPTY_ENVELOPE
        out += b" %s %s %d" % (
            child_envelope,
            bodystructure(message, extensible),
            part.body_lines,
        )

    if extensible:
        out += b" " + imap_nstring_nolf(fields.md5) + _extensions(fields)
    return b"(" + out + b")"


def bodystructure(part: Part, extensible: bool = True) -> bytes:
    """Return the BODYSTRUCTURE (``extensible``) or BODY list of ``part``."""
    fields = content_fields(part)
    if part.multipart:
        return _multipart(part, fields, extensible)

    return _single(part, fields, extensible)
