"""SEARCH and UID SEARCH (RFC 3501 6.4.4), ESEARCH results (RFC 4731), MODSEQ (RFC 7162 3.1.5).

The parsed keys are compiled into tests, each with a cost:

0. flags, sizes, UIDs, modseqs and message numbers: folder metadata;
1. arrival dates: the index, or the file's mtime once;
2. SUBJECT, FROM, TO, CC, BCC, the SENT* dates and HEADER of the common
   fields: the search records kept in the folder index
   (:mod:`mailsuite.imap.searchindex`), made from the header on first need;
3. HEADER of other fields: the message's header, read and parsed alone;
4. BODY and TEXT: the whole message, parsed (``ParsedMessage.matches_text``
   decides what each key sees, as Dovecot does).

An AND tries cheap tests first, so ``SEEN LARGER 5000 BODY x`` opens only
the files that pass the first two. Messages read for SEARCH do not displace
the FETCH cache. The work is done in slices of reactor time
(:mod:`mailsuite.imap.offload`), so a search through every body of a large
folder does not stall other sessions.

Strings are read in the CHARSET named (UTF-8 or US-ASCII; 8-bit octets in
US-ASCII are read as UTF-8); any other CHARSET is ``NO [BADCHARSET]``.
"""

from __future__ import annotations

import datetime
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.logger import Logger

from mailsuite.imap import searchindex
from mailsuite.imap.cache import CachedMessage, MessageCache
from mailsuite.imap.commands.base import Command, selected_of
from mailsuite.imap.flags import letter_of
from mailsuite.imap.mime import Part, parse_header
from mailsuite.imap.offload import Slicer
from mailsuite.imap.parser import (
    And,
    Key,
    Not,
    Or,
    Reader,
    SearchKey,
    SequenceSet,
    format_uid_set,
    parse_search,
)
from mailsuite.imap.responses import BADCHARSET, OK, Reply, bad, no
from mailsuite.imap.searchtext import fold, matches_text
from mailsuite.imap.selected import SelectedMailbox
from mailsuite.store import Folder, Message, MessageGone

if TYPE_CHECKING:
    from mailsuite.imap.message import ParsedMessage
    from mailsuite.imap.server import IMAPSession

log = Logger()

CHARSETS = ("UTF-8", "US-ASCII")

#: Dovecot's reading of a message without a usable Date: header.
NO_SENT_DATE = datetime.date(1970, 1, 1)

#: RFC 4731 3.1: the result options we answer; SAVE (RFC 5182) is not offered.
RETURN_OPTIONS = ("MIN", "MAX", "COUNT", "ALL")

#: Metadata-only tests are cheap: look at the clock only this often.
METADATA_STRIDE = 1024

_FLAG_LETTERS = {
    "ANSWERED": "R",
    "DELETED": "T",
    "DRAFT": "D",
    "FLAGGED": "F",
    "SEEN": "S",
}
_TEXT_KEYS = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_ADDRESS_KEYS = frozenset({"BCC", "CC", "FROM", "TO"})
_DATE_TESTS: dict[str, Callable[[datetime.date, datetime.date], bool]] = {
    "BEFORE": lambda day, wanted: day < wanted,
    "ON": lambda day, wanted: day == wanted,
    "SINCE": lambda day, wanted: day >= wanted,
}


