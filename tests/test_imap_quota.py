"""Tests for QUOTA (RFC 9208), APPENDLIMIT (RFC 7889) and the quota config key."""

from __future__ import annotations

import os

from twisted.trial import unittest

from mailsuite import quota
from mailsuite.config import Config, ConfigError, load_config
from tests.test_imap_harness import ALICE, Harness, message


class QuotaTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self, quota=4096)
        self.harness.deliver(message(1, body="x" * 1000))
        self.client = self.harness.login()
        self.used = quota.storage_used(self.harness.store.account(ALICE))

    def test_capabilities_name_quota_and_appendlimit(self) -> None:
        """With a quota configured, QUOTA and QUOTA=RES-STORAGE are offered; APPENDLIMIT too."""
        caps = self.client.lines("CAPABILITY")[0].split()

        self.assertIn(b"QUOTA", caps)
        self.assertIn(b"QUOTA=RES-STORAGE", caps)
        self.assertIn(b"APPENDLIMIT=%d" % (25 * 1024 * 1024), caps)

    def test_getquotaroot(self) -> None:
        """GETQUOTAROOT names the one root and its STORAGE usage and limit in KiB."""
        lines = self.client.lines("GETQUOTAROOT INBOX")

        self.assertEqual(
            [
                b'* QUOTAROOT INBOX ""',
                b'* QUOTA "" (STORAGE %d 4)' % ((self.used + 1023) // 1024),
                b"a2 OK GETQUOTAROOT completed",
            ],
            lines,
        )

    def test_getquota_and_setquota(self) -> None:
        """GETQUOTA "" answers; other roots do not exist; SETQUOTA is refused."""
        self.assertIn(b'* QUOTA "" (STORAGE', self.client.command('GETQUOTA ""'))
        self.assertIn(b"NO [NONEXISTENT]", self.client.tagged("GETQUOTA other"))
        self.assertIn(b"NO [CANNOT]", self.client.tagged('SETQUOTA "" (STORAGE 10)'))

    def test_append_over_quota_is_refused(self) -> None:
        """An APPEND that would pass the quota gets NO [OVERQUOTA] and stores nothing."""
        big = message(2, body="y" * 4000)

        out = self.client.send(b"t APPEND INBOX {%d+}\r\n%s\r\n" % (len(big), big))

        self.assertIn(b"t NO [OVERQUOTA]", out)
        self.assertEqual(1, len(self.harness.store.account(ALICE).folder("INBOX").messages))

    def test_copy_over_quota_is_refused_but_move_works(self) -> None:
        """COPY past the quota is NO [OVERQUOTA]; MOVE adds nothing and goes through."""
        self.harness.deliver(message(2, body="z" * 1500))
        self.client.command("SELECT INBOX")

        self.assertIn(b"NO [OVERQUOTA]", self.client.tagged("COPY 1:2 Trash"))
        self.assertIn(b"OK", self.client.tagged("MOVE 1:2 Trash"))

    def test_status_appendlimit_and_size(self) -> None:
        """STATUS APPENDLIMIT gives the message size limit; SIZE the folder's octets."""
        line = self.client.lines("STATUS INBOX (APPENDLIMIT SIZE DELETED)")[0]

        self.assertEqual(
            b"* STATUS INBOX (APPENDLIMIT %d SIZE %d DELETED 0)" % (25 * 1024 * 1024, self.used),
            line,
        )


class NoQuotaTests(unittest.TestCase):
    def test_no_quota_no_root(self) -> None:
        """Without a quota, QUOTA is not offered and a mailbox has no quota root."""
        client = Harness(self).login()

        self.assertNotIn(b"QUOTA", client.lines("CAPABILITY")[0].split())
        self.assertEqual(b"* QUOTAROOT INBOX", client.lines("GETQUOTAROOT INBOX")[0])
        self.assertIn(b"NO [NONEXISTENT]", client.tagged('GETQUOTA ""'))


class QuotaConfigTests(unittest.TestCase):
    def load(self, text: str) -> Config:
        base = self.mktemp()
        os.makedirs(base)
        path = os.path.join(base, "mailsuite.toml")
        with open(path, "w") as f:
            f.write(text)
        return load_config(path)

    def test_quota_key(self) -> None:
        """limits.quota defaults to 0 (none), takes octets, and refuses negatives."""
        self.assertEqual(0, self.load("").limits.quota)
        self.assertEqual(1000, self.load("[limits]\nquota = 1000\n").limits.quota)
        self.assertRaises(ConfigError, self.load, "[limits]\nquota = -1\n")
