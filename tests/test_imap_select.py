"""Tests for SELECT, EXAMINE, CLOSE, UNSELECT, EXPUNGE, IDLE and updates between sessions."""

from __future__ import annotations

import os

from twisted.trial import unittest

from mailsuite.imap.commands.idle import KEEPALIVE_INTERVAL, REFRESH_INTERVAL
from tests.test_imap_harness import ALICE, Harness, message


class SelectTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        for n in range(1, 4):
            self.harness.deliver(message(n))
        self.folder = self.harness.store.account(ALICE).folder("INBOX")
        self.folder.set_flags(self.folder.messages[0], ["\\Seen"])

    def test_select_responses(self) -> None:
        """SELECT reports FLAGS, PERMANENTFLAGS, EXISTS, RECENT, UNSEEN, UIDVALIDITY, UIDNEXT."""
        client = self.harness.login()

        self.assertEqual(
            [
                b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)",
                b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft "
                b"$Forwarded \\*)] Flags permitted",
                b"* 3 EXISTS",
                b"* 2 RECENT",
                b"* OK [UNSEEN 2] First unseen",
                b"* OK [UIDVALIDITY %d] UIDs valid" % self.folder.uidvalidity,
                b"* OK [UIDNEXT 4] Predicted next UID",
                b"* OK [HIGHESTMODSEQ %d] Highest" % self.folder.highest_modseq,
                b"a2 OK [READ-WRITE] SELECT completed",
            ],
            client.lines('select "INBOX"'),
        )

    def test_examine_is_read_only(self) -> None:
        """EXAMINE: READ-ONLY, no permanent flags, and \\Recent is not taken away."""
        client = self.harness.login()

        lines = client.lines("EXAMINE INBOX")

        self.assertIn(b"* OK [PERMANENTFLAGS ()] No permanent flags", lines)
        self.assertEqual(b"a2 OK [READ-ONLY] EXAMINE completed", lines[-1])
        self.assertIn(b"* 2 RECENT", self.harness.login().lines("SELECT INBOX"))

    def test_recent_goes_to_the_first_session(self) -> None:
        """A message is \\Recent only in the first session that selects after it arrived."""
        first = self.harness.selected()
        second = self.harness.selected()
        self.assertIn(b"* 0 RECENT", second.lines("SELECT INBOX"))

        self.harness.deliver(message(4))

        self.assertEqual(
            [b"* 4 EXISTS", b"* 3 RECENT", b"a3 OK NOOP completed"], first.lines("NOOP")
        )
        self.assertEqual([b"* 4 EXISTS", b"a4 OK NOOP completed"], second.lines("NOOP"))
        self.assertIn(b"FLAGS (\\Recent)", first.command("FETCH 4 FLAGS"))

    def test_recent_is_shared_between_listeners(self) -> None:
        """Sessions on imap and on imaps share one \\Recent state (and one cache)."""
        first = self.harness.connect(secure=True)
        first.command("LOGIN alice@example.com secret")
        second = self.harness.connect(secure=False)
        second.session.secure = True  # as if after STARTTLS
        second.command("LOGIN alice@example.com secret")

        self.assertIn(b"* 2 RECENT", first.lines("SELECT INBOX"))
        self.assertIn(b"* 0 RECENT", second.lines("SELECT INBOX"))
        self.assertIs(self.harness.imap.cache, self.harness.imaps.cache)

    def test_appended_message_is_recent(self) -> None:
        """APPEND and COPY make messages recent to the next session that selects."""
        client = self.harness.login()
        client.send(b"t APPEND Sent {5+}\r\nhello\r\n")
        client.command("SELECT INBOX")
        client.command("COPY 1 Sent")

        self.assertIn(b"* 2 RECENT", self.harness.login().lines("SELECT Sent"))

    def test_select_missing_folder_deselects(self) -> None:
        """A failed SELECT leaves no mailbox selected (RFC 3501 6.3.1)."""
        client = self.harness.selected()

        self.assertIn(b"NO [NONEXISTENT]", client.tagged("SELECT Nope"))
        self.assertIn(b"BAD", client.tagged("FETCH 1 FLAGS"))

    def test_unknown_select_parameters_are_refused(self) -> None:
        """SELECT parameters other than CONDSTORE and QRESYNC are BAD."""
        client = self.harness.login()

        self.assertIn(b"BAD", client.tagged("SELECT INBOX (FOO)"))
        self.assertIn(b"BAD", client.tagged("SELECT INBOX (CONDSTORE"))

    def test_close_expunges_silently(self) -> None:
        """CLOSE removes \\Deleted messages without EXPUNGE responses, then deselects."""
        client = self.harness.selected()
        client.command("STORE 2 +FLAGS.SILENT (\\Deleted)")

        self.assertEqual(b"a4 OK CLOSE completed\r\n", client.command("CLOSE"))
        self.assertEqual(2, len(self.folder.messages))
        self.assertIn(b"BAD", client.tagged("FETCH 1 FLAGS"))

    def test_close_after_examine_keeps_messages(self) -> None:
        """CLOSE of a read-only mailbox expunges nothing."""
        self.folder.set_flags(self.folder.messages[1], ["\\Deleted"])
        client = self.harness.selected(examine=True)

        client.command("CLOSE")

        self.assertEqual(3, len(self.folder.messages))

    def test_unselect_keeps_messages(self) -> None:
        """UNSELECT leaves \\Deleted messages alone (RFC 3691)."""
        client = self.harness.selected()
        client.command("STORE 2 +FLAGS.SILENT (\\Deleted)")

        self.assertEqual(b"a4 OK UNSELECT completed\r\n", client.command("UNSELECT"))
        self.assertEqual(3, len(self.folder.messages))

    def test_expunge(self) -> None:
        """EXPUNGE sends one EXPUNGE per removed message, numbers shifting as it goes."""
        client = self.harness.selected()
        client.command("STORE 1:2 +FLAGS.SILENT (\\Deleted)")

        self.assertEqual(
            [b"* 1 EXPUNGE", b"* 1 EXPUNGE", b"a4 OK EXPUNGE completed"], client.lines("EXPUNGE")
        )
        self.assertEqual([3], [m.uid for m in self.folder.messages])

    def test_uid_expunge(self) -> None:
        """UID EXPUNGE removes only the named \\Deleted messages (RFC 4315 2.1)."""
        client = self.harness.selected()
        client.command("STORE 1:3 +FLAGS.SILENT (\\Deleted)")

        self.assertEqual(
            [b"* 2 EXPUNGE", b"a4 OK EXPUNGE completed"], client.lines("UID EXPUNGE 2,7")
        )
        self.assertEqual([1, 3], [m.uid for m in self.folder.messages])

    def test_expunge_read_only(self) -> None:
        """EXPUNGE in an EXAMINEd mailbox is refused."""
        client = self.harness.selected(examine=True)

        self.assertIn(b"NO [CANNOT]", client.tagged("EXPUNGE"))


