"""SASL PLAIN and LOGIN decoding shared by the three protocols."""

from __future__ import annotations

import base64

from twisted.trial import unittest

from mailsuite import sasl


class SaslTests(unittest.TestCase):
    def test_plain(self) -> None:
        """PLAIN gives user and password; an authzid equal to the user is allowed."""
        for raw in [b"\x00a@b.test\x00pw", b"a@b.test\x00a@b.test\x00pw"]:
            encoded = base64.b64encode(raw)

            credentials = sasl.parse_plain(sasl.decode_base64(encoded))

            self.assertEqual(sasl.Credentials("a@b.test", "pw"), credentials)

    def test_plain_refuses_acting_for_another_user(self) -> None:
        """An authorization identity that differs from the user is refused."""
        self.assertRaises(
            sasl.SASLIdentityRefused, sasl.parse_plain, b"boss@b.test\x00a@b.test\x00pw"
        )

    def test_malformed(self) -> None:
        """Bad base64, wrong NUL counts, empty users and non-UTF-8 raise SASLError."""
        self.assertRaises(sasl.SASLError, sasl.decode_base64, b"not base64!")
        for raw in [b"nonul", b"\x00\x00", b"a\x00b\x00c\x00d", b"\x00\xff\x00pw"]:
            self.assertRaises(sasl.SASLError, sasl.parse_plain, raw)

    def test_cancel_and_empty(self) -> None:
        """``*`` cancels the exchange; ``=`` is an empty response."""
        self.assertRaises(sasl.SASLCancelled, sasl.decode_base64, b"*")
        self.assertEqual(b"", sasl.decode_base64(b"="))
