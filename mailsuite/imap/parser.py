"""The IMAP4rev1 command grammar (RFC 3501 section 9), apart from the session.

A command reaches the parser whole: the session collects its lines and the
literals between them (``{n}`` or ``{n+}`` ends a line, the literal's octets
follow) into ``parts``, lines at even indexes and literals at odd ones. The
``Reader`` walks those parts with the small productions of the grammar
(atoms, strings, sequence sets, dates); ``parse_fetch_items`` and
``parse_search`` build the two larger grammars into plain records that the
command modules execute. Every syntax problem raises ``ParseError``, which
the session answers with ``BAD``.

Nothing here allocates in proportion to a number the client wrote: a
sequence set stays a list of ranges, and nesting is bounded.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

#: Deepest parenthesis nesting accepted in SEARCH keys and lists.
MAX_DEPTH = 32

#: The largest number IMAP allows (RFC 3501 section 9, ``number``).
MAX_NUMBER = 2**32 - 1

#: The largest mod-sequence value (RFC 7162 section 7).
MAX_MODSEQ = 2**63 - 1

#: Stands for ``*`` inside a ``SequenceSet`` until it is resolved.
STAR = 0

_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')
_LITERAL_MARKER = re.compile(rb"\{(\d{1,10})(\+?)\}\Z")
_TAG = re.compile(rb'[^(){ %*"\\+\x00-\x20\x7f-\xff]+\Z')

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name.lower(): number for number, name in enumerate(MONTHS, start=1)}


class ParseError(Exception):
    """The command does not follow the grammar; the session answers BAD."""


def _is_atom_char(byte: int) -> bool:
    return 0x20 < byte < 0x7F and byte not in _ATOM_SPECIALS


def _is_astring_char(byte: int) -> bool:
    return _is_atom_char(byte) or byte == 0x5D  # "]" (resp-specials)


def _is_list_char(byte: int) -> bool:
    return _is_astring_char(byte) or byte in (0x25, 0x2A)  # "%" "*"


def literal_marker(line: bytes) -> tuple[int, bool] | None:
    """``(size, synchronizing)`` if ``line`` ends with ``{n}`` or ``{n+}``."""
    match = _LITERAL_MARKER.search(line)
    if match is None:
        return None
    return int(match.group(1)), not match.group(2)


def split_tag(line: bytes) -> tuple[bytes, str]:
    """The tag and upper-case command name of a command's first line.

    Used before the command is complete (to size its literals and to tag a
    refusal), so it is forgiving: a missing or invalid tag comes back as
    ``*`` and a missing name as empty text.
    """
    words = line.split(b" ", 3)
    tag = words[0] if _TAG.match(words[0]) else b"*"
    name = words[1].upper() if len(words) > 1 else b""
    if name == b"UID" and len(words) > 2:
        name += b" " + words[2].upper()
    return tag, name.decode("ascii", "replace")


# -- sequence sets -------------------------------------------------------------


@dataclass(frozen=True)
class SequenceSet:
    """Message numbers or UIDs as ranges; ``STAR`` stands for ``*`` (RFC 3501 9)."""

    ranges: tuple[tuple[int, int], ...]

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Sorted, merged ``(low, high)`` ranges with ``*`` read as ``largest``.

        RFC 3501 section 6.4.8: a range may be written in either order, and
        ``n:*`` with n above the largest number in use still means
        ``largest:n``.
        """
        pairs = []
        for first, last in self.ranges:
            first = largest if first == STAR else first
            last = largest if last == STAR else last
            pairs.append((min(first, last), max(first, last)))
        pairs.sort()
        merged: list[tuple[int, int]] = []
        for low, high in pairs:
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        return merged


def format_uid_set(uids: Sequence[int]) -> str:
    """A compact set for UIDs in the given order, e.g. ``4:6,9`` (RFC 4315)."""
    out: list[str] = []
    start = previous = None
    for uid in uids:
        if previous is not None and uid == previous + 1:
            previous = uid
            continue
        if start is not None:
            out.append(str(start) if start == previous else f"{start}:{previous}")
        start = previous = uid
    if start is not None:
        out.append(str(start) if start == previous else f"{start}:{previous}")
    return ",".join(out)


# -- the reader ----------------------------------------------------------------


