"""Tests for BINARY (RFC 3516): decoded parts, their sizes, literal8, unknown encodings."""

from __future__ import annotations

import base64

from twisted.trial import unittest

from tests.test_imap_harness import ALICE, Harness

PAYLOAD = b"\x00\x01binary\xffdata\r\n"

MULTIPART = (
    b"From: a@example.net\r\n"
    b"Subject: attachment\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n'
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9\r\n"
    b"--b\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + base64.b64encode(PAYLOAD) + b"\r\n"
    b"--b\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n"
    b"\r\n"
    b"begin 644 x\r\n"
    b"--b--\r\n"
)


class BinaryTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        self.harness.deliver(MULTIPART)
        self.client = self.harness.selected()
        self.folder = self.harness.store.account(ALICE).folder("INBOX")

    def test_binary_part_with_nul_is_a_literal8(self) -> None:
        """BINARY.PEEK[2] is the decoded attachment, sent as ~{n} because it holds NUL."""
        out = self.client.command("FETCH 1 (BINARY.PEEK[2])")

        self.assertIn(b"BINARY[2] ~{%d}\r\n" % len(PAYLOAD) + PAYLOAD + b")", out)
        self.assertNotIn("S", self.folder.messages[0].letters)

    def test_binary_text_part_and_size(self) -> None:
        """Quoted-printable is undone; BINARY.SIZE gives the decoded length."""
        out = self.client.command("FETCH 1 (BINARY.SIZE[1] BINARY.SIZE[2] BINARY.PEEK[1])")

        self.assertIn(b"BINARY.SIZE[1] 5 BINARY.SIZE[2] %d" % len(PAYLOAD), out)
        self.assertIn(b"BINARY[1] {5}\r\ncaf\xc3\xa9)", out)

    def test_binary_partial_and_seen(self) -> None:
        """A partial BINARY is labelled with its origin; BINARY (not PEEK) sets \\Seen."""
        out = self.client.command("FETCH 1 (BINARY[2]<2.6>)")

        self.assertIn(b"BINARY[2]<2> {6}\r\nbinary", out)
        self.assertIn(b"FLAGS (\\Seen", out)

    def test_unknown_encoding_is_unknown_cte(self) -> None:
        """An encoding we cannot undo fails the FETCH with NO [UNKNOWN-CTE]."""
        reply = self.client.tagged("FETCH 1 (BINARY.PEEK[3])")

        self.assertIn(b"NO [UNKNOWN-CTE]", reply)

    def test_binary_syntax(self) -> None:
        """BINARY sections take only part numbers."""
        self.assertIn(b" BAD ", self.client.tagged("FETCH 1 (BINARY[HEADER])"))
        self.assertIn(b" BAD ", self.client.tagged("FETCH 1 (BINARY.SIZE[1]<0.1>)"))
