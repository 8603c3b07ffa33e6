"""Long commands share the reactor: work in slices of a time budget, then let others run.

One process serves every IMAP session, so a SEARCH BODY over 10,000
messages or a FETCH of every body must not hold the reactor for seconds:
other clients' NOOPs, deliveries and IDLE updates would wait behind it. A
``Slicer`` measures a command's work against the reactor's own clock (passed
in, so tests drive it with ``task.Clock``) and, once a slice has used its
budget, waits one reactor turn, in which pending I/O and other sessions'
commands are served.

Reads of message files stay on the reactor thread: they come from the page
cache in microseconds, and a thread hand-off per message would cost more
than it saves while the GIL serialises the parsing anyway.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task

#: Reactor time one slice of a long command may use before it lets others run.
SLICE_SECONDS = 0.02

#: Reactor turns given up at each pause.
TURNS = 2


class Slicer:
    """Tells a long loop when to yield, and yields for it."""

    def __init__(self, reactor: Any, budget: float | None = None) -> None:
        self._reactor = reactor
        self._budget = SLICE_SECONDS if budget is None else budget
        self._started = reactor.seconds()
        #: How many times the work has let the reactor run (for tests and logs).
        self.pauses = 0

    def due(self) -> bool:
        """The current slice has used its budget."""
        return bool(self._reactor.seconds() - self._started >= self._budget)

    async def pause(self) -> None:
        """Let the reactor run, then start a new slice.

        Two turns: in the first, other sessions' commands are read and
        answered; Twisted sends what they wrote in the next one, so a NOOP
        waits one slice, not two.
        """
        for _turn in range(TURNS):
            await task.deferLater(self._reactor, 0, lambda: None)
        self.pauses += 1
        self._started = self._reactor.seconds()