class Reader:
    """A cursor over one command's parts (lines and the literals between them)."""

    def __init__(self, parts: Sequence[bytes]) -> None:
        if not parts or len(parts) % 2 == 0:
            raise ValueError("parts must be lines with literals between them")
        self._parts = parts
        self._index = 0
        self._pos = 0
        self._depth = 0

    # -- position ----------------------------------------------------------

    @property
    def _line(self) -> bytes:
        return self._parts[self._index]

    def peek(self, ahead: int = 0) -> int | None:
        """An octet of the current line (the next one), or None past its end."""
        line = self._line
        at = self._pos + ahead
        return line[at] if at < len(line) else None

    def at_end(self) -> bool:
        return self._index == len(self._parts) - 1 and self._pos == len(self._line)

    def end(self) -> None:
        """The command must end here."""
        if not self.at_end():
            raise ParseError("unexpected text at the end of the command")

    def take(self, expected: bytes) -> bool:
        """Consume ``expected`` (case-insensitive) if it comes next."""
        line = self._line
        end = self._pos + len(expected)
        if line[self._pos : end].upper() == expected.upper():
            self._pos = end
            return True
        return False

    def expect(self, expected: bytes) -> None:
        if not self.take(expected):
            raise ParseError(f"expected {expected.decode('ascii')!r}")

    def space(self) -> None:
        self.expect(b" ")

    def _run(self, accept: Callable[[int], bool]) -> bytes:
        line = self._line
        start = self._pos
        end = start
        while end < len(line) and accept(line[end]):
            end += 1
        self._pos = end
        return line[start:end]

    # -- tokens ------------------------------------------------------------

    def tag(self) -> bytes:
        value = self._run(lambda b: _is_astring_char(b) and b != 0x2B)  # not "+"
        if not value:
            raise ParseError("missing or invalid tag")
        return value

    def atom(self) -> bytes:
        value = self._run(_is_atom_char)
        if not value:
            raise ParseError("expected an atom")
        return value

    def keyword(self) -> str:
        """An atom as upper-case text: a command or item name."""
        return self.atom().decode("ascii").upper()

    def number(self) -> int:
        digits = self._run(lambda b: 0x30 <= b <= 0x39)
        if not digits or len(digits) > 10 or int(digits) > MAX_NUMBER:
            raise ParseError("expected a number")
        return int(digits)

    def mod_sequence(self) -> int:
        """``mod-sequence-valzer``: 0 to 2^63 - 1 (RFC 7162 7)."""
        digits = self._run(lambda b: 0x30 <= b <= 0x39)
        if not digits or len(digits) > 19 or int(digits) > MAX_MODSEQ:
            raise ParseError("expected a mod-sequence value")
        return int(digits)

    def nz_number(self) -> int:
        value = self.number()
        if value == 0:
            raise ParseError("zero is not a valid number here")
        return value

    def astring(self) -> bytes:
        byte = self.peek()
        if byte in (0x22, 0x7B):  # '"' or '{'
            return self.string()
        value = self._run(_is_astring_char)
        if not value:
            raise ParseError("expected an atom or a string")
        return value

    def string(self) -> bytes:
        byte = self.peek()
        if byte == 0x22:
            return self._quoted()
        if byte == 0x7B:
            return self._literal()
        raise ParseError("expected a string")

    def nstring_or_nil(self) -> bytes | None:
        """A string, or NIL (as in ID's field values)."""
        if self.peek() not in (0x22, 0x7B) and self.take(b"NIL"):
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        """A LIST pattern: a string, or atom characters plus ``%`` and ``*``."""
        if self.peek() in (0x22, 0x7B):
            return self.string()
        value = self._run(_is_list_char)
        if not value:
            raise ParseError("expected a mailbox pattern")
        return value

    def _quoted(self) -> bytes:
        line = self._line
        pos = self._pos + 1
        out = bytearray()
        while pos < len(line):
            byte = line[pos]
            if byte == 0x22:
                self._pos = pos + 1
                return bytes(out)
            if byte == 0x5C:  # backslash escapes only '"' and backslash
                pos += 1
                if pos >= len(line) or line[pos] not in (0x22, 0x5C):
                    raise ParseError("invalid escape in quoted string")
                byte = line[pos]
            elif byte == 0 or byte in (0x0D, 0x0A):
                raise ParseError("invalid character in quoted string")
            out.append(byte)
            pos += 1
        raise ParseError("unterminated quoted string")

    def _literal(self) -> bytes:
        marker = _LITERAL_MARKER.match(self._line, self._pos)
        if marker is None or self._index + 1 >= len(self._parts):
            raise ParseError("a literal must end its line")
        value = self._parts[self._index + 1]
        self._index += 2
        self._pos = 0
        return value

    # -- lists -------------------------------------------------------------

    def enter(self) -> None:
        """Open a parenthesised list, bounding how deep lists nest."""
        self.expect(b"(")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ParseError("lists nested too deeply")

    def leave(self) -> None:
        self.expect(b")")
        self._depth -= 1

    def paren_list(self, read: Callable[[], T]) -> list[T]:
        """``"(" [item *(SP item)] ")"`` with ``read`` reading one item."""
        self.enter()
        values: list[T] = []
        if not self.take(b")"):
            values.append(read())
            while self.take(b" "):
                values.append(read())
            self.expect(b")")
        self._depth -= 1
        return values

    def flag(self) -> str:
        r"""A flag: ``\Name`` or a keyword atom (RFC 3501 ``flag``)."""
        backslash = self.take(b"\\")
        name = self.atom().decode("ascii")
        return "\\" + name if backslash else name

    def flag_list(self) -> list[str]:
        return self.paren_list(self.flag)

    def item_name(self) -> str:
        """A FETCH item name, which stops before ``[`` (an atom would not)."""
        value = self._run(lambda b: _is_atom_char(b) and b != 0x5B)
        if not value:
            raise ParseError("expected a FETCH item")
        return value.decode("ascii").upper()

    def flags_or_list(self) -> list[str]:
        """STORE's flags: a parenthesised list or flags separated by spaces."""
        if self.peek() == 0x28:
            return self.flag_list()
        flags = [self.flag()]
        while self.peek() == 0x20 and not self.at_end():
            self.space()
            flags.append(self.flag())
        return flags

    # -- sets and dates ----------------------------------------------------

    def sequence_set(self) -> SequenceSet:
        ranges = []
        while True:
            first = self._seq_number()
            last = first
            if self.take(b":"):
                last = self._seq_number()
            ranges.append((first, last))
            if not self.take(b","):
                return SequenceSet(tuple(ranges))

    def _seq_number(self) -> int:
        if self.take(b"*"):
            return STAR
        return self.nz_number()

    def is_sequence_set_next(self) -> bool:
        byte = self.peek()
        return byte is not None and (0x30 <= byte <= 0x39 or byte == 0x2A)

    def date(self) -> tuple[int, int, int]:
        """``date`` as (year, month, day), quoted or not (RFC 3501 ``date``)."""
        quoted = self.take(b'"')
        text = self._run(lambda b: _is_atom_char(b)).decode("ascii")
        if quoted:
            self.expect(b'"')
        return parse_date(text)

    def date_time(self) -> float:
        """APPEND's quoted ``date-time`` as seconds since the epoch."""
        if self.peek() != 0x22:
            raise ParseError("expected a quoted date-time")
        return parse_date_time(self._quoted().decode("ascii", "replace"))


