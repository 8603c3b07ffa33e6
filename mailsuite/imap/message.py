"""One message as IMAP FETCH and SEARCH see it: a lazily parsed view of its bytes.

:class:`ParsedMessage` takes the message exactly as served (CRLF line
endings) and answers ENVELOPE, BODYSTRUCTURE, BODY[section] and the text
SEARCH keys. Sections are slices of the original octets, never a
re-serialisation, so sizes and offsets agree with RFC822.SIZE and partial
fetches. Nothing is parsed until first asked for, and what needs only the
top-level header (ENVELOPE, HEADER and HEADER.FIELDS of the message, the
header SEARCH keys, the sent date) parses only the header: a large body is
not walked for a client's header fetch.

The one change made to the octets: NUL, which IMAP cannot carry in a
literal (RFC 3501 section 4.3), is served as 0x80 as Dovecot does. It keeps
every size and offset.
"""

import datetime

from mailsuite.imap.bodystructure import bodystructure, content_fields
from mailsuite.imap.dates import sent_date
from mailsuite.imap.decode import decode_transfer, is_known_transfer_encoding
from mailsuite.imap.envelope import envelope
from mailsuite.imap.mime import Part, parse_header, parse_message
from mailsuite.imap.quoting import imap_list, imap_string
from mailsuite.imap.searchtext import (
    body_segments,
    fold,
    header_values,
    matches_text,
    single_part_segments,
)

__all__ = [
    "ParsedMessage",
    "UnknownTransferEncoding",
    "imap_list",
    "imap_string",
]

_HEADER_KINDS = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT")


class UnknownTransferEncoding(ValueError):
    """BINARY was asked of a part whose encoding we cannot undo (RFC 3516 UNKNOWN-CTE)."""