class Reading:
    """What the text keys read of a message: its search record, header, or whole parse.

    The last header and parse are kept for the next key of the same
    message; a header or parse made anyway also fills the message's search
    record. Messages read here do not enter the FETCH cache, so one SEARCH
    over a large mailbox does not push out what the client is reading.
    """

    def __init__(self, folder: Folder, cache: MessageCache) -> None:
        self._folder = folder
        self._cache = cache
        self._records = searchindex.records_of(folder)
        self._last_head: tuple[Message | None, Part | None] = (None, None)
        self._last: tuple[Message | None, ParsedMessage | None] = (None, None)

    def record(self, message: Message) -> str:
        record = self._records.kept(message)
        if record is None:
            entry = self._cache.peek(self._folder, message)
            head = entry.parsed.head if entry is not None else None
            record = self._records.make(self._folder, message, head)
        return record

    def head(self, message: Message) -> Part:
        last, head = self._last_head
        if last is message and head is not None:
            return head
        entry = self._cache.peek(self._folder, message)
        if entry is not None:
            head = entry.parsed.head
        else:
            head = parse_header(searchindex.read_head(self._folder, message))
        self._records.get(self._folder, message, head)
        self._last_head = (message, head)
        return head

    def parsed(self, message: Message) -> ParsedMessage:
        last, parsed = self._last
        if last is message and parsed is not None:
            return parsed
        entry = self._cache.peek(self._folder, message)
        if entry is None:
            entry = CachedMessage(self._folder.read(message))
        self._records.get(self._folder, message, entry.parsed.head)
        self._last = (message, entry.parsed)
        return entry.parsed

    def flush(self) -> None:
        """Keep the records made so far in the folder index."""
        self._records.flush(self._folder)


#: A test of one message, given its 0-based position in the view.
Test = Callable[[int, Message], bool]


@dataclass(frozen=True)
class Compiled:
    test: Test
    #: 0: metadata; 1: the arrival date; 2: search records; 3: the header; 4: the text.
    cost: int


@dataclass(frozen=True)
class Request:
    """One SEARCH as asked: the keys, and the RFC 4731 result options (None: plain SEARCH)."""

    key: SearchKey
    options: tuple[str, ...] | None
    #: The command has a MODSEQ key: results carry the highest modseq (RFC 7162 3.1.5).
    modseq: bool


def parse_request(reader: Reader) -> Request:
    """``[RETURN (options) SP] [CHARSET x SP] keys``, after SEARCH and its space."""
    options = None
    if reader.take(b"RETURN "):
        options = tuple(reader.paren_list(reader.keyword)) or ("ALL",)
        for option in options:
            if option not in RETURN_OPTIONS:
                raise bad(f"Unsupported search result option {option}")
        reader.space()

    program = parse_search(reader)
    if program.charset is not None and program.charset not in CHARSETS:
        raise no("Unsupported charset", BADCHARSET)
    return Request(program.key, options, _has_modseq(program.key))


def _has_modseq(key: SearchKey) -> bool:
    if isinstance(key, Not):
        return _has_modseq(key.key)
    if isinstance(key, Or):
        return _has_modseq(key.left) or _has_modseq(key.right)
    if isinstance(key, And):
        return any(_has_modseq(k) for k in key.keys)
    return key.name == "MODSEQ"


async def search(session: IMAPSession, command: Command) -> Reply:
    reader = command.args
    reader.space()
    request = parse_request(reader)

    view = selected_of(session)
    reading = Reading(view.folder, session.factory.cache)
    compiled = Compiler(view, reading).compile(request.key)
    slicer = Slicer(session.ctx.reactor)
    found = await _matching(session, view.messages, compiled, reading, slicer)
    if session.closed:
        return Reply(OK, "SEARCH abandoned")

    messages = view.messages
    numbers = [messages[i].uid if command.uid else i + 1 for i in found]
    if request.options is None:
        modseq = max((messages[i].modseq for i in found), default=0) if request.modseq else 0
        session.untagged(_search_response(numbers, modseq))
    else:
        session.untagged(_esearch_response(command, request, numbers, found, messages))
    return Reply(OK, "SEARCH completed")


async def _matching(
    session: IMAPSession,
    messages: list[Message],
    compiled: Compiled,
    reading: Reading,
    slicer: Slicer,
) -> list[int]:
    """Positions of the messages that pass, found in slices of reactor time."""
    test = compiled.test
    stride = 1 if compiled.cost >= 2 else METADATA_STRIDE
    found = []
    for position, message in enumerate(messages):
        try:
            if test(position, message):
                found.append(position)
        except MessageGone:
            pass
        if position % stride == 0 and slicer.due():
            reading.flush()
            await slicer.pause()
            if session.closed:
                return found
    reading.flush()
    return found