def parse_date(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})", text)
    if match is None:
        raise ParseError("expected a date like 1-Feb-2024")
    day, month_name, year = match.groups()
    month = _MONTH_NUMBER.get(month_name.lower())
    if month is None or not 1 <= int(day) <= calendar.monthrange(int(year), month)[1]:
        raise ParseError("no such date")
    return int(year), month, int(day)


_DATE_TIME = re.compile(
    r"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\Z"
)


def parse_date_time(text: str) -> float:
    """``"dd-Mon-yyyy hh:mm:ss +zzzz"`` to epoch seconds (RFC 3501 ``date-time``)."""
    match = _DATE_TIME.match(text)
    if match is None:
        raise ParseError("expected a date-time like 01-Feb-2024 10:00:00 +0100")
    day, month_name, year, hour, minute, second, sign, zh, zm = match.groups()
    month = _MONTH_NUMBER.get(month_name.lower())
    day_number = int(day.strip())
    if month is None or not 1 <= day_number <= calendar.monthrange(int(year), month)[1]:
        raise ParseError("no such date")
    if int(hour) > 23 or int(minute) > 59 or int(second) > 60 or int(zm) > 59:
        raise ParseError("no such time")
    utc = calendar.timegm(
        (int(year), month, day_number, int(hour), int(minute), min(int(second), 59))
    )
    offset = (int(zh) * 60 + int(zm)) * 60
    return float(utc - offset if sign == "+" else utc + offset)


