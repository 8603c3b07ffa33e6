"""DKIM keys and signatures, checked with dkimpy's verifier against our own record."""

from __future__ import annotations

import dataclasses
import os
import re
import stat

import dkim as dkimpy  # type: ignore[import-untyped]
from twisted.trial import unittest

from mailsuite.config import Config, DKIMConfig, default_config
from mailsuite.dkim import DKIMError, Signer, from_domain, keygen
from mailsuite.queue.client import DataEncoder
from mailsuite.store import to_crlf

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@remote.test\r\n"
    b"Subject: signed\r\n"
    b"Date: Thu, 04 Dec 2026 15:30:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Hello Bob.\r\n.leading dot\r\n"
)


def record_text(record: str) -> bytes:
    """The TXT value of a zone line from ``keygen``: its quoted strings joined."""
    return "".join(re.findall(r'"([^"]*)"', record)).encode()


def unstuff(wire: bytes) -> bytes:
    """What a receiver stores from DATA: dots undone, the final "." removed."""
    lines = wire.split(b"\r\n")[:-2]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


class DKIMTestCase(unittest.TestCase):
    def setUp(self) -> None:
        folder = self.mktemp()
        os.makedirs(folder)
        base = default_config(folder)
        keys = os.path.join(folder, "dkim")
        self.config: Config = dataclasses.replace(base, dkim=DKIMConfig("mail", keys))

    def dns(self, record: str) -> object:
        def lookup(name: bytes, timeout: int = 5) -> bytes | None:
            if name.decode().rstrip(".") == "mail._domainkey.example.com":
                return record_text(record)
            return None

        return lookup


class KeygenTests(DKIMTestCase):
    def test_key_is_private_and_record_is_printed(self) -> None:
        """The key file is mode 0600; the record names selector and domain."""
        record = keygen(self.config, "Example.COM")

        path = os.path.join(self.config.dkim.keys, "example.com.mail.key")
        self.assertEqual(0o600, stat.S_IMODE(os.stat(path).st_mode))
        self.assertTrue(record.startswith("mail._domainkey.example.com. IN TXT"))
        self.assertIn(b"v=DKIM1; k=rsa; p=", record_text(record))

    def test_long_record_split_into_255_octet_strings(self) -> None:
        """RFC 1035: a TXT string holds at most 255 octets; RSA keys need several."""
        record = keygen(self.config, "example.com")

        strings = re.findall(r'"([^"]*)"', record)
        self.assertGreater(len(strings), 1)
        self.assertTrue(all(len(s) <= 255 for s in strings))

    def test_existing_key_is_never_replaced(self) -> None:
        """A second keygen for the same selector fails; the published key keeps working."""
        keygen(self.config, "example.com", algorithm="ed25519")

        self.assertRaises(DKIMError, keygen, self.config, "example.com")

    def test_bad_domain_and_algorithm(self) -> None:
        """Names that could escape the key folder, and unknown algorithms, are refused."""
        self.assertRaises(DKIMError, keygen, self.config, "../etc")
        self.assertRaises(DKIMError, keygen, self.config, "example.com", algorithm="dsa")
        self.assertRaises(DKIMError, keygen, self.config, "example.com", selector="a/b")


class SigningTests(DKIMTestCase):
    def sign_and_verify(self, algorithm: str) -> None:
        record = keygen(self.config, "example.com", algorithm=algorithm)
        signature = Signer(self.config).signature(MESSAGE)
        assert signature is not None

        self.assertTrue(dkimpy.verify(signature + MESSAGE, dnsfunc=self.dns(record)))

    def test_rsa_sha256(self) -> None:
        """The default: rsa-sha256, verified with the record keygen printed."""
        self.sign_and_verify("rsa")

    def test_ed25519(self) -> None:
        """RFC 8463 Ed25519 keys sign as ed25519-sha256."""
        self.sign_and_verify("ed25519")

    def test_signature_survives_the_way_we_send(self) -> None:
        """Signed over CRLF text, sent dot-stuffed, stored by the receiver: it verifies."""
        record = keygen(self.config, "example.com")
        bare_lf = MESSAGE.replace(b"\r\n", b"\n")
        normalised = to_crlf(bare_lf)
        signature = Signer(self.config).signature(normalised)
        assert signature is not None

        encoder = DataEncoder()
        wire = encoder.feed(signature) + encoder.feed(bare_lf) + encoder.finish()

        self.assertTrue(dkimpy.verify(unstuff(wire), dnsfunc=self.dns(record)))

    def test_changed_body_fails_verification(self) -> None:
        """The check really checks: a changed body does not verify."""
        record = keygen(self.config, "example.com")
        signature = Signer(self.config).signature(MESSAGE)
        assert signature is not None

        tampered = signature + MESSAGE.replace(b"Hello", b"Hullo")
        self.assertFalse(dkimpy.verify(tampered, dnsfunc=self.dns(record)))

    def test_no_key_no_signature(self) -> None:
        """Mail from a domain without a key (or without From) leaves unsigned."""
        keygen(self.config, "example.com")
        signer = Signer(self.config)

        other = MESSAGE.replace(b"alice@example.com", b"alice@elsewhere.test")
        self.assertIsNone(signer.signature(other))
        self.assertIsNone(signer.signature(b"Subject: no from\r\n\r\nbody\r\n"))

    def test_unreadable_key_is_logged_not_raised(self) -> None:
        """A broken key file means unsigned mail and an error in the log, not a crash."""
        os.makedirs(self.config.dkim.keys)
        with open(os.path.join(self.config.dkim.keys, "example.com.mail.key"), "wb") as f:
            f.write(b"not a key")

        self.assertIsNone(Signer(self.config).signature(MESSAGE))

    def test_from_domain(self) -> None:
        """The first From address's domain, lower case."""
        self.assertEqual("example.com", from_domain(b"From: A <a@Example.COM>\r\n\r\nx"))
        self.assertIsNone(from_domain(b"To: b@x.test\r\n\r\nx"))