def _search_response(numbers: list[int], modseq: int) -> bytes:
    """``* SEARCH 2 5 6``, with ``(MODSEQ n)`` after a MODSEQ search that found some."""
    line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
    if modseq:
        line += b" (MODSEQ %d)" % modseq
    return line + b"\r\n"


def _esearch_response(
    command: Command,
    request: Request,
    numbers: list[int],
    found: list[int],
    messages: list[Message],
) -> bytes:
    """``* ESEARCH (TAG "t") [UID] MIN a MAX b COUNT n ALL set [MODSEQ m]`` (RFC 4731 3.1).

    MIN, MAX and ALL are left out when nothing matched; COUNT is always
    given when asked. With MODSEQ, the modseq is the highest of the
    messages reported: only MIN's and MAX's when those are all that was
    asked (RFC 7162 3.1.5).
    """
    options = request.options or ()
    line = b'* ESEARCH (TAG "' + command.tag + b'")'
    if command.uid:
        line += b" UID"
    if numbers and "MIN" in options:
        line += b" MIN %d" % numbers[0]
    if numbers and "MAX" in options:
        line += b" MAX %d" % numbers[-1]
    if "COUNT" in options:
        line += b" COUNT %d" % len(numbers)
    if numbers and "ALL" in options:
        line += b" ALL " + format_uid_set(numbers).encode("ascii")
    if request.modseq and numbers:
        reported = found
        if "ALL" not in options and "COUNT" not in options:
            reported = [found[0]] if "MIN" in options else []
            reported += [found[-1]] if "MAX" in options else []
        line += b" MODSEQ %d" % max(messages[i].modseq for i in reported)
    return line + b"\r\n"