# -- FETCH items (RFC 3501 6.4.5) ----------------------------------------------


@dataclass(frozen=True)
class Section:
    """A ``BODY[...]`` section: part numbers, then what of that part."""

    part: tuple[int, ...] = ()
    #: "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT" or "MIME".
    kind: str = ""
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchItem:
    """One FETCH data item; ``name`` is upper case (``BODY[]`` for sections)."""

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None

    @property
    def sets_seen(self) -> bool:
        """RFC 3501 6.4.5: BODY[...], RFC822 and RFC822.TEXT set \\Seen (and BINARY[...])."""
        if self.name in ("BODY[]", "BINARY[]"):
            return not self.peek
        return self.name in ("RFC822", "RFC822.TEXT")

    @property
    def needs_content(self) -> bool:
        return self.name not in _METADATA_ITEMS


_METADATA_ITEMS = frozenset({"UID", "FLAGS", "RFC822.SIZE", "INTERNALDATE", "MODSEQ"})
_SIMPLE_ITEMS = frozenset(
    {
        "MODSEQ",  # RFC 7162 3.1.4
        "UID",
        "FLAGS",
        "RFC822.SIZE",
        "INTERNALDATE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
    }
)
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_MSGTEXT_KINDS = ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME")


def parse_fetch_items(reader: Reader) -> list[FetchItem]:
    """``fetch-att`` list or macro, after FETCH's sequence set and space."""
    if reader.peek() == 0x28:
        reader.enter()
        items = [_fetch_item(reader)]
        while reader.take(b" "):
            items.append(_fetch_item(reader))
        reader.leave()
        return items
    name = reader.item_name()
    if name in _MACROS:
        return [FetchItem(n) for n in _MACROS[name]]
    return [_fetch_item_named(reader, name)]


def _fetch_item(reader: Reader) -> FetchItem:
    return _fetch_item_named(reader, reader.item_name())


def _fetch_item_named(reader: Reader, name: str) -> FetchItem:
    if name in _SIMPLE_ITEMS:
        return FetchItem(name)
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        return _binary_item(reader, name)
    if name not in ("BODY", "BODY.PEEK"):
        raise ParseError(f"unknown FETCH item {name}")
    if reader.peek() != 0x5B:  # "["
        if name == "BODY.PEEK":
            raise ParseError("BODY.PEEK needs a section")
        return FetchItem("BODY")
    section = _section(reader)
    partial = _partial(reader)
    return FetchItem("BODY[]", section, peek=name == "BODY.PEEK", partial=partial)


def _binary_item(reader: Reader, name: str) -> FetchItem:
    """``BINARY[part]<partial>``, ``BINARY.PEEK[...]``, ``BINARY.SIZE[part]`` (RFC 3516 4.2)."""
    reader.expect(b"[")
    part = _section_part(reader)
    reader.expect(b"]")
    if name == "BINARY.SIZE":
        return FetchItem("BINARY.SIZE", Section(part))
    return FetchItem(
        "BINARY[]", Section(part), peek=name == "BINARY.PEEK", partial=_partial(reader)
    )


def _section(reader: Reader) -> Section:
    """``"[" [section-spec] "]"``: part numbers, then HEADER, TEXT, MIME..."""
    reader.expect(b"[")
    part = _section_part(reader)
    kind = ""
    if part:
        if reader.take(b"."):
            kind = _section_kind(reader)
    elif reader.peek() != 0x5D:  # not "]": HEADER, TEXT...
        kind = _section_kind(reader)
    if kind == "MIME" and not part:
        raise ParseError("MIME needs a part number")
    fields: tuple[str, ...] = ()
    if kind.startswith("HEADER.FIELDS"):
        reader.space()
        names = reader.paren_list(reader.astring)
        if not names:
            raise ParseError("HEADER.FIELDS needs at least one field name")
        fields = tuple(n.decode("ascii", "replace").upper() for n in names)
    reader.expect(b"]")
    return Section(part, kind, fields)


def _section_part(reader: Reader) -> tuple[int, ...]:
    part: list[int] = []
    while reader.is_sequence_set_next() and reader.peek() != 0x2A:
        part.append(reader.nz_number())
        if len(part) > MAX_DEPTH:
            raise ParseError("section part nested too deeply")
        after_dot = reader.peek(1)
        if reader.peek() != 0x2E or after_dot is None or not 0x30 <= after_dot <= 0x39:
            break
        reader.expect(b".")
    return tuple(part)


