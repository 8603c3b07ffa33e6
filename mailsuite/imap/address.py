"""Address lists (RFC 5322 section 3.4) as IMAP's ENVELOPE sees them.

The parser recovers from broken headers the way Dovecot's message-address
does, down to the placeholder names it fills in (``MISSING_DOMAIN``,
``SYNTAX_ERROR``...), so that our ENVELOPE matches that server's for the same
mail. A group is reported as RFC 3501 section 7.4.2 asks: an address with
only the mailbox set to the group name, the members, then an address with
every field empty.
"""

import re
from typing import NamedTuple

from mailsuite.imap.rfc822 import ATEXT, Rfc822Parser

MISSING_MAILBOX = b"MISSING_MAILBOX"
MISSING_DOMAIN = b"MISSING_DOMAIN"
SYNTAX_ERROR = b"SYNTAX_ERROR"
INVALID_ROUTE = b"INVALID_ROUTE"

# The common case, local@domain alone up to a comma or the end, which the
# full parser would read the same way; it is taken without the full parser's
# three attempts (group, name-addr, addr-spec) so long lists stay fast.
_ATOM = b"[" + b"".join(re.escape(bytes([c])) for c in sorted(ATEXT)) + b"]+"
_DOT_ATOM = _ATOM + rb"(?:\." + _ATOM + rb")*"
_SIMPLE_ADDRESS = re.compile(b"(" + _DOT_ATOM + b")@(" + _DOT_ATOM + rb")[ \t\r\n]*(?=,|\Z)")


class Address(NamedTuple):
    """One ENVELOPE address: display name, source route, local part, domain."""

    name: bytes | None
    route: bytes | None
    mailbox: bytes | None
    domain: bytes | None


class _Fields:
    """The address being assembled; Dovecot's parser fills it field by field."""

    __slots__ = ("domain", "invalid", "mailbox", "name", "route")

    def __init__(self) -> None:
        self.name: bytes | None = None
        self.route: bytes | None = None
        self.mailbox: bytes | None = None
        self.domain: bytes | None = None
        self.invalid = False


class _AddressParser:
    """State of one parse: the cursor, the address in progress, and the results."""

    def __init__(self, value: bytes, fill_missing: bool) -> None:
        self.comment = bytearray()
        self.parser = Rfc822Parser(value, self.comment)
        self.fill_missing = fill_missing
        self.fields = _Fields()
        self.text = bytearray()
        self.found: list[Address] = []

    def add(self) -> None:
        fields = self.fields
        self.found.append(Address(fields.name, fields.route, fields.mailbox, fields.domain))
        self.fields = _Fields()

    def add_fixed(self) -> None:
        """Add the address in progress with placeholders for what is missing."""
        if self.fields.mailbox is None:
            self.fields.mailbox = MISSING_MAILBOX if self.fill_missing else b""

        if not self.fields.domain:
            self.fields.domain = MISSING_DOMAIN if self.fill_missing else b""

        self.add()

    def local_part(self) -> int:
        p = self.parser
        del self.text[:]
        if p.peek() == ord('"'):
            ret = p.parse_quoted_string(self.text)
        else:
            ret = p.parse_dot_atom(self.text)
        if ret < 0:
            return -1

        self.fields.mailbox = bytes(self.text)
        return ret

    def domain(self) -> int:
        del self.text[:]
        ret = self.parser.parse_domain(self.text)
        if ret < 0:
            return -1

        self.fields.domain = bytes(self.text)
        return ret

    def domain_list(self) -> int:
        """Parse an obsolete source route, ``@a,@b``."""
        p = self.parser
        del self.text[:]
        while True:
            if p.pos >= p.end:
                return 0

            if p.peek() != ord("@"):
                break

            if self.text:
                self.text += b","
            self.text += b"@"
            ret = p.parse_domain(self.text)
            if ret <= 0:
                return ret

            while p.skip_lwsp() > 0 and p.peek() == ord(","):
                p.pos += 1

        self.fields.route = bytes(self.text)
        return 1

    def angle_addr(self) -> int:
        p = self.parser
        p.pos += 1
        if p.skip_lwsp() <= 0:
            return -1

        if p.peek() == ord("@"):
            if self.domain_list() > 0 and p.peek() == ord(":"):
                p.pos += 1
            else:
                if self.fill_missing:
                    self.fields.route = INVALID_ROUTE
                if p.pos >= p.end:
                    return -1
            if p.skip_lwsp() <= 0:
                return -1

        if p.peek() != ord(">"):
            if self.local_part() <= 0:
                return -1
            if p.peek() == ord("@") and self.domain() <= 0:
                return -1

        if p.peek() != ord(">"):
            return -1

        p.pos += 1
        return p.skip_lwsp()

    def name_addr(self) -> int:
        p = self.parser
        del self.text[:]
        if p.parse_phrase(self.text) <= 0 or p.peek() != ord("<"):
            return -1

        self.fields.name = bytes(self.text) or None
        if self.angle_addr() < 0 and self.fill_missing:
            self.fields.domain = SYNTAX_ERROR
        return p.more()

    def addr_spec(self) -> int:
        p = self.parser
        del self.comment[:]
        quoted = p.peek() == ord('"')
        ret = self.local_part()
        self.fields.invalid = ret <= 0
        domain_ret = -2
        if ret != 0 and p.peek() == ord("@"):
            domain_ret = self.domain()
            if domain_ret <= 0:
                ret = domain_ret

        if self.comment:
            self.fields.name = bytes(self.comment)
        elif domain_ret == -2:
            # A lone "user" is a mailbox, but "some words" is a display name.
            self.text += b" "
            before = len(self.text)
            p.parse_phrase(self.text)
            if len(self.text) != before:
                self.fields.mailbox = None
                self.fields.name = bytes(self.text)
            elif not quoted:
                self.fields.domain = b""
            self.fields.invalid = True
            ret = -1
        return ret

    def mailbox(self) -> int:
        p = self.parser
        start = p.pos
        ret = self.name_addr()
        if ret < 0:
            p.pos = start
            ret = self.addr_spec()
            fields = self.fields
            if fields.invalid and fields.name is None and fields.domain is None:
                fields.name, fields.mailbox = fields.mailbox, None

        self.add_fixed()
        return ret

    def group(self) -> int:
        p = self.parser
        del self.text[:]
        if p.parse_phrase(self.text) <= 0 or p.peek() != ord(":"):
            return -1

        # From here on this is a group, whatever follows.
        p.pos += 1
        ret = p.skip_lwsp()
        self.fields.mailbox = bytes(self.text)
        self.add()
        if ret > 0 and p.peek() != ord(";"):
            while True:
                self.mailbox()
                if p.peek() != ord(","):
                    break
                p.pos += 1
                if p.skip_lwsp() <= 0:
                    ret = -1
                    break

        if ret >= 0:
            if p.peek() != ord(";"):
                ret = -1
            else:
                p.pos += 1
                ret = p.skip_lwsp()

        self.add()
        return 0 if ret == 0 else 1

    def address(self) -> int:
        p = self.parser
        simple = _SIMPLE_ADDRESS.match(p.data, p.pos)
        if simple is not None:
            self.found.append(Address(None, None, simple.group(1), simple.group(2)))
            p.pos = simple.end()
            return p.more()

        start = self.parser.pos
        ret = self.group()
        if ret < 0:
            self.parser.pos = start
            ret = self.mailbox()
        return ret

    def address_list(self) -> None:
        p = self.parser
        if p.skip_lwsp() <= 0:
            return

        while self.address() != 0:
            if p.peek() != ord(","):
                return
            p.pos += 1
            ret = p.skip_lwsp()
            if ret < 0:
                self.add_fixed()
            if ret <= 0:
                return


