"""Tests for CONDSTORE and QRESYNC (RFC 7162): modseqs, conditional STORE, VANISHED."""

from __future__ import annotations

import re

from twisted.trial import unittest

from tests.test_imap_harness import ALICE, Harness, message


def modseqs(out: bytes) -> dict[int, int]:
    """UID -> MODSEQ from untagged FETCH responses."""
    found = re.findall(rb"UID (\d+) .*?MODSEQ \((\d+)\)", out)
    return {int(uid): int(modseq) for uid, modseq in found}


class CondstoreTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        for n in range(1, 6):
            self.harness.deliver(message(n))
        self.folder = self.harness.store.account(ALICE).folder("INBOX")

    def test_enable_while_selected_tells_highestmodseq(self) -> None:
        """ENABLE CONDSTORE in a selected mailbox announces HIGHESTMODSEQ (RFC 7162 3.1)."""
        client = self.harness.selected()

        lines = client.lines("ENABLE CONDSTORE")

        self.assertEqual(
            [
                b"* OK [HIGHESTMODSEQ %d] Highest" % self.folder.highest_modseq,
                b"* ENABLED CONDSTORE",
                b"a3 OK ENABLE completed",
            ],
            lines,
        )

    def test_fetch_modseq_and_store_raises_it(self) -> None:
        """FETCH MODSEQ gives each message's modseq; a STORE raises it above all others."""
        client = self.harness.selected()
        before = modseqs(client.command("UID FETCH 1:* (MODSEQ)"))
        self.assertEqual([1, 2, 3, 4, 5], sorted(before))

        out = client.command("STORE 2 +FLAGS (\\Seen)")

        after = modseqs(out)
        self.assertEqual([2], list(after))
        self.assertGreater(after[2], max(before.values()))
        self.assertEqual(self.folder.highest_modseq, after[2])

    def test_changedsince_returns_only_changed_messages(self) -> None:
        """FETCH (CHANGEDSINCE n) answers for messages changed after n, with MODSEQ."""
        client = self.harness.selected()
        start = self.folder.highest_modseq
        client.command("STORE 2,4 +FLAGS.SILENT (\\Flagged)")

        lines = [
            line
            for line in client.lines(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {start})")
            if b"HIGHESTMODSEQ" not in line
        ]

        self.assertEqual(3, len(lines))
        self.assertTrue(lines[0].startswith(b"* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ ("))
        self.assertTrue(lines[1].startswith(b"* 4 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ ("))
        self.assertEqual(b"a4 OK FETCH completed", lines[2])

    def test_unchangedsince_stores_only_unchanged_messages(self) -> None:
        """STORE (UNCHANGEDSINCE n) leaves newer messages alone and names them in MODIFIED."""
        client = self.harness.selected()
        start = self.folder.highest_modseq
        other = self.harness.selected()
        other.command("UID STORE 3 +FLAGS (\\Seen)")

        lines = client.lines(f"UID STORE 1:4 (UNCHANGEDSINCE {start}) +FLAGS (\\Flagged)")

        self.assertEqual(
            b"a3 OK [MODIFIED 3] Conditional STORE failed for some messages", lines[-1]
        )
        flagged = [m.uid for m in self.folder.messages if "F" in m.letters]
        self.assertEqual([1, 2, 4], flagged)
        self.assertEqual([1, 2, 3, 4], sorted(modseqs(b"\r\n".join(lines))))

    def test_unchangedsince_zero_always_fails(self) -> None:
        """UNCHANGEDSINCE 0 fails for every message (RFC 7162 3.1.3); MODIFIED has numbers."""
        client = self.harness.selected()

        reply = client.tagged("STORE 1:2 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)")

        self.assertEqual(b"a3 OK [MODIFIED 1:2] Conditional STORE failed for some messages", reply)
        self.assertEqual("", self.folder.messages[0].letters)

    def test_silent_store_still_reports_modseq(self) -> None:
        """With CONDSTORE on, STORE .SILENT still sends UID and MODSEQ (no FLAGS)."""
        client = self.harness.selected()
        client.command("ENABLE CONDSTORE")

        lines = client.lines("STORE 1 +FLAGS.SILENT (\\Seen)")

        self.assertEqual(b"* 1 FETCH (UID 1 MODSEQ (%d))" % self.folder.highest_modseq, lines[0])

    def test_other_sessions_change_carries_modseq(self) -> None:
        """A flag change by another session reaches a CONDSTORE client with UID and MODSEQ."""
        client = self.harness.selected()
        client.command("ENABLE CONDSTORE")
        self.harness.selected().command("STORE 5 +FLAGS (\\Answered)")

        lines = client.lines("NOOP")

        self.assertEqual(
            b"* 5 FETCH (UID 5 FLAGS (\\Answered \\Recent) MODSEQ (%d))"
            % self.folder.highest_modseq,
            lines[0],
        )

    def test_body_fetch_setting_seen_reports_uid_and_modseq(self) -> None:
        """A FETCH that sets \\Seen reports the new MODSEQ and the UID under CONDSTORE."""
        client = self.harness.selected()
        client.command("ENABLE CONDSTORE")

        out = client.command("FETCH 1 (BODY[TEXT])")

        self.assertIn(b"* 1 FETCH (UID 1 BODY[TEXT]", out)
        self.assertIn(b"MODSEQ (%d))" % self.folder.highest_modseq, out)

    def test_status_and_select_report_highestmodseq(self) -> None:
        """STATUS HIGHESTMODSEQ and SELECT (CONDSTORE) give the folder's highest modseq."""
        client = self.harness.login()
        highest = self.folder.highest_modseq

        status = client.lines("STATUS INBOX (HIGHESTMODSEQ MESSAGES)")[0]
        select = client.lines("SELECT INBOX (CONDSTORE)")

        self.assertEqual(b"* STATUS INBOX (HIGHESTMODSEQ %d MESSAGES 5)" % highest, status)
        self.assertIn(b"* OK [HIGHESTMODSEQ %d] Highest" % highest, select)

    def test_bad_modseq_values_are_bad(self) -> None:
        """A modseq past 2^63-1 or missing is a syntax error, not a crash."""
        client = self.harness.selected()

        self.assertIn(b"BAD", client.tagged("FETCH 1 (FLAGS) (CHANGEDSINCE 9223372036854775808)"))
        self.assertIn(b"BAD", client.tagged("FETCH 1 (FLAGS) (CHANGEDSINCE)"))
        self.assertIn(b"BAD", client.tagged("STORE 1 (UNCHANGEDSINCE x) FLAGS (\\Seen)"))
        self.assertIn(b"BAD", client.tagged("FETCH 1 (FLAGS) (FOO 1)"))


class QresyncTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        for n in range(1, 7):
            self.harness.deliver(message(n))
        self.folder = self.harness.store.account(ALICE).folder("INBOX")

    def qresync_client(self) -> object:
        client = self.harness.login()
        client.command("ENABLE QRESYNC")
        return client

    def test_enable_qresync_enables_condstore(self) -> None:
        """ENABLE QRESYNC answers ENABLED QRESYNC and turns CONDSTORE on with it."""
        client = self.harness.login()

        self.assertEqual(b"* ENABLED QRESYNC", client.lines("ENABLE QRESYNC")[0])
        self.assertEqual({"CONDSTORE", "QRESYNC"}, client.session.enabled)

    def test_expunge_is_told_as_vanished(self) -> None:
        """After ENABLE QRESYNC, EXPUNGE answers VANISHED and the OK carries HIGHESTMODSEQ."""
        client = self.harness.login()
        client.command("ENABLE QRESYNC")
        client.command("SELECT INBOX")
        client.command("STORE 2:3,5 +FLAGS.SILENT (\\Deleted)")

        lines = client.lines("EXPUNGE")

        self.assertEqual(
            [
                b"* VANISHED 2:3,5",
                b"a5 OK [HIGHESTMODSEQ %d] EXPUNGE completed" % self.folder.highest_modseq,
            ],
            lines,
        )

    def test_other_sessions_expunge_is_vanished(self) -> None:
        """An expunge by another session reaches a QRESYNC client as VANISHED."""
        client = self.harness.login()
        client.command("ENABLE QRESYNC")
        client.command("SELECT INBOX")
        self.folder.expunge([4])

        self.assertEqual([b"* VANISHED 4", b"a4 OK NOOP completed"], client.lines("NOOP"))

    def test_select_qresync_without_enable_is_bad(self) -> None:
        """QRESYNC SELECT parameters need ENABLE QRESYNC first (RFC 7162 3.2.5)."""
        client = self.harness.login()

        reply = client.tagged(f"SELECT INBOX (QRESYNC ({self.folder.uidvalidity} 1))")

        self.assertIn(b"BAD", reply)

    def test_select_qresync_reports_vanished_and_changed(self) -> None:
        """SELECT (QRESYNC ...) sends VANISHED (EARLIER) and FETCH for what changed since."""
        since = self.folder.highest_modseq
        self.folder.expunge([2, 3])
        self.folder.set_flags(self.folder.get(5), ["\\Seen"])
        client = self.harness.login()
        client.command("ENABLE QRESYNC")

        lines = client.lines(f"SELECT INBOX (QRESYNC ({self.folder.uidvalidity} {since} 1:6))")

        vanished = lines.index(b"* VANISHED (EARLIER) 2:3")
        self.assertEqual(
            b"* 3 FETCH (UID 5 FLAGS (\\Seen) MODSEQ (%d))" % self.folder.highest_modseq,
            lines[vanished + 1],
        )
        self.assertEqual(b"a3 OK [READ-WRITE] SELECT completed", lines[vanished + 2])

    def test_select_qresync_known_uids_limit_the_answer(self) -> None:
        """Known UIDs limit VANISHED and FETCH; seq-match data is accepted."""
        since = self.folder.highest_modseq
        self.folder.expunge([2, 3])
        self.folder.set_flags(self.folder.get(5), ["\\Seen"])
        client = self.harness.login()
        client.command("ENABLE QRESYNC")
        v = self.folder.uidvalidity

        lines = client.lines(f"EXAMINE INBOX (QRESYNC ({v} {since} 3:4 (1:2 3:4)))")

        self.assertIn(b"* VANISHED (EARLIER) 3", lines)
        self.assertFalse(any(b"FETCH" in line for line in lines))
        self.assertEqual(b"a3 OK [READ-ONLY] EXAMINE completed", lines[-1])

    def test_select_qresync_with_other_uidvalidity_is_plain(self) -> None:
        """A stale UIDVALIDITY gets an ordinary SELECT: no VANISHED, no FETCH."""
        self.folder.expunge([2])
        client = self.harness.login()
        client.command("ENABLE QRESYNC")

        lines = client.lines("SELECT INBOX (QRESYNC (1 1))")

        self.assertFalse(any(b"VANISHED" in line or b"FETCH" in line for line in lines))

    def test_history_before_the_index_reports_every_missing_uid(self) -> None:
        """A modseq older than the index's history gets every known UID that is gone."""
        self.folder.expunge([2, 6])
        client = self.harness.login()
        client.command("ENABLE QRESYNC")

        lines = client.lines(f"SELECT INBOX (QRESYNC ({self.folder.uidvalidity} 1))")

        self.assertIn(b"* VANISHED (EARLIER) 2,6", lines)

    def test_uid_fetch_vanished(self) -> None:
        """UID FETCH (CHANGEDSINCE n VANISHED) sends VANISHED (EARLIER) before the FETCHes."""
        client = self.harness.login()
        client.command("ENABLE QRESYNC")
        client.command("SELECT INBOX")
        since = self.folder.highest_modseq
        other = self.harness.selected()
        other.command("STORE 1 +FLAGS (\\Seen)")
        other.command("STORE 3 +FLAGS.SILENT (\\Deleted)")
        other.command("EXPUNGE")

        lines = client.lines(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)")

        self.assertEqual(b"* VANISHED (EARLIER) 3", lines[0])
        self.assertTrue(lines[1].startswith(b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) MODSEQ ("))
        self.assertEqual([b"* VANISHED 3", b"a4 OK FETCH completed"], lines[2:])

    def test_vanished_modifier_needs_uid_fetch_and_qresync(self) -> None:
        """VANISHED is BAD in plain FETCH, without CHANGEDSINCE, or before ENABLE QRESYNC."""
        plain = self.harness.selected()
        self.assertIn(b"BAD", plain.tagged("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)"))
        client = self.harness.login()
        client.command("ENABLE QRESYNC")
        client.command("SELECT INBOX")

        self.assertIn(b"BAD", client.tagged("FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)"))
        self.assertIn(b"BAD", client.tagged("UID FETCH 1:* (FLAGS) (VANISHED)"))
