"""Tests for STORE and UID STORE."""

from __future__ import annotations

from twisted.trial import unittest

from tests.test_imap_harness import ALICE, Harness, message


class StoreTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        for n in range(1, 4):
            self.harness.deliver(message(n))
        self.folder = self.harness.store.account(ALICE).folder("INBOX")
        self.client = self.harness.selected()

    def letters(self) -> list[str]:
        return [m.letters for m in self.folder.messages]

    def test_add_remove_replace(self) -> None:
        """+FLAGS adds, -FLAGS removes, FLAGS replaces the kept flags."""
        self.assertEqual(
            [
                b"* 1 FETCH (FLAGS (\\Seen \\Recent))",
                b"* 2 FETCH (FLAGS (\\Seen \\Recent))",
                b"a3 OK STORE completed",
            ],
            self.client.lines("STORE 1:2 +FLAGS (\\Seen)"),
        )
        self.client.command("STORE 2 -FLAGS (\\Seen)")
        self.client.command("STORE 3 FLAGS (\\Flagged \\Answered)")

        self.assertEqual(["S", "", "FR"], self.letters())

    def test_silent(self) -> None:
        """.SILENT stores without answering FETCH."""
        self.assertEqual(
            [b"a3 OK STORE completed"], self.client.lines("STORE 1 +FLAGS.SILENT (\\Deleted)")
        )
        self.assertEqual("T", self.letters()[0])

    def test_uid_store_reports_uid(self) -> None:
        """UID STORE answers carry the UID; missing UIDs are skipped."""
        self.assertEqual(
            [b"* 2 FETCH (UID 2 FLAGS (\\Draft \\Recent))", b"a3 OK STORE completed"],
            self.client.lines("UID STORE 2,99 +FLAGS \\Draft"),
        )

    def test_keywords_are_kept(self) -> None:
        """Keywords become letters named in dovecot-keywords; \\Recent is never stored."""
        lines = self.client.lines("STORE 1 +FLAGS ($Forwarded $Junk \\Recent NonJunk)")

        self.assertEqual(b"* 1 FETCH (FLAGS ($Forwarded $Junk NonJunk \\Recent))", lines[0])
        self.assertEqual(
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded $Junk NonJunk)",
            lines[1],
        )
        self.assertIn(b"$Junk NonJunk \\*)] Flags permitted", lines[2])
        self.assertEqual(
            ["$Forwarded", "$Junk", "NonJunk"], self.folder.flags_of(self.folder.messages[0])
        )
        self.assertEqual("Pab", self.letters()[0])

    def test_keyword_removal_is_case_insensitive(self) -> None:
        """-FLAGS removes a keyword whatever its case; FLAGS replaces keywords too."""
        self.client.command("STORE 1:2 +FLAGS ($Label1 \\Seen)")

        self.assertEqual(
            b"* 1 FETCH (FLAGS (\\Seen \\Recent))",
            self.client.lines("STORE 1 -FLAGS ($LABEL1)")[0],
        )
        self.assertEqual(
            b"* 2 FETCH (FLAGS (\\Flagged \\Recent))",
            self.client.lines("STORE 2 FLAGS (\\Flagged)")[0],
        )

    def test_new_keyword_is_announced_to_other_sessions(self) -> None:
        """Another session learns a new keyword through FLAGS, then the FETCH."""
        other = self.harness.selected()
        self.client.command("STORE 1 +FLAGS.SILENT (Important)")

        lines = other.lines("NOOP")

        self.assertTrue(lines[0].startswith(b"* FLAGS ("), lines[0])
        self.assertTrue(lines[0].endswith(b" Important)"))
        self.assertEqual(b"* 1 FETCH (UID 1 FLAGS (Important))", lines[2])

    def test_no_room_for_more_keywords(self) -> None:
        """With all 26 letters named, new keywords are dropped and \\* is not offered."""
        for n in range(26):
            self.folder.keywords.letter_for(f"k{n}", create=True)

        line = self.client.lines("STORE 1 +FLAGS (Brandnew \\Seen)")[0]

        self.assertEqual(b"* 1 FETCH (FLAGS (\\Seen \\Recent))", line)
        self.assertNotIn(b"\\*)", self.harness.login().command("SELECT INBOX"))

    def test_unknown_letters_survive_replace(self) -> None:
        """Letters other programs set (Dovecot keywords) are kept by FLAGS replacement."""
        self.folder.set_letters(self.folder.messages[0], "aS")

        self.client.command("STORE 1 FLAGS (\\Flagged)")

        self.assertEqual("Fa", self.letters()[0])

    def test_read_only(self) -> None:
        """STORE in an EXAMINEd mailbox is refused."""
        client = self.harness.selected(examine=True)

        self.assertIn(b"NO [CANNOT]", client.tagged("STORE 1 +FLAGS (\\Seen)"))

    def test_syntax(self) -> None:
        """Wrong item names and flags are BAD."""
        self.assertIn(b"BAD", self.client.tagged("STORE 1 FLAGZ (\\Seen)"))
        self.assertIn(b"BAD", self.client.tagged("STORE 1 +FLAGS (\\Seen"))
        self.assertIn(b"BAD", self.client.tagged("STORE 1 +FLAGS"))
        self.assertIn(b"BAD", self.client.tagged("STORE 9 +FLAGS (\\Seen)"))
