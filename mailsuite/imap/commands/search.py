"""SEARCH and UID SEARCH (RFC 3501 6.4.4).

The parsed keys are compiled into tests, each with a cost: flags, sizes,
UIDs and message numbers come from folder metadata; dates need the file's
mtime; text keys read and parse the message (``ParsedMessage.matches_text``
decides what each key sees, as Dovecot does). An AND tries cheap tests
first, so ``SEEN LARGER 5000 BODY x`` opens only the files that pass the
first two. Messages read for SEARCH do not displace the FETCH cache.

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

from mailsuite.imap.cache import CachedMessage, MessageCache
from mailsuite.imap.commands.base import Command, selected_of
from mailsuite.imap.flags import letter_of
from mailsuite.imap.parser import And, Key, Not, Or, SearchKey, SequenceSet, parse_search
from mailsuite.imap.responses import BADCHARSET, OK, Reply, bad, no
from mailsuite.imap.selected import SelectedMailbox
from mailsuite.store import Folder, Message, MessageGone

if TYPE_CHECKING:
    from mailsuite.imap.message import ParsedMessage
    from mailsuite.imap.server import IMAPSession

log = Logger()

CHARSETS = ("UTF-8", "US-ASCII")

#: Dovecot's reading of a message without a usable Date: header.
NO_SENT_DATE = datetime.date(1970, 1, 1)

_FLAG_LETTERS = {
    "ANSWERED": "R",
    "DELETED": "T",
    "DRAFT": "D",
    "FLAGGED": "F",
    "SEEN": "S",
}
_TEXT_KEYS = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_DATE_TESTS: dict[str, Callable[[datetime.date, datetime.date], bool]] = {
    "BEFORE": lambda day, wanted: day < wanted,
    "ON": lambda day, wanted: day == wanted,
    "SINCE": lambda day, wanted: day >= wanted,
}


class Texts:
    """Reads and parses messages for text keys; the last one is kept for the next key.

    Messages read here do not enter the FETCH cache, so one SEARCH over a
    large mailbox does not push out what the client is reading.
    """

    def __init__(self, folder: Folder, cache: MessageCache) -> None:
        self._folder = folder
        self._cache = cache
        self._last: tuple[Message | None, ParsedMessage | None] = (None, None)

    def parsed(self, message: Message) -> ParsedMessage:
        last, parsed = self._last
        if last is message and parsed is not None:
            return parsed
        entry = self._cache.peek(self._folder, message)
        if entry is None:
            entry = CachedMessage(self._folder.read(message))
        self._last = (message, entry.parsed)
        return entry.parsed


#: A test of one message, given its 0-based position in the view.
Test = Callable[[int, Message], bool]


@dataclass(frozen=True)
class Compiled:
    test: Test
    #: 0: metadata only; 1: the file's mtime; 2: the message text.
    cost: int


def search(session: IMAPSession, command: Command) -> Reply:
    reader = command.args
    reader.space()
    program = parse_search(reader)
    if program.charset is not None and program.charset not in CHARSETS:
        raise no("Unsupported charset", BADCHARSET)

    view = selected_of(session)
    test = Compiler(view, Texts(view.folder, session.factory.cache)).compile(program.key).test
    found = []
    for position, message in enumerate(view.messages):
        try:
            matched = test(position, message)
        except MessageGone:
            continue
        if matched:
            found.append(message.uid if command.uid else position + 1)

    session.untagged(b"* SEARCH" + b"".join(b" %d" % n for n in found) + b"\r\n")
    return Reply(OK, "SEARCH completed")


class Compiler:
    """Turns search keys into tests over one selected mailbox."""

    def __init__(self, view: SelectedMailbox, texts: Texts) -> None:
        self.view = view
        self.texts = texts

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
        parsed = self.texts.parsed
        return Compiled(lambda i, m: test(parsed(m).sent_date() or NO_SENT_DATE, wanted), 2)

    def _text(self, key: str, value: str, field_name: str = "") -> Compiled:
        parsed = self.texts.parsed

        def check(i: int, m: Message) -> bool:
            try:
                return parsed(m).matches_text(key, value, field_name)
            except MessageGone:
                raise
            except Exception:
                log.failure("SEARCH {key} failed on message {uid}", key=key, uid=m.uid)
                return False

        return Compiled(check, 2)


def _in_ranges(ranges: list[tuple[int, int]], number: int) -> bool:
    i = bisect_right(ranges, (number, 2**33)) - 1
    return i >= 0 and ranges[i][0] <= number <= ranges[i][1]


def _date(arg: object) -> datetime.date:
    assert isinstance(arg, tuple)
    year, month, day = arg
    return datetime.date(year, month, day)


def _decode(value: bytes) -> str:
    return value.decode("utf-8", "replace")
