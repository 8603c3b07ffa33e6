"""What every protocol factory is built from: one object, passed in.

Nothing here is global: tests build a context around a ``task.Clock`` or a
``MemoryReactor``, a temporary store and an in-memory user list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailsuite.config import Config
from mailsuite.maillog import MailLog

if TYPE_CHECKING:
    from mailsuite.store import Store


@dataclass
class ServiceContext:
    config: Config
    #: The reactor (or a test clock): callLater, threads, TCP.
    reactor: Any
    store: Store
    #: A ``twisted.cred`` checker for ``IUsernamePassword``; its Deferred fires
    #: with the canonical address, or fails with ``UnauthorizedLogin`` after
    #: the configured delay.
    checker: Any
    #: Server-side TLS options (``twisted.internet.ssl.CertificateOptions``).
    tls: Any
    #: The outbound queue; ``spool.enqueue(sender, recipients, data)`` returns a
    #: Deferred that fires with the queue id once the message is fsynced.
    spool: Any
    maillog: MailLog
    #: The aliases file (``mailsuite.aliases.AliasTable``), shared by the SMTP
    #: listeners and the relayer; None where a test has no aliases.
    aliases: Any = None
