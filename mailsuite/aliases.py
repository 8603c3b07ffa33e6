"""The aliases file: addresses in our domains that deliver to other addresses.

One alias per line, in the spirit of /etc/aliases but with whole addresses::

    # family mail goes to both parents; postmaster to alice
    family@example.com: alice@example.com, bob@example.com
    postmaster@example.com: alice@example.com
    alice@example.com: alice@example.com, alice.phone@example.net

A line whose first non-blank character is ``#`` is a comment (only whole
lines: ``#`` is a valid character in an address). Any other line that
starts with a space or tab continues the entry above it. Targets are
separated by commas and may be local users, other aliases, or addresses
anywhere (the message is then forwarded through the queue).

- An alias is looked up before the users, so ``alice@`` above keeps a copy
  for the user alice (an alias that names itself delivers to the user of
  that name) and forwards one. Nested aliases are expanded up to
  ``MAX_DEPTH`` levels; a loop stops where it closes (and is logged), and
  every target is delivered once.
- A malformed line is logged with its line number and skipped; so is an
  alias outside our domains, which would otherwise let its targets send as
  a stranger's address over submission. There is no catch-all
  (``@example.com: ...``): it would accept every guessed address, and with
  them the spam sent to them.

The server and the ``mailsuite alias`` command share the file as they share
the users file: every lookup first checks whether the file changed, and
every write replaces it atomically under a lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from twisted.logger import Logger

from mailsuite import durable
from mailsuite.config import Config, ConfigError
from mailsuite.users import UserError, split_address
from mailsuite.watchedfile import read_if_changed

log = Logger()

#: Aliases within aliases followed before the rest of a chain is dropped.
MAX_DEPTH = 10

#: Characters an address may not have here beyond what ``split_address`` refuses.
_FORBIDDEN = frozenset('<>",;')


class AliasError(Exception):
    """A request the aliases file cannot honour, worded for the operator."""


def alias_key(address: str) -> str:
    """How aliases are matched: the whole address without regard to case.

    The users file matches the same way (``UserDatabase.canonical``), so an
    alias and a user with the same address are the same address. A non-ASCII
    domain is compared in its IDNA form, as the SMTP server sees it.
    """
    local, _, domain = address.strip().rpartition("@")
    if not domain.isascii():
        with suppress(UnicodeError):
            domain = domain.encode("idna").decode("ascii")
    return f"{local}@{domain}".lower()


def check_address(address: str) -> str:
    """``address`` stripped, or ``AliasError`` saying what is wrong with it."""
    address = address.strip()
    if address.startswith("@"):
        raise AliasError(f"{address!r}: catch-all aliases (@domain) are not supported")
    try:
        split_address(address)
    except UserError as e:
        raise AliasError(str(e)) from None
    if any(c in _FORBIDDEN for c in address):
        raise AliasError(f'{address!r} contains one of < > " , ;')
    return address


@dataclass
class _Entry:
    """Lines of the file: one alias (and its continuation lines), or kept text."""

    texts: list[str]
    number: int = 0
    alias: str | None = None
    targets: list[str] = field(default_factory=list)

    @property
    def continuable(self) -> bool:
        """Whether a following indented line belongs to this entry."""
        first = self.texts[0].strip() if self.texts else ""
        return bool(first) and not first.startswith("#")


def open_aliases(config: Config) -> AliasTable:
    """The aliases file, read once now so a permission problem stops start-up."""
    table = AliasTable(config.aliases, config.domains)
    try:
        table.aliases()
    except OSError as e:
        where = config.path or "built-in defaults"
        raise ConfigError(f"{where}: key 'aliases': {config.aliases}: cannot read: {e.strerror}")
    return table


class AliasTable:
    """The aliases file, reread whenever it changes on disk.

    ``domains``, when given, are the only domains an alias may be in; lines
    for others are logged and ignored. The server always gives them.
    """

    def __init__(self, path: str, domains: Collection[str] | None = None) -> None:
        self.path = path
        self.domains = None if domains is None else {d.lower() for d in domains}
        self._entries: list[_Entry] = []
        self._index: dict[str, _Entry] = {}
        #: alias_key -> expansion, worked out once per reload.
        self._leaves: dict[str, list[str]] = {}
        self._signature: tuple[int, int, int] | None = None
        self._lock = threading.RLock()

    # -- reading -------------------------------------------------------------

    def aliases(self) -> dict[str, list[str]]:
        """Every alias as written, with its targets as written, in file order."""
        with self._lock:
            self._refresh()
            return {alias: list(entry.targets) for alias, entry in self._aliases()}

    def targets(self, alias: str) -> list[str] | None:
        """The targets the file gives ``alias``; None if it is no alias."""
        with self._lock:
            self._refresh()
            entry = self._index.get(alias_key(alias))
            return list(entry.targets) if entry else None

    def expand(self, address: str) -> list[str] | None:
        """Where mail for ``address`` goes, aliases resolved; None if it is no alias.

        The result holds users' and remote addresses as the file spells them,
        each once, in the order first met.
        """
        with self._lock:
            self._refresh()
            leaves = self._leaves.get(alias_key(address))
            return list(leaves) if leaves is not None else None

    def expansions(self) -> dict[str, list[str]]:
        """Every alias with its expansion: who owns which alias, for sending."""
        with self._lock:
            self._refresh()
            return {alias: list(self._leaves[alias_key(alias)]) for alias, _ in self._aliases()}

    def _aliases(self) -> Iterator[tuple[str, _Entry]]:
        for entry in self._entries:
            if entry.alias is not None and self._index.get(alias_key(entry.alias)) is entry:
                yield entry.alias, entry

    def _expand(self, alias: str) -> list[str]:
        """Follow ``alias`` down to users and remote addresses (on every reload)."""
        found: dict[str, str] = {}
        expanded: set[str] = set()

        def walk(target: str, depth: int, path: tuple[str, ...]) -> None:
            key = alias_key(target)
            entry = self._index.get(key)
            if entry is None or key in path:
                # A user, a remote address, or an alias naming itself (or
                # closing a loop): mail stops here, for the user of that name.
                if key in path[:-1]:
                    self._log_loop(alias, target)
                found.setdefault(key, target)
                return
            if key in expanded:
                return
            if depth >= MAX_DEPTH:
                log.warn(
                    "{path}: {start} leads more than {depth} aliases deep, to {alias}; "
                    "the rest of that chain is ignored",
                    path=self.path,
                    start=alias,
                    depth=MAX_DEPTH,
                    alias=target,
                )
                return

            expanded.add(key)
            for inner in entry.targets:
                walk(inner, depth + 1, (*path, key))

        walk(alias, 0, ())
        return list(found.values())

    def _log_loop(self, alias: str, target: str) -> None:
        log.warn(
            "{path}: the aliases of {alias} loop back to {target}; "
            "mail stops there, for a user of that name if there is one",
            path=self.path,
            alias=alias,
            target=target,
        )

    def _refresh(self) -> None:
        """Reread the file if its inode, size or mtime changed."""
        lines, signature = read_if_changed(self.path, self._signature)
        if lines is not None:
            self._load(lines, signature)

    def _load(self, texts: list[str], signature: tuple[int, int, int] | None) -> None:
        entries = self._parse(texts)

        index: dict[str, _Entry] = {}
        for entry in entries:
            if entry.alias is None:
                continue
            key = alias_key(entry.alias)
            if key in index:
                self._warn(entry, f"{entry.alias} is listed twice; the first entry counts")
                continue
            index[key] = entry

        self._entries = entries
        self._index = index
        self._leaves = {key: self._expand(entry.alias or key) for key, entry in index.items()}
        self._signature = signature

    def _parse(self, texts: list[str]) -> list[_Entry]:
        """Group continuation lines with their entry, then read each entry."""
        entries: list[_Entry] = []
        for number, text in enumerate(texts, 1):
            stripped = text.strip()
            indented = text[:1] in (" ", "\t") and stripped and not stripped.startswith("#")
            if indented and entries and entries[-1].continuable:
                entries[-1].texts.append(text)
                continue
            entries.append(_Entry([text], number))

        for entry in entries:
            self._read(entry)
        return entries

    def _read(self, entry: _Entry) -> None:
        stripped = " ".join(text.strip() for text in entry.texts).strip()
        if not stripped or stripped.startswith("#"):
            return

        try:
            alias, targets = self._alias_line(stripped)
        except AliasError as e:
            self._warn(entry, str(e))
            return
        entry.alias = alias
        entry.targets = targets

    def _alias_line(self, text: str) -> tuple[str, list[str]]:
        alias, colon, rest = text.partition(":")
        if not colon:
            raise AliasError("not of the form alias@domain: target@domain, ...")
        alias = check_address(alias)
        if self.domains is not None and alias_key(alias).rpartition("@")[2] not in self.domains:
            raise AliasError(f"{alias} is not in one of this server's domains")

        targets = [check_address(t) for t in rest.split(",") if t.strip()]
        if not targets:
            raise AliasError(f"{alias} has no targets")
        return alias, _unique(targets)

    def _warn(self, entry: _Entry, problem: str) -> None:
        log.warn(
            "{path} line {line}: {problem}; the line is ignored",
            path=self.path,
            line=entry.number,
            problem=problem,
        )

    # -- writing -------------------------------------------------------------

    def add(self, alias: str, targets: list[str]) -> tuple[str, list[str]]:
        """Create ``alias``, or add ``targets`` to it.

        Returns the alias as the file spells it, and all its targets.
        """
        alias = check_address(alias)
        new = [check_address(t) for t in targets]
        if not new:
            raise AliasError(f"{alias} needs at least one target")

        with self._writing():
            entry = self._index.get(alias_key(alias))
            if entry is None:
                entry = _Entry([], alias=alias)
                self._entries.append(entry)

            entry.targets = _unique(entry.targets + new)
            stored = entry.alias or alias
            entry.texts = [f"{stored}: {', '.join(entry.targets)}"]
            return stored, list(entry.targets)

    def delete(self, alias: str) -> str:
        """Remove ``alias``; returns it as the file spelled it."""
        key = alias_key(alias)
        with self._writing():
            entry = self._index.get(key)
            if entry is None or entry.alias is None:
                raise AliasError(f"there is no alias {alias}")
            # A second entry for the same alias (ignored so far) goes too.
            self._entries = [
                e for e in self._entries if e.alias is None or alias_key(e.alias) != key
            ]
            return entry.alias

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Read fresh, let the caller edit the entries, then replace the file.

        The lock file serialises ``mailsuite alias`` commands, so neither
        writes over a change the other just made.
        """
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o700, exist_ok=True)

        with self._lock, _file_lock(self.path + ".lock"):
            self._signature = None
            self._refresh()
            try:
                yield
                data = "".join(text + "\n" for entry in self._entries for text in entry.texts)
                durable.replace_file(self.path, data.encode("utf-8", "surrogateescape"))
            finally:
                # Whether or not the edit went through, the file is the truth.
                self._signature = None
                self._refresh()


def _unique(addresses: list[str]) -> list[str]:
    """In order, each address once, compared as aliases are."""
    first: dict[str, str] = {}
    for address in addresses:
        first.setdefault(alias_key(address), address)
    return list(first.values())


@contextmanager
def _file_lock(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