def _section_kind(reader: Reader) -> str:
    for kind in _MSGTEXT_KINDS:
        if reader.take(kind.encode("ascii")):
            return kind
    raise ParseError("unknown section")


def _partial(reader: Reader) -> tuple[int, int] | None:
    if not reader.take(b"<"):
        return None
    offset = reader.number()
    reader.expect(b".")
    length = reader.nz_number()
    reader.expect(b">")
    return offset, length


# -- SEARCH keys (RFC 3501 6.4.4) ----------------------------------------------


@dataclass(frozen=True)
class Key:
    """One search key: its upper-case name and its argument, if any.

    Arguments: strings stay bytes (the CHARSET decides how to read them),
    dates are (year, month, day), sizes ints, sets ``SequenceSet``, and
    HEADER's argument is (field name, bytes).
    """

    name: str
    arg: object = None


@dataclass(frozen=True)
class Not:
    key: SearchKey


@dataclass(frozen=True)
class Or:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True)
class And:
    keys: tuple[SearchKey, ...] = field(default_factory=tuple)


SearchKey = Key | Not | Or | And

_FLAG_KEYS = frozenset(
    [
        "ALL",
        "ANSWERED",
        "DELETED",
        "DRAFT",
        "FLAGGED",
        "NEW",
        "OLD",
        "RECENT",
        "SEEN",
        "UNANSWERED",
        "UNDELETED",
        "UNDRAFT",
        "UNFLAGGED",
        "UNSEEN",
    ]
)
_STRING_KEYS = frozenset(["BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"])
_DATE_KEYS = frozenset(["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"])


@dataclass(frozen=True)
class SearchProgram:
    charset: str | None
    key: SearchKey


def parse_search(reader: Reader) -> SearchProgram:
    """``[CHARSET astring SP] 1*search-key``, after SEARCH and its space."""
    charset = None
    if reader.take(b"CHARSET "):
        charset = reader.astring().decode("ascii", "replace").upper()
        reader.space()
    keys = [_search_key(reader, 0)]
    while reader.take(b" "):
        keys.append(_search_key(reader, 0))
    reader.end()
    key = keys[0] if len(keys) == 1 else And(tuple(keys))
    return SearchProgram(charset, key)


def _search_key(reader: Reader, depth: int) -> SearchKey:
    if depth > MAX_DEPTH:
        raise ParseError("search keys nested too deeply")
    if reader.peek() == 0x28:
        reader.enter()
        keys = [_search_key(reader, depth + 1)]
        while reader.take(b" "):
            keys.append(_search_key(reader, depth + 1))
        reader.leave()
        return keys[0] if len(keys) == 1 else And(tuple(keys))
    if reader.is_sequence_set_next():
        return Key("SEQUENCE", reader.sequence_set())
    name = reader.keyword()
    if name in _FLAG_KEYS:
        return Key(name)
    reader.space()
    if name == "NOT":
        return Not(_search_key(reader, depth + 1))
    if name == "OR":
        left = _search_key(reader, depth + 1)
        reader.space()
        return Or(left, _search_key(reader, depth + 1))
    return Key(name, _search_argument(reader, name))


def _search_argument(reader: Reader, name: str) -> object:
    if name in _STRING_KEYS:
        return reader.astring()
    if name in _DATE_KEYS:
        return reader.date()
    if name in ("LARGER", "SMALLER"):
        return reader.number()
    if name == "UID":
        return reader.sequence_set()
    if name in ("KEYWORD", "UNKEYWORD"):
        return reader.atom().decode("ascii")
    if name == "HEADER":
        field_name = reader.astring().decode("ascii", "replace")
        reader.space()
        return field_name, reader.astring()
    if name == "MODSEQ":
        return _search_modseq(reader)
    raise ParseError(f"unknown search key {name}")


def _search_modseq(reader: Reader) -> int:
    """``MODSEQ [entry-name SP entry-type-req SP] mod-sequence-valzer`` (RFC 7162 3.1.5).

    The entry name and type are read and ignored: modseqs are kept per
    message, not per flag, which the RFC allows.
    """
    if reader.peek() == 0x22:
        reader.string()
        reader.space()
        if reader.keyword() not in ("PRIV", "SHARED", "ALL"):
            raise ParseError("expected priv, shared or all")
        reader.space()
    return reader.mod_sequence()
