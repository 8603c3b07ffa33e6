r"""LIST and LSUB (RFC 3501 6.3.8-9), with the parts of LIST-EXTENDED clients send.

Besides the plain form, LIST takes RFC 5258's selection options
(SUBSCRIBED, REMOTE, SPECIAL-USE) and return options (SUBSCRIBED, CHILDREN,
SPECIAL-USE), because Thunderbird sends ``LIST (SUBSCRIBED) "" "*" RETURN
(SPECIAL-USE)`` to servers offering SPECIAL-USE (RFC 6154 section 5).
RECURSIVEMATCH, which needs CHILDINFO, is refused, and LIST-EXTENDED is not
advertised until the extension pass does it in full.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailsuite.imap.commands.base import Command, account_of, decode_mailbox
from mailsuite.imap.parser import Reader
from mailsuite.imap.responses import OK, Reply, bad, mailbox
from mailsuite.store import names

if TYPE_CHECKING:
    from mailsuite.imap.server import IMAPSession
    from mailsuite.store import Account

SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "SPECIAL-USE"})
RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})


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
    if reader.take(b" RETURN "):
        returns = frozenset(reader.paren_list(reader.keyword))
        extended = True
    reader.end()
    _check_options(select, returns)
    patterns = [decode_mailbox(p) if p else "" for p in raw_patterns]
    return ListRequest(reference, patterns, select, returns, extended)


def _check_options(select: frozenset[str], returns: frozenset[str]) -> None:
    if "RECURSIVEMATCH" in select:
        raise bad("RECURSIVEMATCH is not supported")
    unknown = (select - SELECT_OPTIONS) | (returns - RETURN_OPTIONS)
    if unknown:
        raise bad(f"Unknown LIST option {sorted(unknown)[0]}")


def list_command(session: IMAPSession, command: Command) -> Reply:
    request = parse_list(command.args)
    account = account_of(session)
    if request.patterns == [""]:
        # RFC 3501 6.3.8: an empty pattern asks for the delimiter.
        session.untagged(b'* LIST (\\Noselect) "/" ""\r\n')
        return Reply(OK, "LIST completed")
    for line in list_lines(account, request):
        session.untagged(line)
    return Reply(OK, "LIST completed")


def list_lines(account: Account, request: ListRequest) -> list[bytes]:
    existing = account.folder_names()
    subscribed = account.subscriptions()
    subscribed_set = set(subscribed)
    matchers = [Pattern(names.canonical(request.reference + p)) for p in request.patterns]
    parents = _parents(existing)

    if "SUBSCRIBED" in request.select:
        candidates = _ordered(subscribed)
    else:
        candidates = _ordered([*existing, *(p for p in parents if p not in existing)])
    existing_set = set(existing)
    known = existing_set | parents

    want_children = not request.extended or "CHILDREN" in request.returns
    want_special = (
        not request.extended or "SPECIAL-USE" in request.returns or "SPECIAL-USE" in request.select
    )
    want_subscribed = "SUBSCRIBED" in request.select or "SUBSCRIBED" in request.returns

    lines = []
    for name in candidates:
        if not any(m.matches(name) for m in matchers):
            continue
        special = account.special_use(name) if name in existing_set else None
        if "SPECIAL-USE" in request.select and special is None:
            continue
        attributes = []
        if name not in existing_set:
            attributes.append("\\NonExistent" if request.extended else "\\Noselect")
        if want_subscribed and name in subscribed_set:
            attributes.append("\\Subscribed")
        if want_children and name in known:
            attributes.append("\\HasChildren" if name in parents else "\\HasNoChildren")
        if want_special and special:
            attributes.append(special)
        lines.append(_line(b"LIST", attributes, name))
    return lines


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
