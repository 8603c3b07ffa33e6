"""Tests for CREATE-SPECIAL-USE (RFC 6154 3): uses given at CREATE, kept on disk."""

from __future__ import annotations

from twisted.trial import unittest

from tests.test_imap_harness import ALICE, Harness


class CreateSpecialUseTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        self.client = self.harness.login()
        self.account = self.harness.store.account(ALICE)

    def test_create_with_use_is_listed(self) -> None:
        """CREATE name (USE (\\Archive)) makes a folder LIST shows as \\Archive."""
        reply = self.client.tagged("CREATE Archive (USE (\\Archive))")

        self.assertEqual(b"a2 OK CREATE completed", reply)
        self.assertIn(
            b'* LIST (\\HasNoChildren \\Archive) "/" Archive', self.client.lines('LIST "" Archive')
        )

    def test_use_survives_a_new_store(self) -> None:
        """The use is on disk: another Store over the same root still knows it."""
        from mailsuite.store import Store

        self.client.command("CREATE Old (USE (\\archive))")

        other = Store(self.harness.store.root, self.harness.reactor).account(ALICE)
        self.assertEqual("\\Archive", other.special_use("Old"))

    def test_rename_carries_the_use(self) -> None:
        """RENAME moves the use with the folder, children included."""
        self.client.command("CREATE Box (USE (\\Archive))")
        self.client.command("CREATE Box/Kid (USE (\\Junk))")

        self.client.command("RENAME Box Attic")

        self.assertEqual("\\Archive", self.account.special_use("Attic"))
        self.assertEqual("\\Junk", self.account.special_use("Attic/Kid"))
        self.assertIsNone(self.account.special_use("Box"))

    def test_renamed_default_folder_keeps_its_use(self) -> None:
        """Renaming Sent keeps \\Sent on the new name; the old name becomes plain."""
        self.client.command("RENAME Sent Outbox")

        self.assertEqual("\\Sent", self.account.special_use("Outbox"))
        self.assertIsNone(self.account.special_use("Sent"))
        self.assertEqual("\\Trash", self.account.special_use("Trash"))

    def test_delete_forgets_the_use(self) -> None:
        """A folder deleted and made again without USE has no use."""
        self.client.command("CREATE Keep (USE (\\Archive))")
        self.client.command("DELETE Keep")
        self.client.command("CREATE Keep")

        self.assertIsNone(self.account.special_use("Keep"))

    def test_unsupported_use_is_useattr(self) -> None:
        """\\All, \\Flagged and unknown uses get NO [USEATTR] and create nothing."""
        for use in ("\\All", "\\Flagged", "\\Bogus"):
            reply = self.client.tagged(f"CREATE X (USE ({use}))")
            self.assertIn(b"NO [USEATTR]", reply, use)
        self.assertNotIn("X", self.account.folder_names())

    def test_bad_create_parameters(self) -> None:
        """Unknown CREATE parameters and broken syntax are BAD."""
        self.assertIn(b" BAD ", self.client.tagged("CREATE X (FOO (\\Archive))"))
        self.assertIn(b" BAD ", self.client.tagged("CREATE X (USE \\Archive)"))
