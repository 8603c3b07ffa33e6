"""Delivery status notifications: RFC 3464 structure, and safe with hostile replies."""

from __future__ import annotations

import email
from email.message import Message

from twisted.trial import unittest

from mailsuite.queue import dsn

HEADER = b"Received: from x by y\r\nFrom: alice@example.com\r\nSubject: hello\r\n\r\n"


def report(**overrides: object) -> dsn.Report:
    fields: dict[str, object] = {
        "hostname": "mail.example.com",
        "sender": "alice@example.com",
        "queue_id": "20261204153000.9f3a1c2e",
        "arrival": 1_700_000_000.0,
        "recipients": [
            dsn.RecipientReport(
                "bob@remote.test",
                "failed",
                "5.1.1",
                "550 5.1.1 no such user",
                "mx.remote.test",
                1_700_000_100.0,
            )
        ],
        "original_header": HEADER,
        "now": 1_700_000_200.0,
    }
    fields.update(overrides)
    return dsn.Report(**fields)  # type: ignore[arg-type]


def parse(data: bytes) -> Message:
    return email.message_from_bytes(data)


class StructureTests(unittest.TestCase):
    def test_multipart_report_with_three_parts(self) -> None:
        """RFC 3462: text, message/delivery-status, then the original header."""
        message = parse(dsn.build(report()))

        self.assertEqual("multipart/report", message.get_content_type())
        self.assertEqual("delivery-status", message.get_param("report-type"))
        kinds = [part.get_content_type() for part in message.get_payload()]  # type: ignore[union-attr]
        self.assertEqual(["text/plain", "message/delivery-status", "text/rfc822-headers"], kinds)

    def test_from_mailer_daemon_auto_submitted(self) -> None:
        """It comes from MAILER-DAEMON@hostname and is marked auto-replied (RFC 3834)."""
        message = parse(dsn.build(report()))

        self.assertEqual("Mail Delivery System <MAILER-DAEMON@mail.example.com>", message["From"])
        self.assertEqual("<alice@example.com>", message["To"])
        self.assertEqual("auto-replied", message["Auto-Submitted"])
        self.assertEqual("Undelivered Mail Returned to Sender", message["Subject"])

    def test_delivery_status_fields(self) -> None:
        """Per-message and per-recipient fields as RFC 3464 section 2 names them."""
        message = parse(dsn.build(report()))
        status = message.get_payload()[1]  # type: ignore[index]
        per_message, per_recipient = status.get_payload()

        self.assertEqual("dns; mail.example.com", per_message["Reporting-MTA"])
        self.assertIn("2023", per_message["Arrival-Date"])
        self.assertEqual("rfc822; bob@remote.test", per_recipient["Final-Recipient"])
        self.assertEqual("failed", per_recipient["Action"])
        self.assertEqual("5.1.1", per_recipient["Status"])
        self.assertEqual("dns; mx.remote.test", per_recipient["Remote-MTA"])
        self.assertEqual("smtp; 550 5.1.1 no such user", per_recipient["Diagnostic-Code"])

    def test_original_header_returned_without_body(self) -> None:
        """The sender gets the header back, as text/rfc822-headers."""
        data = dsn.build(report())

        self.assertIn(b"Subject: hello\r\n", data)
        self.assertIn(b"Received: from x by y\r\n", data)

    def test_delay_notice(self) -> None:
        """A delay notice says delayed, when retries stop, and keeps a 4.x.x status."""
        delayed = dsn.RecipientReport("bob@remote.test", "delayed", "4.2.0", "451 4.2.0 busy")
        message = parse(dsn.build(report(recipients=[delayed], retry_until=1_700_400_000.0)))
        per_recipient = message.get_payload()[1].get_payload()[1]  # type: ignore[index]

        self.assertEqual("Delayed Mail (still being retried)", message["Subject"])
        self.assertEqual("delayed", per_recipient["Action"])
        self.assertIn("2023", per_recipient["Will-Retry-Until"])

    def test_needs_a_recipient(self) -> None:
        """A report about nobody is a programming error, refused early."""
        self.assertRaises(ValueError, dsn.build, report(recipients=[]))


class HostileInputTests(unittest.TestCase):
    def test_reply_cannot_inject_header_lines(self) -> None:
        """A remote reply with CR, LF or 8-bit text cannot add fields or parts."""
        evil = "550 no\r\nAction: delivered\r\n\r\n--boundary\nX-Evil: yes \u00e9"
        bad = dsn.RecipientReport("bob@remote.test", "failed", "5.0.0", evil)
        data = dsn.build(report(recipients=[bad]))

        self.assertNotIn(b"\r\nAction: delivered", data)
        self.assertNotIn(b"\r\nX-Evil", data)
        self.assertTrue(data.isascii())

    def test_only_crlf_and_short_lines(self) -> None:
        """Every line ends CRLF and stays far below 998 octets (RFC 5322 2.1.1)."""
        long_reply = "550 " + " ".join(["word"] * 400)
        many = dsn.RecipientReport("bob@remote.test", "failed", "5.0.0", long_reply)
        data = dsn.build(report(recipients=[many]))

        self.assertEqual(data.count(b"\n"), data.count(b"\r\n"))
        self.assertLess(max(len(line) for line in data.split(b"\r\n")), 200)

    def test_huge_original_header_is_cut(self) -> None:
        """At most 64 KiB of the original header is returned, cut at a line end."""
        huge = b"X-Filler: " + b"a" * 70 + b"\r\n"
        header = huge * 2000 + b"\r\n"
        data = dsn.build(report(original_header=header))

        self.assertLess(len(data), 70 * 1024)
        self.assertNotIn(b"X-Filler: aaa\r\n--", data)
