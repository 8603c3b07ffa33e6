r"""LIST and LSUB (RFC 3501 6.3.8-9), LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819).

Besides the plain form, LIST takes RFC 5258's selection options
(SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE), several patterns, and the
return options SUBSCRIBED, CHILDREN, SPECIAL-USE and STATUS. Thunderbird
sends ``LIST (SUBSCRIBED) "" "*" RETURN (SPECIAL-USE)`` to servers offering
SPECIAL-USE (RFC 6154 section 5). With RECURSIVEMATCH, a name that does not
meet the selection criteria but has a descendant that does is listed with
``("CHILDINFO" (...))``; a subscribed name with no folder is \NonExistent.

Plain LIST answers with \HasChildren/\HasNoChildren (RFC 3348) and the
special-use attributes (RFC 6154 2); the extended form only with what its
return options ask for, as Dovecot does. A level that holds folders but is
not one itself is listed as \Noselect (\NonExistent in the extended form).

Patterns are matched by a small automaton over bit masks, in time linear in
the name whatever the client writes: a regular expression with many ``*``
could take exponential time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailsuite.imap.commands.base import Command, account_of, decode_mailbox
from mailsuite.imap.commands.mailboxes import read_status_items, status_response
from mailsuite.imap.parser import Reader
from mailsuite.imap.responses import OK, Reply, bad, mailbox
from mailsuite.store import StoreError, names

if TYPE_CHECKING:
    from mailsuite.imap.server import IMAPSession
    from mailsuite.store import Account

#: RFC 5258 3.1 and RFC 6154 5.1.
SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
#: RFC 5258 3.2, RFC 6154 5.1, RFC 5819 (STATUS).
RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
#: Selection options that filter (REMOTE does not: we have no remote mailboxes).
CRITERIA = frozenset({"SUBSCRIBED", "SPECIAL-USE"})


class Pattern:
    """A LIST pattern: ``*`` matches anything, ``%`` anything but the delimiter."""

    def __init__(self, pattern: str) -> None:
        tokens = _compress(pattern)
        self._literals = sum(1 for t in tokens if t not in ("*", "%"))
        self._final = 1 << len(tokens)
        self._any = 0
        self._level = 0
        self._char: dict[str, int] = {}
        for i, token in enumerate(tokens):
            if token == "*":
                self._any |= 1 << i
            elif token == "%":
                self._level |= 1 << i
            else:
                self._char[token] = self._char.get(token, 0) | (1 << i)
        self._wild = self._any | self._level

    def matches(self, name: str) -> bool:
        if self._literals > len(name):
            return False
        states = self._closure(1)
        for char in name:
            stay = self._any if char == names.DELIMITER else self._wild
            states = self._closure(((states & self._char.get(char, 0)) << 1) | (states & stay))
            if not states:
                return False
        return bool(states & self._final)

    def _closure(self, states: int) -> int:
        # A wildcard may match nothing; compressed patterns never have two in a row.
        return states | ((states & self._wild) << 1)


def _compress(pattern: str) -> list[str]:
    """Tokens of a pattern, each run of wildcards reduced to one (``%*`` is ``*``)."""
    tokens: list[str] = []
    for char in pattern:
        if char in "*%" and tokens and tokens[-1] in ("*", "%"):
            if char == "*":
                tokens[-1] = "*"
            continue
        tokens.append(char)
    return tokens


@dataclass
class ListRequest:
    reference: str
    patterns: list[str]
    select: frozenset[str]
    returns: frozenset[str]
    extended: bool
    #: LIST-STATUS (RFC 5819): the STATUS items asked for each listed mailbox.
    status: list[str] = field(default_factory=list)


def parse_list(reader: Reader) -> ListRequest:
    reader.space()
    select: frozenset[str] = frozenset()
    extended = False
    if reader.peek() == 0x28:
        select = frozenset(reader.paren_list(reader.keyword))
        reader.space()
        extended = True
    reference = decode_mailbox(reader.astring())
    reader.space()
    if reader.peek() == 0x28:
        raw_patterns = reader.paren_list(reader.list_mailbox)
        extended = True
    else:
        raw_patterns = [reader.list_mailbox()]
    returns: frozenset[str] = frozenset()
    status: list[str] = []
    if reader.take(b" RETURN "):
        returns, status = _return_options(reader)
        extended = True
    reader.end()
    _check_options(select, returns)
    patterns = [decode_mailbox(p) if p else "" for p in raw_patterns]
    return ListRequest(reference, patterns, select, returns, extended, status)


def _return_options(reader: Reader) -> tuple[frozenset[str], list[str]]:
    """``"(" [return-option *(SP return-option)] ")"``; STATUS takes its items."""
    names_seen: list[str] = []
    status: list[str] = []

    def option() -> str:
        name = reader.keyword()
        if name == "STATUS":
            reader.space()
            status.extend(read_status_items(reader))
        return name

    names_seen = reader.paren_list(option)
    return frozenset(names_seen), status


def _check_options(select: frozenset[str], returns: frozenset[str]) -> None:
    unknown = (select - SELECT_OPTIONS) | (returns - RETURN_OPTIONS)
    if unknown:
        raise bad(f"Unknown LIST option {sorted(unknown)[0]}")
    if "RECURSIVEMATCH" in select and not select & CRITERIA:
        # RFC 5258 3.1: RECURSIVEMATCH needs a selection option it can recurse on.
        raise bad("RECURSIVEMATCH needs another selection option")


def list_command(session: IMAPSession, command: Command) -> Reply:
    request = parse_list(command.args)
    account = account_of(session)
    if request.patterns == [""]:
        # RFC 3501 6.3.8: an empty pattern asks for the delimiter.
        session.untagged(b'* LIST (\\Noselect) "/" ""\r\n')
        return Reply(OK, "LIST completed")
    for entry in list_entries(account, request):
        session.untagged(entry.line)
        if request.status and entry.selectable:
            _status_after(session, entry.name, request.status)
    return Reply(OK, "LIST completed")


def _status_after(session: IMAPSession, name: str, items: list[str]) -> None:
    """RFC 5819: a STATUS after the LIST line; a folder gone meanwhile gets none."""
    try:
        folder = account_of(session).folder(name, create_inbox=True)
    except StoreError:
        return
    session.untagged(status_response(session, folder, items))


@dataclass(frozen=True)
class Entry:
    name: str
    line: bytes
    selectable: bool


class Listing:
    """What LIST needs to know of an account's folders, looked up once per command."""

    def __init__(self, account: Account, request: ListRequest) -> None:
        self.account = account
        self.request = request
        self.existing = set(account.folder_names())
        self.subscribed = set(account.subscriptions())
        self.parents = _parents(self.existing)
        self.criteria = request.select & CRITERIA
        self._special: dict[str, str | None] = {}

    def special(self, name: str) -> str | None:
        if name not in self._special:
            found = self.account.special_use(name) if name in self.existing else None
            self._special[name] = found
        return self._special[name]

    def satisfies(self, name: str) -> bool:
        """Whether ``name`` meets every selection criterion (RFC 5258 3.1)."""
        if "SUBSCRIBED" in self.criteria and name not in self.subscribed:
            return False
        return not ("SPECIAL-USE" in self.criteria and self.special(name) is None)

    def candidates(self) -> tuple[list[str], set[str]]:
        """Names to consider, and those listed only for CHILDINFO (RECURSIVEMATCH)."""
        if not self.criteria:
            return _ordered(self.existing | self.parents), set()
        pool = self.subscribed if "SUBSCRIBED" in self.criteria else self.existing
        chosen = {name for name in pool if self.satisfies(name)}
        childinfo: set[str] = set()
        if "RECURSIVEMATCH" in self.request.select:
            childinfo = _parents(chosen)
        return _ordered(chosen | childinfo), childinfo


