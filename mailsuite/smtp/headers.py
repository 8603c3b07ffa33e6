"""Reading the From: fields of a submitted message, and nothing else of it.

The submission sender check needs the addresses in From:. Only the header
section is read, and only up to ``HEADER_LIMIT`` octets: a header section
longer than that is refused rather than checked in part, because a From:
field past the point where we stopped reading would still be shown by the
recipient's mail program.

The header section ends at the first empty line (RFC 5322 2.1). Every
field before it is looked at, even after a malformed line, so what we
check is at least what any mail program could show. A From: field that is
not a plain list of addresses (empty, a group, a stray ``<>``) is reported
as unreadable, never as "no From:", which would let it through.
"""

from __future__ import annotations

from email.utils import getaddresses

#: The longest header section a submitted message may have, in octets.
#: Mail programs write a few kilobytes; Postfix's own limit is 100 KiB.
HEADER_LIMIT = 256 * 1024

_END = b"\r\n\r\n"


class HeaderTooLong(Exception):
    """The header section does not end within ``HEADER_LIMIT`` octets."""


class UnreadableFrom(Exception):
    """A From: field holds something other than a list of addresses."""


def header_section(message: bytes, limit: int = HEADER_LIMIT) -> bytes:
    """The header lines of a CRLF message, without the empty line after them."""
    if message.startswith(b"\r\n"):
        return b""
    # The last header line's CRLF is part of the section, the empty line's is not.
    end = message.find(_END, 0, limit + 2)
    if end >= 0:
        return message[: end + 2]
    if len(message) > limit:
        raise HeaderTooLong()
    return message


def field_values(header: bytes, name: str) -> list[str]:
    """The unfolded values of every field called ``name``, any letter case.

    RFC 5322 3.6.2 allows one From: field; a message with more is checked
    field by field rather than refused, so nothing slips past in a second one.
    """
    wanted = name.lower()
    values: list[str] = []
    collecting = False
    for line in header.decode("utf-8", "replace").split("\r\n"):
        if line[:1] in (" ", "\t"):
            # RFC 5322 2.2.3: unfolding removes the CRLF, nothing else.
            if collecting:
                values[-1] += line
            continue

        field, colon, value = line.partition(":")
        # RFC 5322 4.5.4 (obsolete syntax): spaces before the colon.
        collecting = bool(colon) and field.rstrip(" \t").lower() == wanted
        if collecting:
            values.append(value)
    return [value.strip() for value in values]


def from_addresses(header: bytes) -> list[str]:
    """Every address in the From: fields; ``UnreadableFrom`` if one is no address list."""
    found: list[str] = []
    for value in field_values(header, "from"):
        pairs = getaddresses([value])
        addresses = [address for _, address in pairs]
        if not addresses or not all(addresses):
            raise UnreadableFrom(value.strip())
        found += addresses
    return found