class ParsedMessage:
    """A message's IMAP views, computed from its octets on first use."""

    def __init__(self, data: bytes) -> None:
        if b"\0" in data:
            data = data.replace(b"\0", b"\x80")
        self.data = data
        self._root: Part | None = None
        self._head: Part | None = None
        self._envelope: bytes | None = None
        self._structures: dict[bool, bytes] = {}

    @property
    def root(self) -> Part:
        """The MIME tree, parsed on first access."""
        if self._root is None:
            self._root = parse_message(self.data)
        return self._root

    @property
    def head(self) -> Part:
        """The top-level header only: the full tree if parsed, else a header-only parse.

        Its ``headers`` and ``body_start`` are the full tree's; it has no
        children or body sizes.
        """
        if self._root is not None:
            return self._root
        if self._head is None:
            self._head = parse_header(self.data)
        return self._head

    @property
    def size(self) -> int:
        """RFC822.SIZE: the octets served for BODY[]."""
        return len(self.data)

    def envelope(self) -> bytes:
        """Return the ENVELOPE list (RFC 3501 section 7.4.2)."""
        if self._envelope is None:
            self._envelope = envelope(self.head.headers)
        return self._envelope

    def bodystructure(self, extensible: bool = True) -> bytes:
        """Return the BODYSTRUCTURE list, or the BODY list when not ``extensible``."""
        if extensible not in self._structures:
            self._structures[extensible] = bodystructure(self.root, extensible)
        return self._structures[extensible]

    def find_part(self, part: tuple[int, ...]) -> Part | None:
        """Return the part a section number names (RFC 3501 section 6.4.5), if it exists.

        Numbers after a message/rfc822 part continue in the message it
        encapsulates. A message (top level or encapsulated) that is not
        multipart has a part 1, itself; a part that is neither a message
        nor multipart has no parts.
        """
        node = self.root
        at_message = True
        for depth, number in enumerate(part):
            if node.multipart:
                if not 1 <= number <= len(node.children):
                    return None
                node = node.children[number - 1]
            elif number != 1 or not at_message:
                return None

            at_message = node.rfc822 and depth + 1 < len(part)
            if at_message:
                node = node.children[0]
        return node

    def section(
        self, part: tuple[int, ...], kind: str = "", fields: tuple[str, ...] = ()
    ) -> bytes | None:
        """Return the octets of ``BODY[<part>.<kind>]`` (RFC 3501 section 6.4.5).

        ``kind`` is "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"
        or "MIME"; ``fields`` are the header names for the HEADER.FIELDS
        kinds. With a part number, HEADER, TEXT and HEADER.FIELDS refer to
        the message inside a message/rfc822 part.

        Returns None when the part does not exist, when MIME is asked of
        the whole message, or when HEADER, TEXT or HEADER.FIELDS are asked
        of a part that is not message/rfc822. Dovecot answers the first with
        an empty string, and the server should do the same for all three.
        """
        kind = kind.upper()
        if kind not in ("", "MIME", *_HEADER_KINDS):
            raise ValueError(f"unknown section text: {kind}")

        if not part:
            if kind == "MIME":
                return None
            if kind == "":
                return self.data
            top = self.root if kind == "TEXT" else self.head
            return self._message_text(top, kind, fields)

        node = self.find_part(part)
        if node is None:
            return None

        if kind == "":
            return self.data[node.body_start : node.end]
        if kind == "MIME":
            return self.data[node.start : node.body_start]
        if not node.rfc822:
            return None
        return self._message_text(node.children[0], kind, fields)

    def _message_text(self, message: Part, kind: str, fields: tuple[str, ...]) -> bytes:
        """Return HEADER, TEXT or a HEADER.FIELDS selection of a (nested) message."""
        if kind == "HEADER":
            return self.data[message.start : message.body_start]
        if kind == "TEXT":
            return self.data[message.body_start : message.end]

        wanted = {name.lower().encode("ascii", "replace") for name in fields}
        include = kind == "HEADER.FIELDS"
        selected = bytearray()
        for field in message.headers:
            if (field.name.lower() in wanted) == include:
                raw = self.data[field.start : min(field.end, message.body_start)]
                selected += raw if raw.endswith(b"\n") else raw + b"\r\n"
        return bytes(selected) + b"\r\n"

    def binary_section(self, part: tuple[int, ...]) -> bytes | None:
        """Return ``BINARY[<part>]`` (RFC 3516): the part body with its encoding undone.

        Returns None when the part does not exist; raises
        :class:`UnknownTransferEncoding` for an encoding other than 7bit,
        8bit, binary, base64 and quoted-printable.
        """
        if not part:
            return self.data

        node = self.find_part(part)
        if node is None:
            return None

        encoding = content_fields(node).transfer_encoding
        if node.multipart or node.rfc822 or encoding is None:
            return self.data[node.body_start : node.end]
        if not is_known_transfer_encoding(encoding):
            raise UnknownTransferEncoding(encoding.decode("ascii", "replace"))
        return decode_transfer(self.data[node.body_start : node.end], encoding)

    def header_text(self, name: str) -> list[str]:
        """Return every value of the top-level header ``name``, unfolded and decoded.

        For SEARCH SUBJECT and HEADER; 8-bit octets outside RFC 2047 words
        are read as UTF-8.
        """
        return header_values(self.head, name)

    def body_text(self) -> str:
        """Return the decoded text of the body parts, as SEARCH BODY reads them.

        Parts are separated by NUL, which no search string contains, so that
        a match cannot span two parts.
        """
        return "\0".join(body_segments(self.data, self.root, with_headers=False))

    def matches_text(self, key: str, value: str, header: str = "") -> bool:
        """Say whether a text SEARCH key (FROM, TO, CC, BCC, SUBJECT, HEADER, BODY, TEXT) holds.

        See :func:`mailsuite.imap.searchtext.matches_text`.
        """
        upper = key.upper()
        if upper not in ("BODY", "TEXT"):
            return matches_text(self.data, self.head, key, value, header)

        if self._root is None:
            segments = single_part_segments(self.data, self.head, upper == "TEXT")
            if segments is not None:
                wanted = fold(value)
                return any(wanted in fold(segment) for segment in segments)
        return matches_text(self.data, self.root, key, value, header)

    def sent_date(self) -> datetime.date | None:
        """Return the date of the first Date: header, for SENTBEFORE/SENTON/SENTSINCE.

        None when the header is missing or unreadable; Dovecot then compares
        the message as sent on 1 January 1970.
        """
        field = self.head.first_header(b"date")
        if field is None:
            return None

        return sent_date(field.value)
