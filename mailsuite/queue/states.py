"""What an attempt's outcome does to a queued recipient: pure rules, no I/O.

The spool stores one ``state`` string per recipient. The relayer uses these:

- ``pending``: never tried;
- ``deferred``: tried, failed temporarily, retried at ``next_attempt``;
- ``delayed``: like ``deferred``, and the sender has had the one delay notice;
- ``delivered``: a remote (or the local store) took it; never sent again;
- ``failed``: failed for good; the sender is still owed a bounce;
- ``bounced``: failed for good and the bounce was sent (or none is due, for
  the null sender).

``failed`` then ``bounced`` makes "bounced exactly once" survive a crash: a
recipient found ``failed`` at start-up gets its bounce, one found
``bounced`` does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from mailsuite.queue.spool import QueuedRecipient, QueueEntry

PENDING = "pending"
DEFERRED = "deferred"
DELAYED = "delayed"
DELIVERED = "delivered"
FAILED = "failed"
BOUNCED = "bounced"

#: States still waiting for a delivery attempt.
WAITING = frozenset({PENDING, DEFERRED, DELAYED})

#: States that need nothing more, so an entry of only these can go.
DONE = frozenset({DELIVERED, BOUNCED})

OutcomeKind = Literal["delivered", "deferred", "failed"]

_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True)
class Outcome:
    """What one attempt did for one recipient, in SMTP's words."""

    kind: OutcomeKind
    #: The reply that decided it, e.g. "550 5.1.1 no such user".
    reply: str
    #: The remote host that answered, when one did (for the DSN's Remote-MTA).
    remote: str | None = None
    #: Whether the connection that carried it was encrypted.
    tls: bool = False


def delivered(reply: str, remote: str | None = None, tls: bool = False) -> Outcome:
    return Outcome("delivered", reply, remote, tls)


def deferred(reply: str, remote: str | None = None, tls: bool = False) -> Outcome:
    return Outcome("deferred", reply, remote, tls)


def failed(reply: str, remote: str | None = None, tls: bool = False) -> Outcome:
    return Outcome("failed", reply, remote, tls)


def from_reply(code: int, reply: str, remote: str | None, tls: bool) -> Outcome:
    """2xx delivered, 5xx failed, anything else deferred (RFC 5321 4.2.1)."""
    if 200 <= code < 300:
        return delivered(reply, remote, tls)
    if 500 <= code < 600:
        return failed(reply, remote, tls)
    return deferred(reply, remote, tls)


def retry_delay(attempts: int, schedule: Sequence[int]) -> int:
    """Seconds until the next try after ``attempts`` tries; the last value repeats."""
    index = min(max(attempts, 1), len(schedule)) - 1
    return schedule[index]


def apply(
    recipient: QueuedRecipient,
    outcome: Outcome,
    now: float,
    schedule: Sequence[int],
    expires: float,
) -> None:
    """Record ``outcome`` on ``recipient``; a deferral past ``expires`` fails it.

    The next try is never later than the expiry, so a message gets its last
    attempt on time and bounces then, not up to a retry interval late.
    """
    recipient.attempts += 1
    recipient.last_reply = outcome.reply

    if outcome.kind == "delivered":
        recipient.state = DELIVERED
    elif outcome.kind == "failed":
        recipient.state = FAILED
    elif now >= expires:
        recipient.state = FAILED
        recipient.last_reply = expired_reply(outcome.reply)
    else:
        if recipient.state != DELAYED:
            recipient.state = DEFERRED
        recipient.next_attempt = min(now + retry_delay(recipient.attempts, schedule), expires)


def expired_reply(last_reply: str | None) -> str:
    """The reply a recipient bounces with when the lifetime ran out (RFC 3463 X.4.7)."""
    if last_reply:
        return f"{last_reply} (gave up: delivery time expired, 4.4.7)"
    return "451 4.4.7 Delivery time expired"


def due(recipient: QueuedRecipient, now: float) -> bool:
    return recipient.state in WAITING and recipient.next_attempt <= now


def needs_attention(entry: QueueEntry, now: float) -> bool:
    """Something to do now: a due recipient, a bounce owed, or the entry is done."""
    if all(r.state in DONE for r in entry.recipients):
        return True
    return any(due(r, now) or r.state == FAILED for r in entry.recipients)


def next_wake(entries: Iterable[QueueEntry]) -> float | None:
    """The earliest ``next_attempt`` of any waiting recipient."""
    times = [r.next_attempt for e in entries for r in e.recipients if r.state in WAITING]
    return min(times) if times else None


def status_code(reply: str | None, default_class: str) -> str:
    """The RFC 3463 status of ``reply`` ("5.1.1"), else ``<class>.0.0``."""
    if reply:
        parts = reply.split()
        if len(parts) > 1 and _ENHANCED.match(parts[1]):
            return parts[1]
        if parts and parts[0][:1] in "45" and parts[0][:1].isdigit():
            return f"{parts[0][0]}.0.0"
    return f"{default_class}.0.0"