def parse_addresses(value: bytes, fill_missing: bool = True) -> list[Address]:
    """Parse an address-list header value; an empty list when it holds none.

    With ``fill_missing`` (as for ENVELOPE) absent parts are reported as
    ``MISSING_MAILBOX``/``MISSING_DOMAIN``; without it they are empty.
    """
    state = _AddressParser(value, fill_missing)
    state.address_list()
    return state.found


def _maybe_quote(text: bytes, escape_dot: bool) -> bytes:
    """Quote ``text`` for an address header unless it is all atext."""
    if all(c in ATEXT or (c == ord(".") and not escape_dot) for c in text):
        return text

    escaped = text.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"'", b"\\'")
    return b'"' + escaped + b'"'


def write_addresses(addresses: list[Address]) -> bytes:
    """Write parsed addresses back as a header value, the form SEARCH FROM/TO match against.

    This is Dovecot's normalisation (message_address_write): ``Name
    <local@domain>``, bare ``local@domain`` without a name, and ``group:
    members;``.
    """
    out = bytearray()
    in_group = False
    first = True
    for address in addresses:
        if not first:
            out += b", "
        first = False

        if address.domain is None:
            if not in_group:
                out += _group_name(address.mailbox)
                out += b": "
                first = True
            else:
                drop = 2 if out.endswith(b", ") else 1
                del out[-drop:]
                out += b";"
            in_group = not in_group
            continue

        out += _display_address(address)

    return bytes(out)


def _group_name(name: bytes | None) -> bytes:
    if not name:
        return b'""'

    if b"=?" in name:
        return name

    return _maybe_quote(name, escape_dot=True)


def _display_address(address: Address) -> bytes:
    out = bytearray()
    mailbox = address.mailbox or b""
    domain = address.domain or b""
    if address.name is not None:
        out += address.name if b"=?" in address.name else _maybe_quote(address.name, True)

    if address.route is None and not mailbox and not domain:
        return bytes(out)

    if address.name:
        out += b" "
    out += b"<"
    if address.route is not None:
        out += address.route + b":"
    out += _maybe_quote(mailbox, escape_dot=False) if mailbox else b'""'
    if domain:
        out += b"@" + domain
    out += b">"
    return bytes(out)