def list_entries(account: Account, request: ListRequest) -> list[Entry]:
    listing = Listing(account, request)
    matchers = [Pattern(names.canonical(request.reference + p)) for p in request.patterns]
    names_, childinfo = listing.candidates()
    entries = []
    for name in names_:
        if any(m.matches(name) for m in matchers):
            entries.append(_entry(listing, name, name in childinfo))
    return entries


def list_lines(account: Account, request: ListRequest) -> list[bytes]:
    return [entry.line for entry in list_entries(account, request)]


def _entry(listing: Listing, name: str, has_matching_child: bool) -> Entry:
    """One LIST response: attributes by the return options, CHILDINFO when recursing."""
    request = listing.request
    exists = name in listing.existing
    matched = not listing.criteria or listing.satisfies(name)
    want_children = not request.extended or "CHILDREN" in request.returns
    want_special = not request.extended or bool(
        {"SPECIAL-USE"} & (request.returns | request.select)
    )
    want_subscribed = "SUBSCRIBED" in request.select or "SUBSCRIBED" in request.returns

    attributes = []
    if not exists:
        attributes.append("\\NonExistent" if request.extended else "\\Noselect")
    if want_subscribed and name in listing.subscribed:
        attributes.append("\\Subscribed")
    if want_children and (exists or name in listing.parents):
        attributes.append("\\HasChildren" if name in listing.parents else "\\HasNoChildren")
    special = listing.special(name)
    if want_special and special:
        attributes.append(special)
    line = _line(b"LIST", attributes, name)
    if has_matching_child and not matched:
        # RFC 5258 3.5: listed only because a child meets the criteria.
        criteria = " ".join(f'"{c}"' for c in sorted(listing.criteria))
        line = line[:-2] + f' ("CHILDINFO" ({criteria}))\r\n'.encode("ascii")
    return Entry(name, line, exists and matched)


def _parents(existing: Iterable[str]) -> set[str]:
    """Every name that has a folder below it."""
    parents = set()
    for name in existing:
        levels = name.split(names.DELIMITER)
        for depth in range(1, len(levels)):
            parents.add(names.DELIMITER.join(levels[:depth]))
    return parents


def _ordered(folder_names: Iterable[str]) -> list[str]:
    """INBOX first, then the rest sorted, each once."""
    unique = set(folder_names)
    rest = sorted(n for n in unique if n != names.INBOX)
    return [names.INBOX, *rest] if names.INBOX in unique else rest


def _line(kind: bytes, attributes: list[str], name: str) -> bytes:
    flags = " ".join(attributes).encode("ascii")
    return b"* " + kind + b" (" + flags + b') "/" ' + mailbox(name) + b"\r\n"


def lsub(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 6.3.9: subscribed names; a level above one, matched by ``%``, is \\Noselect."""
    reader = command.args
    reader.space()
    reference = decode_mailbox(reader.astring())
    reader.space()
    pattern = decode_mailbox(reader.list_mailbox())
    reader.end()

    account = account_of(session)
    subscribed = set(account.subscriptions())
    matcher = Pattern(names.canonical(reference + pattern))
    for name in _ordered(subscribed | _parents(subscribed)):
        if matcher.matches(name):
            attributes = [] if name in subscribed else ["\\Noselect"]
            session.untagged(_line(b"LSUB", attributes, name))
    return Reply(OK, "LSUB completed")
