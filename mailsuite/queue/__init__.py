"""The outbound queue: messages accepted for remote recipients wait here.

``spool`` keeps them durably on disk; the relayer (its own module) delivers
from it.
"""

from mailsuite.queue.spool import QueuedRecipient, QueueEntry, Spool

__all__ = ["QueueEntry", "QueuedRecipient", "Spool"]
