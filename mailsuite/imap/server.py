"""The IMAP4rev1 server session (RFC 3501) and its factory.

``IMAPSession`` is a ``LineSession``: it gathers each command with its
literals (``assembly``), parses the tag and name, looks the command up in
the table for the session's state (``commands``), runs it, and writes the
pending untagged updates of the selected mailbox before the tagged reply.
Store errors, refusals and unexpected failures become replies in one place,
``_reply_for``. Everything the client sees of a command goes out in as few
writes as possible; long FETCH output waits for the transport to drain.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite.context import ServiceContext
from mailsuite.imap import responses
from mailsuite.imap.assembly import (
    AssemblyLimits,
    CommandAssembler,
    Complete,
    HangUp,
    ReadLiteral,
    Refuse,
)
from mailsuite.imap.cache import MessageCache
from mailsuite.imap.commands import allows_expunge, known, lookup
from mailsuite.imap.commands.anystate import capabilities
from mailsuite.imap.commands.base import CONDSTORE, PENDING, QRESYNC, Command, Handler, State
from mailsuite.imap.parser import ParseError, Reader
from mailsuite.imap.responses import BAD, INTERNAL_ERROR, CommandError, Reply
from mailsuite.imap.selected import RecentRegistry, SelectedMailbox
from mailsuite.lineproto import LineSession
from mailsuite.store import StoreError

if TYPE_CHECKING:
    from mailsuite.imap.commands.idle import Idling
    from mailsuite.store import Account

log = Logger()

#: Longest command line, CRLF excluded (Dovecot's default is the same).
MAX_LINE = 64 * 1024

#: Output is written once this much has gathered, then the rest waits for it.
WRITE_CHUNK = 64 * 1024


class Shared:
    """What every IMAP session over one store shares, whichever listener it came in on."""

    def __init__(self) -> None:
        self.cache = MessageCache()
        self.recent = RecentRegistry()


#: One ``Shared`` per store: the imap and imaps factories each get the same.
_SHARED: weakref.WeakKeyDictionary[Any, Shared] = weakref.WeakKeyDictionary()


class IMAPFactory(Factory):
    """Builds sessions on one listener, with the state all sessions of the store share."""

    def __init__(self, ctx: ServiceContext, implicit_tls: bool) -> None:
        self.ctx = ctx
        self.implicit_tls = implicit_tls
        shared = _SHARED.get(ctx.store)
        if shared is None:
            shared = _SHARED[ctx.store] = Shared()
        self.cache = shared.cache
        self.recent = shared.recent

    def buildProtocol(self, addr: Any) -> IMAPSession:
        return IMAPSession(self)


@implementer(IPushProducer)
class _WriteGate:
    """Tells a long command when the transport's send buffer is full."""

    def __init__(self) -> None:
        self.paused = False
        self._waiting: list[defer.Deferred[None]] = []

    def wait(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)
        return d

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def stopProducing(self) -> None:
        self.resumeProducing()


