"""Handing an accepted message to the mailboxes and the queue, durably.

Every local user gets one copy however many recipients (addresses, aliases)
lead to them; remote addresses (relayed, or an alias's forwards) go into the
queue as one entry with the envelope sender unchanged.

``accept`` fires only when every local delivery and the queue write have
fired, each of them fsynced; only then does the session say 250. If any of
them fails, it fails after all have settled, and the client gets a
temporary error and sends the whole message again. A mailbox that already
got its copy gets a second one then: a duplicate is acceptable, a loss is
not, and SMTP has no way to acknowledge only some recipients after DATA.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from mailsuite.maillog import MailLog
from mailsuite.smtp.policy import Recipient


class Intake:
    """Delivers to local mailboxes through the store; queues the rest."""

    def __init__(self, store: Any, spool: Any, maillog: MailLog) -> None:
        self.store = store
        self.spool = spool
        self.maillog = maillog

    def accept(
        self, transaction_id: str, sender: str, recipients: list[Recipient], data: bytes
    ) -> defer.Deferred[None]:
        """Store ``data`` for every recipient; fails with the first error seen."""
        # Aliases are expanded here: two that reach one user give one copy.
        mailboxes = _unique(mailbox for r in recipients for mailbox in r.mailboxes)
        remote = _unique(address for r in recipients for address in r.remote)

        work = [self._deliver(transaction_id, sender, mailbox, data) for mailbox in mailboxes]
        if remote:
            work.append(self._queue(transaction_id, sender, remote, data))

        if len(work) == 1:
            # The common case, one mailbox: no need to gather.
            return work[0]
        gathered = defer.DeferredList(work, consumeErrors=True)
        return gathered.addCallback(_first_failure)

    def _deliver(
        self, transaction_id: str, sender: str, mailbox: str, data: bytes
    ) -> defer.Deferred[None]:
        def delivered(key: str) -> None:
            self.maillog.received(
                session=transaction_id, sender=sender, recipient=mailbox, key=key
            )

        return defer.maybeDeferred(self.store.deliver, mailbox, data).addCallback(delivered)

    def _queue(
        self, transaction_id: str, sender: str, recipients: list[str], data: bytes
    ) -> defer.Deferred[None]:
        def queued(queue_id: str) -> None:
            self.maillog.queued(
                session=transaction_id, sender=sender, recipients=recipients, queue_id=queue_id
            )

        return defer.maybeDeferred(self.spool.enqueue, sender, recipients, data).addCallback(
            queued
        )


def _unique(items: Any) -> list[str]:
    """In order, each once; local parts keep their case, so compare exactly."""
    return list(dict.fromkeys(items))


def _first_failure(results: list[tuple[bool, Any]]) -> None:
    for succeeded, result in results:
        if not succeeded:
            assert isinstance(result, Failure)
            result.raiseException()
