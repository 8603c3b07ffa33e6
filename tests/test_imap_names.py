"""Tests for mailbox names over IMAP: modified UTF-7, INBOX in any case, RENAME rules."""

from __future__ import annotations

from twisted.trial import unittest

from mailsuite.store import names
from tests.test_imap_harness import ALICE, Harness, message


class NameTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        self.client = self.harness.login()
        self.account = self.harness.store.account(ALICE)

    def test_modified_utf7_round_trips(self) -> None:
        """Names with accents, CJK, ``&`` and ``.`` survive encode, decode and the disk."""
        for name in ("Café", "日本語", "A&B", "v1.2", "Ünïcødé/Ωmega", "~peter/mail"):
            encoded = names.encode_utf7(name)
            self.assertEqual(name, names.decode_utf7(encoded))
            self.assertEqual(name, names.folder_name(names.directory_name(name)))

    def test_created_unicode_name_is_listed_as_sent(self) -> None:
        """A name created in modified UTF-7 is listed in the same spelling."""
        self.client.command('CREATE "Caf&AOk-/&ZeVnLIqe-"')

        lines = self.client.lines('LIST "" "Caf&AOk-/*"')

        self.assertEqual(b'* LIST (\\HasNoChildren) "/" Caf&AOk-/&ZeVnLIqe-', lines[0])
        self.assertIn("Café/日本語", self.account.folder_names())

    def test_inbox_in_any_case(self) -> None:
        """``inbox``, ``InBoX`` and ``inbox/Sub`` all mean INBOX (RFC 3501 5.1)."""
        self.harness.deliver(message(1))

        self.assertIn(b"* 1 EXISTS", self.client.command("SELECT inbox"))
        self.assertIn(b"STATUS INBOX (MESSAGES 1)", self.client.command("STATUS InBoX (MESSAGES)"))
        self.client.command("CREATE inbox/Sub")
        self.assertIn("INBOX/Sub", self.account.folder_names())
        self.assertIn(b"NO [ALREADYEXISTS]", self.client.tagged("CREATE Inbox"))

    def test_rename_inbox_leaves_its_children(self) -> None:
        """RENAME INBOX moves its messages to a new folder; INBOX/Sub stays (RFC 3501 6.3.5)."""
        self.harness.deliver(message(1))
        self.client.command("CREATE INBOX/Sub")

        self.assertIn(b"OK", self.client.tagged("RENAME inbox Saved"))

        self.assertEqual(1, len(self.account.folder("Saved").messages))
        self.assertEqual(0, len(self.account.folder("INBOX").messages))
        self.assertIn("INBOX/Sub", self.account.folder_names())

    def test_rename_makes_superior_levels(self) -> None:
        """RENAME to a deeper name creates the levels above it (RFC 3501 6.3.5)."""
        self.client.command("CREATE Box")

        self.client.command("RENAME Box New/Deep")

        self.assertIn(b'* LIST (\\HasChildren) "/" New', self.client.command('LIST "" New'))

    def test_rename_with_children_moves_them(self) -> None:
        """RENAME of a folder renames everything below it too."""
        self.client.command("CREATE Top/Mid/Low")

        self.client.command("RENAME Top Peak")

        self.assertEqual(
            ["Peak", "Peak/Mid", "Peak/Mid/Low"],
            [n for n in self.account.folder_names() if n.startswith(("Peak", "Top"))],
        )

    def test_rename_below_itself_is_refused(self) -> None:
        """A folder cannot be renamed into its own subtree."""
        self.client.command("CREATE a/b")

        self.assertIn(b"NO [CANNOT]", self.client.tagged("RENAME a a/b/c"))
        self.assertEqual(["a", "a/b"], [n for n in self.account.folder_names() if n[0] == "a"])

    def test_malformed_names_are_refused(self) -> None:
        """Broken modified UTF-7 and empty levels are NO [CANNOT], not a traceback."""
        for name in ('"bad&name"', '"&Jjo"', '"a//b"', '"&AGEAYgBj-"'):
            reply = self.client.tagged(f"CREATE {name}")
            self.assertIn(b"NO", reply, name)
