"""IDLE (RFC 2177): changes pushed to the client as they happen, until DONE.

Changes made through the store (other sessions, SMTP delivery) reach the
selected view's listener at once, and the session writes them straight
away while idling. Changes made on disk by other programs are found by a
refresh every ``REFRESH_INTERVAL`` seconds. Every ``KEEPALIVE_INTERVAL``
seconds an ``* OK`` line keeps NAT and firewall state alive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from mailsuite.imap import responses
from mailsuite.imap.commands.base import PENDING, Command
from mailsuite.imap.responses import BAD, OK, Reply

if TYPE_CHECKING:
    from mailsuite.imap.server import IMAPSession

REFRESH_INTERVAL = 5.0
KEEPALIVE_INTERVAL = 120.0


class Idling:
    """One IDLE command in progress."""

    def __init__(self, session: IMAPSession, command: Command) -> None:
        self.session = session
        self.command = command
        self._since_keepalive = 0.0
        self._call: Any = None

    def start(self) -> None:
        session = self.session
        session.idling = self
        session.continuation = self.line
        session.write_now(responses.continuation("idling"))
        session.wake()
        self._schedule()

    def _schedule(self) -> None:
        self._call = self.session.clock.callLater(REFRESH_INTERVAL, self._tick)

    def _tick(self) -> None:
        self._call = None
        session = self.session
        if session.closed:
            return
        if session.selected is not None:
            session.selected.folder.refresh()
        self._since_keepalive += REFRESH_INTERVAL
        if self._since_keepalive >= KEEPALIVE_INTERVAL:
            self._since_keepalive = 0.0
            session.send(b"* OK Still here\r\n")
        self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.session.idling is self:
            self.session.idling = None
            self.session.continuation = None

    def line(self, line: bytes) -> defer.Deferred[Any] | None:
        self.stop()
        if line.upper() == b"DONE":
            self.session.finish(self.command, Reply(OK, "IDLE terminated"))
        else:
            self.session.finish(self.command, Reply(BAD, "Expected DONE"))
        return None


def idle(session: IMAPSession, command: Command) -> None:
    command.args.end()
    Idling(session, command).start()
    return PENDING
