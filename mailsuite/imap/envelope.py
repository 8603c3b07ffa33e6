"""The IMAP ENVELOPE structure (RFC 3501 section 7.4.2) of a message header.

Fields come in RFC order: date, subject, from, sender, reply-to, to, cc, bcc,
in-reply-to, message-id. Sender and reply-to default to from. As in
Dovecot, a repeated address header adds its addresses to the list, while a
repeated date, subject or identifier replaces the earlier one.
"""

from collections.abc import Iterable

from mailsuite.imap.address import Address, parse_addresses
from mailsuite.imap.mime import HeaderField
from mailsuite.imap.quoting import imap_nstring, imap_nstring_nolf, imap_string_for_humans

_TEXT_FIELDS = (b"date", b"subject", b"in-reply-to", b"message-id")
_ADDRESS_FIELDS = (b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc")

EMPTY_ENVELOPE = b"(" + b" ".join([b"NIL"] * 10) + b")"


def _address_list(addresses: list[Address] | None) -> bytes:
    if not addresses:
        return b"NIL"

    out = []
    for address in addresses:
        name = b"NIL" if address.name is None else imap_string_for_humans(address.name)
        fields = (imap_nstring(address.route), imap_nstring(address.mailbox))
        out.append(b"(%s %s %s %s)" % (name, *fields, imap_nstring(address.domain)))
    return b"(" + b"".join(out) + b")"


def envelope(headers: Iterable[HeaderField]) -> bytes:
    """Return the ENVELOPE list for a message with these header fields."""
    values: dict[bytes, bytes] = {}
    addresses: dict[bytes, list[Address]] = {}
    for field in headers:
        name = field.name.lower()
        if name in _TEXT_FIELDS:
            values[name] = field.value
        elif name in _ADDRESS_FIELDS:
            addresses.setdefault(name, []).extend(parse_addresses(field.value))

    sender = addresses.get(b"sender") or addresses.get(b"from")
    reply_to = addresses.get(b"reply-to") or addresses.get(b"from")
    subject = values.get(b"subject")

    return b"(%s)" % b" ".join(
        [
            imap_nstring_nolf(values.get(b"date")),
            b"NIL" if subject is None else imap_string_for_humans(subject),
            _address_list(addresses.get(b"from")),
            _address_list(sender),
            _address_list(reply_to),
            _address_list(addresses.get(b"to")),
            _address_list(addresses.get(b"cc")),
            _address_list(addresses.get(b"bcc")),
            imap_nstring_nolf(values.get(b"in-reply-to")),
            imap_nstring_nolf(values.get(b"message-id")),
        ]
    )
