"""Collecting one IMAP command from its lines and literals, within limits.

A command is a line, or a line ending in ``{n}`` / ``{n+}`` (RFC 3501 4.3,
RFC 7888 LITERAL+), n octets, and more of the command after them. The
assembler sees each line, says what the session must do next (read n
octets, say ``+`` first or not, refuse, hang up) and hands over the parts
once the command is whole. It does no I/O, so every limit is tested alone.

Limits, and what happens past them:

- before login, no literal may exceed ``preauth_literal`` (8 KiB);
- APPEND's literals may reach the configured message size, any other
  command's ``literal`` (64 KiB), and all of one command ``command`` octets
  besides APPEND's message;
- a synchronizing literal over a limit is refused at once with
  ``NO [TOOBIG]``: the client has not sent it and will not (RFC 3501 7.5);
- a non-synchronizing one is already on its way (RFC 7888 section 4).
  Before login we hang up with ``BYE``: an unauthenticated peer gets none
  of our bandwidth. After login we read and discard it without keeping
  it, then answer ``NO [TOOBIG]``, so the client keeps its session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailsuite.imap.parser import literal_marker, split_tag
from mailsuite.imap.responses import NO, TOOBIG, Reply


@dataclass(frozen=True)
class AssemblyLimits:
    preauth_literal: int = 8 * 1024
    literal: int = 64 * 1024
    command: int = 256 * 1024
    message: int = 25 * 1024 * 1024


# -- what the session must do next ----------------------------------------------


@dataclass(frozen=True)
class Complete:
    """The command is whole: lines at even indexes, literals at odd ones."""

    parts: list[bytes]


@dataclass(frozen=True)
class ReadLiteral:
    """Read ``size`` octets; send ``+`` first when ``synchronizing``."""

    size: int
    synchronizing: bool
    keep: bool = True


@dataclass(frozen=True)
class Refuse:
    """Answer ``reply`` tagged with ``tag``; the command is over."""

    tag: bytes
    reply: Reply


@dataclass(frozen=True)
class HangUp:
    """Say ``BYE`` with this text and close."""

    text: str


Step = Complete | ReadLiteral | Refuse | HangUp

TOO_BIG = Reply(NO, "Literal too large", TOOBIG)
COMMAND_TOO_BIG = Reply(NO, "Command too large", TOOBIG)


@dataclass
class CommandAssembler:
    limits: AssemblyLimits = field(default_factory=AssemblyLimits)
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    tag: bytes = b""
    name: str = ""
    refused: Reply | None = None

    @property
    def in_progress(self) -> bool:
        return bool(self.parts)

    def reset(self) -> None:
        self.parts = []
        self.size = 0
        self.tag = b""
        self.name = ""
        self.refused = None

    def line(self, line: bytes, authenticated: bool) -> Step:
        if not self.parts:
            self.tag, self.name = split_tag(line)
        self.parts.append(line)
        self.size += len(line)
        if self.size > self._total_limit() and self.refused is None:
            self.refused = COMMAND_TOO_BIG
        marker = literal_marker(line)
        if marker is None:
            return self._finish()
        size, synchronizing = marker
        return self._literal(size, synchronizing, authenticated)

    def _literal(self, size: int, synchronizing: bool, authenticated: bool) -> Step:
        problem = self.refused or self._check(size, authenticated)
        if problem is None:
            return ReadLiteral(size, synchronizing)
        if synchronizing:
            return self._refuse(problem)
        if not authenticated:
            self.reset()
            return HangUp("Literal too large before login")
        self.refused = problem
        return ReadLiteral(size, synchronizing=False, keep=False)

    def _check(self, size: int, authenticated: bool) -> Reply | None:
        if not authenticated:
            return TOO_BIG if size > self.limits.preauth_literal else None
        allowed = self.limits.message if self.name == "APPEND" else self.limits.literal
        if size > allowed:
            return TOO_BIG
        if self.size + size > self._total_limit():
            return COMMAND_TOO_BIG
        return None

    def _total_limit(self) -> int:
        """All of one command; APPEND's message comes on top of the usual allowance."""
        if self.name == "APPEND":
            return self.limits.message + self.limits.command
        return self.limits.command

    def literal(self, data: bytes | None) -> None:
        """The literal's octets (None when it was discarded)."""
        self.parts.append(data or b"")
        self.size += len(data or b"")

    def _finish(self) -> Step:
        step: Step = Complete(self.parts)
        if self.refused is not None:
            step = Refuse(self.tag, self.refused)
        self.reset()
        return step

    def _refuse(self, reply: Reply) -> Refuse:
        step = Refuse(self.tag, reply)
        self.reset()
        return step
