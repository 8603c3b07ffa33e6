"""Long store work done in slices, so one session does not stall the others.

All sessions share one reactor. Taking the sizes of 10,000 messages that
another program delivered (each file read once) or marking 10,000 messages
seen at QUIT takes a noticeable fraction of a second; done at once, every
other client would wait that long. The work is written as a generator that
yields after each small step, and ``run_in_slices`` runs steps until its
time budget is spent, then lets the reactor serve others before going on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

#: Seconds of work before other sessions get a turn.
SLICE_SECONDS = 0.02


def run_in_slices(
    clock: Any, work: Iterator[object], budget: float = SLICE_SECONDS
) -> defer.Deferred[None]:
    """Run ``work`` to its end in slices of ``budget`` seconds.

    The first slice runs at once, so short work finishes before this
    returns. The Deferred fails with whatever exception ``work`` raised.
    """
    done: defer.Deferred[None] = defer.Deferred()

    def run_slice() -> None:
        deadline = time.monotonic() + budget
        try:
            for _ in work:
                if time.monotonic() >= deadline:
                    clock.callLater(0, run_slice)
                    return
        except Exception:
            done.errback(Failure())
            return
        done.callback(None)

    run_slice()
    return done
