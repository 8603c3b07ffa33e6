"""GETQUOTA, GETQUOTAROOT and SETQUOTA (RFC 9208), over one root per user.

Every folder of a user shares one quota root, named ``""``, limited by
``limits.quota`` with the STORAGE resource (in units of 1024 octets, RFC
9208 5.1). Limits are the operator's to set, so SETQUOTA is refused. QUOTA
is advertised only when a quota is configured; without one, a mailbox has
no quota root and GETQUOTA finds none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailsuite import quota
from mailsuite.imap.commands.base import Command, account_of, mailbox_argument
from mailsuite.imap.responses import CANNOT, NONEXISTENT, OK, Reply, mailbox, no

if TYPE_CHECKING:
    from mailsuite.imap.server import IMAPSession

ROOT = b'""'


def quota_limit(session: IMAPSession) -> int:
    return session.ctx.config.limits.quota


def _quota_response(session: IMAPSession) -> bytes:
    used = quota.storage_used(account_of(session))
    limit = quota_limit(session)
    return b"* QUOTA %s (STORAGE %d %d)\r\n" % (ROOT, _kib(used), limit // 1024)


def _kib(octets: int) -> int:
    return (octets + 1023) // 1024


def getquotaroot(session: IMAPSession, command: Command) -> Reply:
    """RFC 9208 4.3.2: the roots of a mailbox (ours: one), and their usage."""
    reader = command.args
    reader.space()
    name = mailbox_argument(reader)
    reader.end()
    folder = account_of(session).folder(name, create_inbox=True)
    if not quota_limit(session):
        session.untagged(b"* QUOTAROOT " + mailbox(folder.name) + b"\r\n")
        return Reply(OK, "GETQUOTAROOT completed")
    session.untagged(b"* QUOTAROOT " + mailbox(folder.name) + b" " + ROOT + b"\r\n")
    session.untagged(_quota_response(session))
    return Reply(OK, "GETQUOTAROOT completed")


def getquota(session: IMAPSession, command: Command) -> Reply:
    """RFC 9208 4.2: the usage and limit of a root."""
    reader = command.args
    reader.space()
    root = reader.astring()
    reader.end()
    if root or not quota_limit(session):
        raise no("No such quota root", NONEXISTENT)
    session.untagged(_quota_response(session))
    return Reply(OK, "GETQUOTA completed")


def setquota(session: IMAPSession, command: Command) -> Reply:
    """RFC 9208 4.1.3: limits come from the server's configuration, not from clients."""
    raise no("Quotas are set by the administrator", CANNOT)