class Compiler:
    """Turns search keys into tests over one selected mailbox."""

    def __init__(self, view: SelectedMailbox, reading: Reading) -> None:
        self.view = view
        self.reading = reading

    def compile(self, key: SearchKey) -> Compiled:
        if isinstance(key, Not):
            inner = self.compile(key.key)
            return Compiled(lambda i, m: not inner.test(i, m), inner.cost)
        if isinstance(key, Or):
            left, right = self.compile(key.left), self.compile(key.right)
            first, second = sorted((left, right), key=lambda k: k.cost)
            return Compiled(
                lambda i, m: first.test(i, m) or second.test(i, m), max(left.cost, right.cost)
            )
        if isinstance(key, And):
            parts = sorted((self.compile(k) for k in key.keys), key=lambda k: k.cost)
            tests = [p.test for p in parts]
            return Compiled(lambda i, m: all(t(i, m) for t in tests), max(p.cost for p in parts))
        return self._key(key)

    def _key(self, key: Key) -> Compiled:
        name = key.name
        if name == "ALL":
            return Compiled(lambda i, m: True, 0)
        if name in _FLAG_LETTERS:
            letter = _FLAG_LETTERS[name]
            return Compiled(lambda i, m: letter in m.letters, 0)
        if name.startswith("UN") and name[2:] in _FLAG_LETTERS:
            letter = _FLAG_LETTERS[name[2:]]
            return Compiled(lambda i, m: letter not in m.letters, 0)
        if name in ("RECENT", "NEW", "OLD"):
            return self._recent(name)
        if name in ("KEYWORD", "UNKEYWORD"):
            return self._keyword(name, str(key.arg))
        if name in ("LARGER", "SMALLER"):
            return self._size(name, key.arg)
        if name in ("UID", "SEQUENCE"):
            assert isinstance(key.arg, SequenceSet)
            return self._numbers(name, key.arg)
        if name == "MODSEQ":
            assert isinstance(key.arg, int)
            least = key.arg
            return Compiled(lambda i, m: m.modseq >= least, 0)
        if name in _DATE_TESTS:
            return self._internaldate(name, key.arg)
        if name.startswith("SENT") and name[4:] in _DATE_TESTS:
            return self._sent_date(name[4:], key.arg)
        if name in _TEXT_KEYS:
            assert isinstance(key.arg, bytes)
            return self._text(name, _decode(key.arg))
        if name == "HEADER":
            assert isinstance(key.arg, tuple)
            field_name, value = key.arg
            return self._text("HEADER", _decode(value), field_name)
        raise bad(f"Unknown search key {name}")

    def _recent(self, name: str) -> Compiled:
        recent = self.view.recent
        if name == "RECENT":
            return Compiled(lambda i, m: m.uid in recent, 0)
        if name == "OLD":
            return Compiled(lambda i, m: m.uid not in recent, 0)
        return Compiled(lambda i, m: m.uid in recent and "S" not in m.letters, 0)

    def _keyword(self, name: str, keyword: str) -> Compiled:
        letter = letter_of(self.view.folder, keyword)
        if name == "KEYWORD":
            return Compiled(lambda i, m: letter is not None and letter in m.letters, 0)
        return Compiled(lambda i, m: letter is None or letter not in m.letters, 0)

    def _size(self, name: str, arg: object) -> Compiled:
        assert isinstance(arg, int)
        limit = arg
        folder = self.view.folder
        if name == "LARGER":
            return Compiled(lambda i, m: folder.wire_size(m) > limit, 0)
        return Compiled(lambda i, m: folder.wire_size(m) < limit, 0)

    def _numbers(self, name: str, numbers: SequenceSet) -> Compiled:
        view = self.view
        if name == "UID":
            ranges = numbers.resolve(view.uids[-1] if view.uids else 0)
            return Compiled(lambda i, m: _in_ranges(ranges, m.uid), 0)
        positions = view.select_existing(numbers)
        return Compiled(lambda i, m: i in positions, 0)

    def _internaldate(self, test_name: str, arg: object) -> Compiled:
        wanted = _date(arg)
        test = _DATE_TESTS[test_name]
        folder = self.view.folder

        def check(i: int, m: Message) -> bool:
            return test(datetime.date.fromtimestamp(folder.internaldate(m)), wanted)

        return Compiled(check, 1)

    def _sent_date(self, test_name: str, arg: object) -> Compiled:
        wanted = _date(arg)
        test = _DATE_TESTS[test_name]
        record = self.reading.record

        def check(i: int, m: Message) -> bool:
            return test(searchindex.record_sent_date(record(m)) or NO_SENT_DATE, wanted)

        return Compiled(check, 2)

    def _text(self, key: str, value: str, field_name: str = "") -> Compiled:
        if key in ("BODY", "TEXT"):
            return self._body_text(key, value)

        wanted = fold(value)
        kind, name = ("ADDRESS", key) if key in _ADDRESS_KEYS else (key, field_name)
        position = searchindex.field_position(kind, name)
        if position is None or not searchindex.cacheable(wanted):
            return self._header_text(key, value, field_name)

        record = self.reading.record
        field = searchindex.record_field
        if key == "HEADER" and not wanted:
            return Compiled(lambda i, m: field(record(m), position) != "", 2)
        return Compiled(lambda i, m: wanted in field(record(m), position), 2)

    def _header_text(self, key: str, value: str, field_name: str) -> Compiled:
        head = self.reading.head

        def check(i: int, m: Message) -> bool:
            return _guarded(key, m, lambda: matches_text(b"", head(m), key, value, field_name))

        return Compiled(check, 3)

    def _body_text(self, key: str, value: str) -> Compiled:
        parsed = self.reading.parsed

        def check(i: int, m: Message) -> bool:
            return _guarded(key, m, lambda: parsed(m).matches_text(key, value))

        return Compiled(check, 4)


def _guarded(key: str, message: Message, match: Callable[[], bool]) -> bool:
    """A text match; a message our parser fails on is logged and does not match."""
    try:
        return match()
    except MessageGone:
        raise
    except Exception:
        log.failure("SEARCH {key} failed on message {uid}", key=key, uid=message.uid)
        return False


def _in_ranges(ranges: list[tuple[int, int]], number: int) -> bool:
    i = bisect_right(ranges, (number, 2**33)) - 1
    return i >= 0 and ranges[i][0] <= number <= ranges[i][1]


def _date(arg: object) -> datetime.date:
    assert isinstance(arg, tuple)
    year, month, day = arg
    return datetime.date(year, month, day)


def _decode(value: bytes) -> str:
    return value.decode("utf-8", "replace")
