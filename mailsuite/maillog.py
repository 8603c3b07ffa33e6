"""The operator's mail log: one event per thing that happened to a message.

Developers' debug events go through ordinary ``Logger`` instances in each
module. This log is the one an operator greps: every event is named after what
happened (received, rejected, queued, delivered, deferred, bounced,
auth_failed), carries the same named fields, and never a password.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

_log = Logger(namespace="mailsuite.maillog")


class MailLog:
    """Writes named mail events as structured ``twisted.logger`` events."""

    def __init__(self, logger: Logger | None = None) -> None:
        self._log = logger or _log

    def _emit(self, event: str, fmt: str, **fields: Any) -> None:
        self._log.info(fmt, mail_event=event, **fields)

    def received(self, *, session: str, sender: str, recipient: str, key: str) -> None:
        self._emit(
            "received",
            "received from={sender} to={recipient} key={key} session={session}",
            session=session,
            sender=sender,
            recipient=recipient,
            key=key,
        )

    def queued(self, *, session: str, sender: str, recipients: list[str], queue_id: str) -> None:
        self._emit(
            "queued",
            "queued id={queue_id} from={sender} to={recipients} session={session}",
            session=session,
            sender=sender,
            recipients=",".join(recipients),
            queue_id=queue_id,
        )

    def rejected(self, *, session: str, stage: str, reply: str, **fields: Any) -> None:
        self._emit(
            "rejected",
            "rejected at {stage}: {reply} session={session}",
            session=session,
            stage=stage,
            reply=reply,
            **fields,
        )

    def delivered(self, *, queue_id: str, recipient: str, reply: str, tls: bool) -> None:
        self._emit(
            "delivered",
            "delivered id={queue_id} to={recipient} tls={tls} reply={reply}",
            queue_id=queue_id,
            recipient=recipient,
            reply=reply,
            tls=tls,
        )

    def deferred(self, *, queue_id: str, recipient: str, reply: str, retry_at: float) -> None:
        self._emit(
            "deferred",
            "deferred id={queue_id} to={recipient} reply={reply} retry_at={retry_at}",
            queue_id=queue_id,
            recipient=recipient,
            reply=reply,
            retry_at=retry_at,
        )

    def bounced(self, *, queue_id: str, recipient: str, reply: str) -> None:
        self._emit(
            "bounced",
            "bounced id={queue_id} to={recipient} reply={reply}",
            queue_id=queue_id,
            recipient=recipient,
            reply=reply,
        )

    def auth_failed(self, *, protocol: str, session: str, username: str) -> None:
        self._emit(
            "auth_failed",
            "auth failed protocol={protocol} user={username} session={session}",
            protocol=protocol,
            session=session,
            username=username,
        )
