"""The Received: header and its protocol names (RFC 5321 4.4, RFC 3848, RFC 6531)."""

from __future__ import annotations

from email import message_from_bytes
from email.utils import formatdate

from twisted.trial import unittest

from mailsuite.smtp.received import protocol_name, received_header


class ProtocolNameTests(unittest.TestCase):
    def test_names(self) -> None:
        """S for TLS, A for AUTH, SMTP after HELO, UTF8SMTP with SMTPUTF8."""
        cases = {
            (False, False, False, False): "SMTP",
            (True, False, False, False): "ESMTP",
            (True, True, False, False): "ESMTPS",
            (True, True, True, False): "ESMTPSA",
            (True, False, True, False): "ESMTPA",
            (True, True, True, True): "UTF8SMTPSA",
        }
        for (esmtp, tls, authenticated, smtputf8), expected in cases.items():
            name = protocol_name(
                esmtp=esmtp, tls=tls, authenticated=authenticated, smtputf8=smtputf8
            )
            self.assertEqual(expected, name)


class HeaderTests(unittest.TestCase):
    def header(self, **overrides: object) -> bytes:
        fields: dict[str, object] = {
            "helo": "client.example",
            "peer_ip": "192.0.2.7",
            "hostname": "mx.example.org",
            "protocol": "ESMTPS",
            "transaction_id": "abc.1",
            "recipient": "u@example.org",
            "when": 1_800_000_000.0,
        }
        fields.update(overrides)
        return received_header(**fields)  # type: ignore[arg-type]

    def test_single_recipient(self) -> None:
        """from, by, with, id, for and the date, folded with CRLF + tab."""
        date = formatdate(1_800_000_000.0, localtime=True)

        self.assertEqual(
            b"Received: from client.example ([192.0.2.7])\r\n"
            b"\tby mx.example.org (mailsuite) with ESMTPS id abc.1\r\n"
            b"\tfor <u@example.org>; " + date.encode() + b"\r\n",
            self.header(),
        )

    def test_several_recipients_are_not_named(self) -> None:
        """Without a single recipient there is no "for" clause (Bcc stays private)."""
        header = self.header(recipient=None)

        self.assertNotIn(b"for <", header)
        self.assertIn(b"id abc.1;\r\n\t", header)

    def test_ipv6_peer_is_an_address_literal(self) -> None:
        """RFC 5321 4.1.3: [IPv6:...]."""
        self.assertIn(b"([IPv6:::1])", self.header(peer_ip="::1"))

    def test_parses_as_one_header(self) -> None:
        """A mail parser sees exactly one Received field, unfolded."""
        message = message_from_bytes(self.header() + b"Subject: x\r\n\r\nbody\r\n")

        self.assertEqual(1, len(message.get_all("Received")))
        self.assertEqual("x", message["Subject"])