class SessionUpdateTests(unittest.TestCase):
    """Two sessions on one mailbox see each other's changes when RFC 3501 allows."""

    def setUp(self) -> None:
        self.harness = Harness(self)
        for n in range(1, 4):
            self.harness.deliver(message(n))
        self.one = self.harness.selected()
        self.two = self.harness.selected()

    def test_flag_change_reaches_the_other_session(self) -> None:
        """A STORE in one session is an untagged FETCH FLAGS in the other."""
        self.one.command("STORE 2 +FLAGS.SILENT (\\Flagged)")

        self.assertEqual(
            [b"* 2 FETCH (UID 2 FLAGS (\\Flagged))", b"a3 OK NOOP completed"],
            self.two.lines("NOOP"),
        )
        self.assertEqual([b"a4 OK NOOP completed"], self.one.lines("NOOP"))

    def test_expunge_waits_during_fetch_store_search(self) -> None:
        """Another session's expunge is not announced during FETCH, STORE or SEARCH (7.4.1)."""
        self.one.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.one.command("EXPUNGE")

        for command in ("FETCH 1:3 UID", "STORE 3 +FLAGS.SILENT (\\Seen)", "SEARCH ALL"):
            with self.subTest(command=command):
                self.assertNotIn(b"EXPUNGE", self.two.command(command))
        self.assertEqual([b"* 1 EXPUNGE", b"a6 OK NOOP completed"], self.two.lines("NOOP"))

    def test_expunge_may_go_out_during_uid_commands(self) -> None:
        """UID FETCH does not use message numbers, so a pending EXPUNGE goes out with it."""
        self.one.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.one.command("EXPUNGE")

        self.assertIn(b"* 1 EXPUNGE\r\n", self.two.command("UID FETCH 1:* UID"))

    def test_expunged_message_can_still_be_named(self) -> None:
        """Before the EXPUNGE is announced the message keeps its number: FETCH is clean."""
        self.two.command("FETCH 1 BODY.PEEK[]")  # now in the cache
        self.one.command("STORE 1:2 +FLAGS.SILENT (\\Deleted)")
        self.one.command("EXPUNGE")

        cached = self.two.command("FETCH 1 (UID BODY.PEEK[])")
        self.assertIn(b"* 1 FETCH (UID 1 BODY[] {", cached)
        self.assertIn(b"a4 OK FETCH completed", cached)

        uncached = self.two.lines("FETCH 2 (BODY.PEEK[])")
        self.assertEqual([b"a5 NO [EXPUNGEISSUED] Some messages were expunged"], uncached)
        self.assertEqual(
            [b"a6 NO [EXPUNGEISSUED] Some messages were expunged"],
            self.two.lines("STORE 2 +FLAGS (\\Seen)"),
        )
        self.assertIn(b"FLAGS (\\Deleted)", self.two.command("FETCH 2 FLAGS"))

    def test_new_mail_is_announced_during_fetch(self) -> None:
        """EXISTS may go out at the end of any command, FETCH included."""
        self.harness.deliver(message(4))

        self.assertIn(b"* 4 EXISTS\r\n", self.two.command("FETCH 1 UID"))

    def test_change_made_on_disk_is_found_by_noop(self) -> None:
        """A message added by another program appears at the next NOOP."""
        folder = self.harness.store.account(ALICE).folder("INBOX")
        with open(os.path.join(folder.path, "new", "1.M1P1Q1.other"), "wb") as f:
            f.write(message(9))

        self.assertIn(b"* 4 EXISTS", self.one.lines("NOOP"))

    def test_deleted_folder(self) -> None:
        """Deleting the selected folder from another session empties the view cleanly."""
        self.harness.store.account(ALICE).create_folder("Box")
        self.one.command("SELECT Box")
        self.one.command("APPEND Box {5}")
        self.one.send(b"hello\r\n")

        self.two.command("DELETE Box")

        self.assertEqual([b"* 1 EXPUNGE", b"a5 OK NOOP completed"], self.one.lines("NOOP"))


class IdleTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        self.harness.deliver(message(1))
        self.client = self.harness.selected()

    def test_delivery_is_pushed_while_idling(self) -> None:
        """Mail delivered through the store reaches an idling client at once (RFC 2177)."""
        self.assertEqual(b"+ idling\r\n", self.client.command("IDLE"))

        self.harness.deliver(message(2))

        self.assertEqual(b"* 2 EXISTS\r\n* 2 RECENT\r\n", self.client.take())
        self.assertEqual(b"a3 OK IDLE terminated\r\n", self.client.send(b"DONE\r\n"))

    def test_flags_and_expunges_are_pushed(self) -> None:
        """Another session's STORE and EXPUNGE reach the idling client as they happen."""
        other = self.harness.selected()
        self.client.command("IDLE")

        other.command("STORE 1 +FLAGS (\\Deleted)")
        self.assertEqual(b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))\r\n", self.client.take())
        other.command("EXPUNGE")

        self.assertEqual(b"* 1 EXPUNGE\r\n", self.client.take())

    def test_pending_updates_go_out_when_idle_starts(self) -> None:
        """Changes queued before IDLE are sent right after the continuation."""
        self.harness.deliver(message(2))

        self.assertEqual(b"+ idling\r\n* 2 EXISTS\r\n* 2 RECENT\r\n", self.client.command("IDLE"))

    def test_disk_changes_are_found_by_the_refresh_timer(self) -> None:
        """A file added by another program is noticed within REFRESH_INTERVAL."""
        self.client.command("IDLE")
        folder = self.harness.store.account(ALICE).folder("INBOX")
        with open(os.path.join(folder.path, "new", "1.M1P1Q1.other"), "wb") as f:
            f.write(message(9))

        self.harness.reactor.advance(REFRESH_INTERVAL)

        self.assertEqual(b"* 2 EXISTS\r\n* 2 RECENT\r\n", self.client.take())

    def test_keepalive(self) -> None:
        """An idling client gets ``* OK Still here`` now and then."""
        self.client.command("IDLE")

        self.harness.reactor.pump([REFRESH_INTERVAL] * int(KEEPALIVE_INTERVAL / REFRESH_INTERVAL))

        self.assertEqual(b"* OK Still here\r\n", self.client.take())

    def test_other_input_ends_idle(self) -> None:
        """Anything but DONE ends IDLE with BAD; commands work again afterwards."""
        self.client.command("IDLE")

        self.assertEqual(b"a3 BAD Expected DONE\r\n", self.client.send(b"x NOOP\r\n"))
        self.assertEqual(b"a4 OK NOOP completed", self.client.tagged("NOOP"))
        self.assertEqual([], self.harness.reactor.getDelayedCalls()[1:])

    def test_idle_without_mailbox(self) -> None:
        """IDLE in the authenticated state just waits for DONE."""
        client = self.harness.login()

        self.assertEqual(b"+ idling\r\n", client.command("IDLE"))
        self.assertEqual(b"a2 OK IDLE terminated\r\n", client.send(b"done\r\n"))

    def test_connection_lost_while_idling(self) -> None:
        """A client that vanishes mid-IDLE leaves no timer or listener behind."""
        self.client.command("IDLE")
        folder = self.client.session.selected.folder  # type: ignore[union-attr]

        self.client.session.connectionLost(None)

        self.assertEqual([], folder._listeners)
        self.assertEqual([], self.harness.reactor.getDelayedCalls())
