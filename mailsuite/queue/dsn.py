"""Delivery status notifications: bounces and delay notices (RFC 3464, RFC 3462).

A report is ``multipart/report; report-type=delivery-status`` with three
parts: a few sentences for the person, the ``message/delivery-status``
fields for their software, and the original message's header as
``text/rfc822-headers`` (the body is left out: it may be large, and the
sender has it). It comes from ``MAILER-DAEMON@<hostname>`` and is sent with
the null reverse-path ``<>``, so it can never itself cause a bounce
(RFC 5321 section 6.1); ``Auto-Submitted`` keeps vacation responders quiet
(RFC 3834).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Literal

#: At most this much of the original header goes back to the sender.
MAX_ORIGINAL_HEADER = 64 * 1024

#: Folded field lines are kept under this many characters (RFC 5322 2.1.1).
FOLD_WIDTH = 76

Action = Literal["failed", "delayed"]


@dataclass(frozen=True)
class RecipientReport:
    """One recipient's lines in a report."""

    address: str
    action: Action
    #: The RFC 3463 status, e.g. "5.1.1".
    status: str
    #: The reply that decided it, e.g. "550 5.1.1 no such user".
    diagnostic: str | None = None
    #: The host that gave it, when a remote host did.
    remote_mta: str | None = None
    last_attempt: float | None = None


@dataclass(frozen=True)
class Report:
    """Everything one DSN says."""

    #: Our host name: Reporting-MTA and MAILER-DAEMON's domain.
    hostname: str
    #: The original envelope sender, who gets this report.
    sender: str
    queue_id: str
    arrival: float
    recipients: Sequence[RecipientReport]
    original_header: bytes
    now: float
    #: For a delay notice: when we will stop trying.
    retry_until: float | None = None


def build(report: Report) -> bytes:
    """The whole report as a message with CRLF line ends, ready to queue."""
    if not report.recipients:
        raise ValueError("a delivery status notification needs at least one recipient")

    boundary = f"=_mailsuite_{secrets.token_hex(12)}"
    parts = [
        _human_part(report),
        _status_part(report),
        _header_part(report.original_header),
    ]

    lines = _top_header(report, boundary)
    lines.append("")
    lines.append("This is a MIME-encapsulated message.")
    lines.append("")
    message = _crlf(lines)
    for part in parts:
        message += f"--{boundary}\r\n".encode() + part + b"\r\n"
    message += f"--{boundary}--\r\n".encode()
    return message


def is_delay(report: Report) -> bool:
    return all(r.action == "delayed" for r in report.recipients)


def _top_header(report: Report, boundary: str) -> list[str]:
    subject = (
        "Delayed Mail (still being retried)"
        if is_delay(report)
        else "Undelivered Mail Returned to Sender"
    )
    daemon = f"MAILER-DAEMON@{report.hostname}"
    message_id = f"<{report.queue_id or 'dsn'}.{secrets.token_hex(6)}@{report.hostname}>"
    return [
        f"From: Mail Delivery System <{daemon}>",
        f"To: <{_safe(report.sender)}>",
        f"Subject: {subject}",
        f"Date: {_date(report.now)}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]


def _human_part(report: Report) -> bytes:
    lines = ["Content-Type: text/plain; charset=us-ascii", "Content-Description: Notification", ""]
    lines += [f"This is the mail system at {report.hostname}.", ""]
    if is_delay(report):
        lines += [
            "Your message could not be delivered yet to the recipients below.",
            "It is still in the queue, and delivery will be tried again.",
        ]
        if report.retry_until is not None:
            lines.append(f"Attempts stop at {_date(report.retry_until)}.")
        lines += ["You do not need to send it again.", ""]
    else:
        lines += [
            "I'm sorry to have to tell you that your message could not be",
            "delivered to the recipients below. This is a permanent error.",
            "",
        ]

    for recipient in report.recipients:
        reason = recipient.diagnostic or f"status {recipient.status}"
        where = f" (from {recipient.remote_mta})" if recipient.remote_mta else ""
        lines += _fold(f"<{_safe(recipient.address)}>: {_safe(reason)}{where}", indent="    ")
        lines.append("")
    return _crlf(lines)


def _status_part(report: Report) -> bytes:
    """RFC 3464 section 2: per-message fields, then a block per recipient."""
    lines = ["Content-Type: message/delivery-status", "Content-Description: Delivery report", ""]
    lines.append(f"Reporting-MTA: dns; {report.hostname}")
    if report.queue_id:
        lines.append(f"X-Mailsuite-Queue-ID: {report.queue_id}")
    lines.append(f"Arrival-Date: {_date(report.arrival)}")

    for recipient in report.recipients:
        lines.append("")
        lines.append(f"Final-Recipient: rfc822; {_safe(recipient.address)}")
        lines.append(f"Action: {recipient.action}")
        lines.append(f"Status: {recipient.status}")
        if recipient.remote_mta:
            lines.append(f"Remote-MTA: dns; {_safe(recipient.remote_mta)}")
        if recipient.diagnostic:
            lines += _fold(f"Diagnostic-Code: smtp; {_safe(recipient.diagnostic)}")
        if recipient.last_attempt is not None:
            lines.append(f"Last-Attempt-Date: {_date(recipient.last_attempt)}")
        if recipient.action == "delayed" and report.retry_until is not None:
            lines.append(f"Will-Retry-Until: {_date(report.retry_until)}")
    return _crlf(lines)


def _header_part(original: bytes) -> bytes:
    """The original header (its first 64 KiB, cut at a line end)."""
    header = original.replace(b"\r\n", b"\n").rstrip(b"\n")
    if len(header) > MAX_ORIGINAL_HEADER:
        header = header[:MAX_ORIGINAL_HEADER].rpartition(b"\n")[0]
    encoding = "7bit" if header.isascii() else "8bit"
    top = [
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered message headers",
        f"Content-Transfer-Encoding: {encoding}",
        "",
    ]
    body = header.replace(b"\r", b"").replace(b"\n", b"\r\n")
    return _crlf(top) + body + b"\r\n"


def _date(timestamp: float) -> str:
    """RFC 5322 date-time in UTC, "+0000" (not "-0000", which means "zone unknown")."""
    return format_datetime(datetime.fromtimestamp(timestamp, UTC))


def _safe(text: str) -> str:
    """Printable ASCII only: replies and addresses come from strangers."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _fold(line: str, indent: str = " ") -> list[str]:
    """Fold at spaces so no line passes ``FOLD_WIDTH`` where it can be helped."""
    words = line.split(" ")
    lines: list[str] = []
    current = words[0]
    for word in words[1:]:
        if len(current) + 1 + len(word) > FOLD_WIDTH:
            lines.append(current)
            current = indent + word
        else:
            current += " " + word
    lines.append(current)
    return lines


def _crlf(lines: list[str]) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode("ascii")
