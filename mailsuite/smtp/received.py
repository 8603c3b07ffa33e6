"""The trace header every accepted message gets (RFC 5321 4.4).

``Received: from <HELO name> ([<peer IP>]) by <our hostname> (mailsuite)
with <protocol> id <transaction id> for <recipient>; <date>`` where the
protocol name says how the message came (RFC 3848, RFC 6531 3.7.3):
ESMTP or SMTP, then S for TLS and A for an authenticated client, or the
UTF8SMTP forms when the transaction used SMTPUTF8. ``for`` is given only
for a single recipient, so Bcc recipients stay private. No reverse DNS
lookup: it would add a network wait to every message for a name most home
senders do not have; the peer's IP is what matters.

Everything in it was checked by the parser (the HELO name is printable
ASCII, addresses hold no control characters), so no client text can add a
header line.
"""

from __future__ import annotations

import functools
from email.utils import formatdate


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    base = "UTF8SMTP" if smtputf8 else "ESMTP" if esmtp else "SMTP"
    suffix = ("S" if tls else "") + ("A" if authenticated else "")
    return base + suffix


def address_literal(ip: str) -> str:
    """The peer as an RFC 5321 4.1.3 address literal."""
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


def received_header(
    *,
    helo: str,
    peer_ip: str,
    hostname: str,
    protocol: str,
    transaction_id: str,
    recipient: str | None,
    when: float,
) -> bytes:
    """The folded header, CRLF-terminated, ready to go before the message."""
    lines = [
        f"Received: from {helo} ({address_literal(peer_ip)})",
        f"\tby {hostname} (mailsuite) with {protocol} id {transaction_id}",
    ]
    date = _date(int(when))
    if recipient is not None:
        lines.append(f"\tfor <{recipient}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


@functools.lru_cache(maxsize=4)
def _date(second: int) -> str:
    """RFC 5322 date in local time; formatting it is dear, and it changes once a second."""
    return formatdate(second, localtime=True)