class IMAPSession(LineSession):
    """One client connection."""

    max_line_length = MAX_LINE

    def __init__(self, factory: IMAPFactory) -> None:
        ctx = factory.ctx
        super().__init__(ctx.reactor)
        self.factory = factory
        self.ctx = ctx
        self.secure = factory.implicit_tls
        self.idle_timeout = ctx.config.limits.imap_idle_timeout
        self.max_bad_commands = ctx.config.limits.bad_commands
        self.plaintext_on_loopback = ctx.config.auth.plaintext_on_loopback
        self.state = State.NOT_AUTHENTICATED
        self.user: str | None = None
        self.account: Account | None = None
        self.selected: SelectedMailbox | None = None
        #: Extensions turned on by ENABLE or by their first use (RFC 5161, RFC 7162 3.1).
        self.enabled: set[str] = set()
        limits = AssemblyLimits(message=ctx.config.limits.message_size)
        self._assembler = CommandAssembler(limits)
        self._literal_left = 0
        self._literal: bytearray | None = None
        #: Where the next line goes instead of the assembler (AUTHENTICATE, IDLE).
        self.continuation: Callable[[bytes], defer.Deferred[Any] | None] | None = None
        self.idling: Idling | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self._gate = _WriteGate()
        self._producing = False

    # -- connection life ---------------------------------------------------

    def session_started(self) -> None:
        caps = " ".join(self.capabilities())
        self.send(responses.untagged(f"OK [CAPABILITY {caps}] mailsuite IMAP4rev1 ready"))

    def session_ended(self) -> None:
        if self.idling is not None:
            self.idling.stop()
            self.idling = None
        self.set_selected(None)
        self._stop_producing()
        self._gate.stopProducing()

    def close(self) -> None:
        # Closed first, so a command waiting for the client to drain sees it
        # when the gate opens; the transport closes once the producer is gone.
        super().close()
        self._stop_producing()

    def timed_out(self) -> None:
        # RFC 3501 5.4: the autologout timer is at least 30 minutes.
        self.send(responses.untagged("BYE Autologout; idle for too long"))
        self.close()

    def too_many_bad_commands(self) -> None:
        self.send(responses.untagged("BYE Too many invalid commands"))
        self.close()

    def internal_error(self) -> None:
        self.send(responses.untagged(f"BYE [{responses.SERVERBUG}] Internal error"))
        self.close()

    def line_too_long(self) -> None:
        tag = self._assembler.tag if self._assembler.in_progress else b"*"
        self._assembler.reset()
        self._literal = None
        if self.continuation is not None:
            self.continuation(b"")
            return
        self.write_now(responses.tagged(tag, BAD, "Command line too long", responses.TOOBIG))
        self.bad_command()

    # -- state -------------------------------------------------------------

    @property
    def authenticated(self) -> bool:
        return self.state in (State.AUTHENTICATED, State.SELECTED)

    def capabilities(self) -> list[str]:
        return capabilities(self)

    def logged_in(self, address: str, account: Account) -> None:
        self.user = address
        self.account = account
        self.state = State.AUTHENTICATED

    def set_selected(self, view: SelectedMailbox | None) -> None:
        """Select ``view`` (or deselect) and release the previous one."""
        if self.selected is not None:
            self.selected.close()
        self.selected = view
        if self.authenticated:
            self.state = State.SELECTED if view is not None else State.AUTHENTICATED

    def open_view(self, name: str, readonly: bool) -> SelectedMailbox:
        """A view of folder ``name`` for this session; raises store errors."""
        assert self.account is not None
        folder = self.account.folder(name, create_inbox=True)
        folder.refresh()
        tracker = self.factory.recent.tracker(folder)
        view = SelectedMailbox(folder, readonly, tracker, self.wake)
        view.condstore = CONDSTORE in self.enabled
        view.qresync = QRESYNC in self.enabled
        return view

    def enable(self, extension: str) -> bool:
        """Turn on CONDSTORE or QRESYNC (which implies it); True if it was off.

        RFC 7162 3.1: a client that starts using CONDSTORE while a mailbox
        is selected is told that mailbox's HIGHESTMODSEQ.
        """
        if extension in self.enabled:
            return False
        self.enabled.add(extension)
        if extension == QRESYNC:
            self.enable(CONDSTORE)
        view = self.selected
        if view is not None:
            if extension == CONDSTORE:
                view.condstore = True
                self.untagged(responses.highest_modseq(view.folder.highest_modseq))
            view.qresync = QRESYNC in self.enabled
        return True

    def wake(self) -> None:
        """The selected folder changed; an idling client hears it at once."""
        if self.idling is not None and self.selected is not None:
            updates = self.selected.updates(allow_expunge=True)
            if updates:
                self.send(b"".join(updates))

    # -- output ------------------------------------------------------------

    def untagged(self, data: bytes) -> None:
        """Queue one or more complete untagged responses of the running command."""
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= WRITE_CHUNK:
            self.flush_output()

    def untagged_pieces(self, pieces: list[bytes]) -> None:
        """Queue responses given as pieces (FETCH: a head, then a literal's octets).

        The pieces are joined once, in ``flush_output``: a message body is not
        copied on its way there (each copy of a mailbox's bodies cost a visible
        share of download speed).
        """
        self._out.extend(pieces)
        self._out_size += sum(map(len, pieces))
        if self._out_size >= WRITE_CHUNK:
            self.flush_output()

    def flush_output(self) -> None:
        """Write what was queued, in one write."""
        if not self._out:
            return
        out = self._out
        self._out = []
        self._out_size = 0
        if sum(map(len, out)) >= WRITE_CHUNK:
            self._start_producing()
        # One join here is the only copy between the message file and the
        # transport; one write keeps each batch in as few segments as can be.
        self.send(out[0] if len(out) == 1 else b"".join(out))

    @property
    def write_blocked(self) -> bool:
        """The transport's send buffer is full: a long command should wait (``drain``)."""
        return self._gate.paused

    def drain(self) -> defer.Deferred[None]:
        """Fires when the client has taken enough of what was written."""
        if self._gate.paused and not self.closed:
            return self._gate.wait()
        return defer.succeed(None)

    def write_now(self, data: bytes) -> None:
        self._out.append(data)
        self.flush_output()

    def _start_producing(self) -> None:
        if not self._producing and not self.closed:
            self.transport.registerProducer(self._gate, True)
            self._producing = True

    def _stop_producing(self) -> None:
        if self._producing:
            self._producing = False
            self._gate.resumeProducing()
            self.transport.unregisterProducer()

    # -- input -------------------------------------------------------------

    def line_received(self, line: bytes) -> defer.Deferred[Any] | None:
        if self.continuation is not None:
            return self.continuation(line)
        step = self._assembler.line(line, self.authenticated)
        if isinstance(step, ReadLiteral):
            self._start_literal(step)
            return None
        if isinstance(step, Complete):
            return self._execute(step.parts)
        if isinstance(step, Refuse):
            self.write_now(step.reply.line(step.tag))
            return None
        assert isinstance(step, HangUp)
        self.write_now(responses.untagged(f"BYE [{responses.TOOBIG}] {step.text}"))
        self.close()
        return None

    def _start_literal(self, step: ReadLiteral) -> None:
        if step.synchronizing:
            self.write_now(responses.continuation("Ready for literal data"))
        self._literal_left = step.size
        self._literal = bytearray() if step.keep else None
        if step.size == 0:
            self._end_literal()
        else:
            self.set_raw_mode()

    def raw_received(self, data: bytes) -> defer.Deferred[Any] | None:
        take = min(self._literal_left, len(data))
        if self._literal is not None:
            self._literal += data[:take]
        self._literal_left -= take
        if self._literal_left == 0:
            self._end_literal()
            self.set_line_mode(data[take:])
        return None

    def _end_literal(self) -> None:
        literal, self._literal = self._literal, None
        self._assembler.literal(bytes(literal) if literal is not None else None)

    # -- running commands --------------------------------------------------

    def _execute(self, parts: list[bytes]) -> defer.Deferred[Any] | None:
        reader = Reader(parts)
        try:
            tag = reader.tag()
            reader.space()
            name = reader.keyword()
            if name == "UID":
                reader.space()
                name = "UID " + reader.keyword()
        except (ParseError, UnicodeDecodeError):
            self.write_now(responses.untagged(f"{BAD} Missing tag or command name"))
            self.bad_command()
            return None

        command = Command(tag, name, reader)
        handler = lookup(self.state, name)
        if handler is None:
            self._refuse_unknown(command)
            return None
        return self.run(command, handler)

    def _refuse_unknown(self, command: Command) -> None:
        if known(command.name):
            text = f"{command.name} is not valid in the {self.state.value} state"
        else:
            text = "Unknown command"
        self.write_now(responses.tagged(command.tag, BAD, text, responses.CLIENTBUG))
        self.bad_command()

    def run(self, command: Command, handler: Handler) -> defer.Deferred[Any] | None:
        """Run a handler; its reply (or failure) is written by ``finish``."""
        try:
            outcome = handler(self, command)
        except Exception as e:
            self.finish(command, self._reply_for(command, e, Failure()))
            return None
        if outcome is PENDING:
            return None
        if isinstance(outcome, Reply):
            self.finish(command, outcome)
            return None
        return self._await(command, outcome)

    def _await(
        self, command: Command, outcome: Coroutine[Any, Any, Reply]
    ) -> defer.Deferred[Any] | None:
        d = defer.ensureDeferred(outcome)
        d.addCallbacks(
            lambda reply: self.finish(command, reply),
            lambda failure: self.finish(command, self._reply_for(command, failure.value, failure)),
        )
        # A Deferred that already fired holds nothing; returning it would only
        # nest the next command's processing inside this one.
        return None if d.called else d

    def _reply_for(
        self, command: Command, error: BaseException, failure: Failure | None = None
    ) -> Reply:
        """The one place an exception from a command becomes its reply."""
        if isinstance(error, CommandError):
            return error.reply
        if isinstance(error, ParseError):
            return Reply(BAD, f"Syntax error: {error}")
        if isinstance(error, StoreError):
            reply = responses.store_error(error)
            if reply.code == responses.SERVERBUG:
                log.failure("store error in {command}", failure, command=command.name)
            return reply
        log.failure(
            "unexpected error in {command} from {peer}",
            failure or Failure(error),
            command=command.name,
            peer=self.peer,
        )
        return INTERNAL_ERROR

    def finish(self, command: Command, reply: Reply) -> None:
        """Write the selected mailbox's pending updates, then the tagged reply."""
        if self.closed:
            return
        if self.selected is not None:
            for update in self.selected.updates(allows_expunge(command.name)):
                self._out.append(update)
        self._out.append(reply.line(command.tag))
        self.flush_output()
        self._stop_producing()
        if self.state is State.LOGOUT:
            self.close()
        elif reply.status == BAD or reply.code == responses.AUTHENTICATIONFAILED:
            # Garbage and password guessing both count towards the BYE.
            self.bad_command()
