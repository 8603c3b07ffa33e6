"""Tests for COPY, MOVE, their UID forms, and APPEND."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from mailsuite.store import Folder, TemporaryFailure
from tests.test_imap_harness import ALICE, MESSAGE, Harness, message


class CopyTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        for n in range(1, 4):
            self.harness.deliver(message(n))
        self.account = self.harness.store.account(ALICE)
        self.inbox = self.account.folder("INBOX")
        self.inbox.set_flags(self.inbox.messages[1], ["\\Flagged"])
        self.client = self.harness.selected()

    def test_copy_with_copyuid(self) -> None:
        """COPY keeps flags and answers [COPYUID validity source-uids target-uids]."""
        trash = self.account.folder("Trash")

        reply = self.client.tagged("COPY 2:3 Trash")

        self.assertEqual(b"a3 OK [COPYUID %d 2:3 1:2] COPY completed" % trash.uidvalidity, reply)
        self.assertEqual(["F", ""], [m.letters for m in trash.messages])
        self.assertEqual(trash.read(trash.messages[0]), self.inbox.read(self.inbox.messages[1]))
        self.assertEqual(3, len(self.inbox.messages))

    def test_copy_translates_keywords(self) -> None:
        """Keyword letters differ per folder; a copy keeps the keyword names."""
        trash = self.account.folder("Trash")
        trash.keywords.letter_for("Other", create=True)  # takes "a" in Trash
        self.client.command("STORE 1 +FLAGS.SILENT ($Junk)")  # "a" in INBOX

        self.client.command("COPY 1 Trash")

        self.assertEqual(["$Junk"], trash.flags_of(trash.messages[0]))
        self.assertEqual("b", trash.messages[0].letters)

    def test_uid_copy(self) -> None:
        """UID COPY names messages by UID; missing UIDs are skipped."""
        reply = self.client.tagged("UID COPY 3,9 Trash")

        self.assertIn(b"[COPYUID ", reply)
        self.assertIn(b" 3 1]", reply)

    def test_copy_to_missing_folder_is_trycreate(self) -> None:
        """The target must exist: NO [TRYCREATE] (RFC 3501 6.4.7)."""
        self.assertEqual(
            b"a3 NO [TRYCREATE] Mailbox does not exist", self.client.tagged("COPY 1 Nope")
        )

    def test_copy_is_all_or_nothing(self) -> None:
        """When one message cannot be copied, the copies already made are removed."""
        calls: list[int] = []
        real = Folder.append

        def failing(folder: Folder, data: bytes, *args: Any, **kw: Any) -> Any:
            calls.append(1)
            if len(calls) == 2:
                raise TemporaryFailure("disk full")
            return real(folder, data, *args, **kw)

        self.patch(Folder, "append", failing)

        reply = self.client.tagged("COPY 1:3 Trash")

        self.assertEqual(b"a3 NO [UNAVAILABLE] Temporary failure, try again later", reply)
        self.assertEqual([], self.account.folder("Trash").messages)

    def test_move(self) -> None:
        """MOVE: COPYUID untagged first, then the EXPUNGE responses (RFC 6851)."""
        junk = self.account.folder("Junk")

        self.assertEqual(
            [
                b"* OK [COPYUID %d 1:2 1:2] Moved" % junk.uidvalidity,
                b"* 1 EXPUNGE",
                b"* 1 EXPUNGE",
                b"a3 OK MOVE completed",
            ],
            self.client.lines("MOVE 1:2 Junk"),
        )
        self.assertEqual([3], [m.uid for m in self.inbox.messages])
        self.assertEqual(2, len(junk.messages))

    def test_uid_move_and_read_only(self) -> None:
        """UID MOVE works by UID; MOVE out of an EXAMINEd mailbox is refused."""
        self.assertIn(b"* 3 EXPUNGE", self.client.lines("UID MOVE 3 Junk"))

        client = self.harness.selected(examine=True)
        self.assertIn(b"NO [CANNOT]", client.tagged("MOVE 1 Junk"))

    def test_copy_of_expunged_message(self) -> None:
        """Copying a message another session expunged is NO [EXPUNGEISSUED], nothing copied."""
        other = self.harness.selected()
        other.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
        other.command("EXPUNGE")

        self.assertIn(b"NO [EXPUNGEISSUED]", self.client.tagged("COPY 1:2 Trash"))
        self.assertEqual([], self.account.folder("Trash").messages)


class AppendTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        self.client = self.harness.login()
        self.account = self.harness.store.account(ALICE)

    def append(self, head: str, data: bytes) -> bytes:
        continuation = self.client.command(f"{head} {{{len(data)}}}")
        self.assertEqual(b"+ Ready for literal data\r\n", continuation)
        return self.client.send(data + b"\r\n")

    def test_append_with_appenduid(self) -> None:
        """APPEND stores the message byte for byte and answers [APPENDUID validity uid]."""
        drafts = self.account.folder("Drafts")

        out = self.append("APPEND Drafts (\\Draft \\Seen)", MESSAGE)

        self.assertEqual(b"a2 OK [APPENDUID %d 1] APPEND completed\r\n" % drafts.uidvalidity, out)
        self.assertEqual(MESSAGE, drafts.read(drafts.messages[0]))
        self.assertEqual("DS", drafts.messages[0].letters)

    def test_append_non_synchronizing(self) -> None:
        """LITERAL+: the message follows at once, with no continuation."""
        out = self.client.send(b"t APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")

        self.assertTrue(out.startswith(b"t OK [APPENDUID "))

    def test_append_with_keywords(self) -> None:
        """APPEND's flag list may carry keywords."""
        self.append("APPEND INBOX (\\Seen $Label2)", MESSAGE)
        folder = self.account.folder("INBOX")

        self.assertEqual(["\\Seen", "$Label2"], folder.flags_of(folder.messages[0]))

    def test_append_with_date(self) -> None:
        """The date-time argument becomes the internal date."""
        self.append('APPEND INBOX "01-Feb-2020 10:00:00 +0000"', MESSAGE)
        folder = self.account.folder("INBOX")

        self.assertEqual(1580551200.0, folder.internaldate(folder.messages[0]))

    def test_append_to_missing_folder(self) -> None:
        """APPEND to a folder that does not exist is NO [TRYCREATE]."""
        out = self.append("APPEND Nope", MESSAGE)

        self.assertEqual(b"a2 NO [TRYCREATE] Mailbox does not exist\r\n", out)

    def test_append_to_selected_folder_announces_it(self) -> None:
        """APPEND into the selected mailbox is followed by EXISTS before the OK."""
        self.client.command("SELECT INBOX")

        out = self.append("APPEND INBOX", MESSAGE)

        self.assertTrue(out.startswith(b"* 1 EXISTS\r\n* 1 RECENT\r\na3 OK [APPENDUID "), out)

    def test_append_errors(self) -> None:
        """Empty messages, quoted messages and bad dates are refused cleanly."""
        self.assertIn(b"NO [CANNOT]", self.append("APPEND INBOX", b""))
        self.assertIn(b"BAD", self.client.tagged('APPEND INBOX "hello"'))
        self.assertIn(b"BAD", self.append('APPEND INBOX "31-Feb-2020 10:00:00 +0000"', MESSAGE))
        self.assertIn(b"BAD", self.append("APPEND INBOX (\\Seen", MESSAGE))
