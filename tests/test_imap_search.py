"""Tests for SEARCH and UID SEARCH, including Dovecot's answers over the shared corpus."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from twisted.trial import unittest

from mailsuite.store import Folder
from tests.test_imap_harness import ALICE, Harness, message

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus")


def numbers(line: bytes) -> list[int]:
    assert line.startswith(b"* SEARCH"), line
    return [int(n) for n in line.split()[2:]]


class SearchTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        self.harness.deliver(message(1, subject="Lunch", body="pizza"))
        self.harness.deliver(message(2, subject="Report", body="numbers"))
        self.harness.deliver(message(3, subject="lunch again", body="pasta " * 400))
        self.folder = self.harness.store.account(ALICE).folder("INBOX")
        self.folder.set_flags(self.folder.messages[1], ["\\Seen", "\\Flagged"])
        self.client = self.harness.selected()

    def search(self, criteria: str) -> list[int]:
        lines = self.client.lines(criteria)
        self.assertTrue(lines[-1].endswith(b"OK SEARCH completed"), lines[-1])
        return numbers(lines[0])

    def test_flag_keys(self) -> None:
        """Flag keys and their UN-forms read the Maildir letters."""
        self.assertEqual([2], self.search("SEARCH SEEN"))
        self.assertEqual([1, 3], self.search("SEARCH UNSEEN"))
        self.assertEqual([2], self.search("SEARCH FLAGGED"))
        self.assertEqual([1, 2, 3], self.search("SEARCH UNDELETED"))
        self.assertEqual([], self.search("SEARCH DRAFT"))

    def test_keywords(self) -> None:
        """KEYWORD and UNKEYWORD use the folder's keyword letters; unknown ones match none."""
        self.client.command("STORE 3 +FLAGS.SILENT ($Junk)")

        self.assertEqual([3], self.search("SEARCH KEYWORD $junk"))
        self.assertEqual([1, 2], self.search("SEARCH UNKEYWORD $Junk"))
        self.assertEqual([], self.search("SEARCH KEYWORD Nothing"))
        self.assertEqual([1, 2, 3], self.search("SEARCH UNKEYWORD Nothing"))

    def test_recent_new_old(self) -> None:
        """NEW is RECENT and UNSEEN; OLD is NOT RECENT.

        Message 2 was flagged (moved out of ``new/``) before any session
        looked, so it is not recent.
        """
        self.assertEqual([1, 3], self.search("SEARCH RECENT"))
        self.assertEqual([2], self.search("SEARCH OLD"))
        self.client.command("STORE 1 +FLAGS.SILENT (\\Seen)")
        self.assertEqual([3], self.search("SEARCH NEW"))

    def test_text_keys(self) -> None:
        """SUBJECT, BODY, FROM and TEXT are case-insensitive substring matches."""
        self.assertEqual([1, 3], self.search("SEARCH SUBJECT lunch"))
        self.assertEqual([3], self.search('SEARCH BODY "PASTA"'))
        self.assertEqual([2], self.search("SEARCH FROM sender2"))
        self.assertEqual([2], self.search("SEARCH TEXT numbers"))
        self.assertEqual([1, 2, 3], self.search('SEARCH HEADER Subject ""'))
        self.assertEqual([], self.search('SEARCH HEADER X-Nope ""'))

    def test_sizes_uids_and_sets(self) -> None:
        """LARGER, SMALLER, UID and message-number sets come from metadata."""
        self.assertEqual([3], self.search("SEARCH LARGER 1000"))
        self.assertEqual([1, 2], self.search("SEARCH SMALLER 1000"))
        self.assertEqual([2, 3], self.search("SEARCH UID 2:*"))
        self.assertEqual([1, 3], self.search("SEARCH 1,3:*"))
        self.assertEqual([], self.search("SEARCH 7:9"))

    def test_boolean_combinations(self) -> None:
        """NOT, OR and parenthesised groups combine keys."""
        self.assertEqual([1], self.search("SEARCH SUBJECT lunch NOT LARGER 1000"))
        self.assertEqual([2, 3], self.search("SEARCH OR SEEN BODY pasta"))
        self.assertEqual([1], self.search("SEARCH (UNSEEN SMALLER 1000)"))

    def test_dates(self) -> None:
        """SENT* keys read the Date: header; BEFORE/ON/SINCE the arrival date."""
        self.assertEqual([2, 3], self.search("SEARCH SENTSINCE 3-Jan-2024"))
        self.assertEqual([3], self.search("SEARCH SENTON 4-Jan-2024"))
        self.assertEqual([1], self.search("SEARCH SENTBEFORE 3-Jan-2024"))
        self.assertEqual([1, 2, 3], self.search("SEARCH SINCE 1-Jan-2000"))
        self.assertEqual([], self.search("SEARCH BEFORE 1-Jan-2000"))

    def test_uid_search_answers_uids(self) -> None:
        """UID SEARCH answers with UIDs, not message numbers."""
        self.client.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.client.command("EXPUNGE")

        self.assertEqual([3], self.search("UID SEARCH SUBJECT lunch"))
        self.assertEqual([2], self.search("SEARCH SUBJECT lunch"))

    def test_charsets(self) -> None:
        """UTF-8 and US-ASCII are accepted; others are NO [BADCHARSET (...)]."""
        self.assertEqual([1, 3], self.search("SEARCH CHARSET UTF-8 SUBJECT lunch"))
        self.assertEqual([1, 3], self.search("SEARCH CHARSET us-ascii SUBJECT lunch"))
        self.assertEqual(
            b"a5 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset",
            self.client.tagged("SEARCH CHARSET KOI8-R SUBJECT lunch"),
        )

    def test_syntax_errors(self) -> None:
        """Unknown keys and deep nesting are BAD, not crashes."""
        self.assertIn(b"BAD", self.client.tagged("SEARCH BOGUS"))
        self.assertIn(b"BAD", self.client.tagged("SEARCH " + "NOT " * 5000 + "ALL"))
        self.assertIn(b"BAD", self.client.tagged("SEARCH " + "(" * 5000 + "ALL"))

    def test_metadata_search_reads_no_file(self) -> None:
        """Flag, size and UID keys never open a message file."""

        def forbidden(*args: Any) -> bytes:
            raise AssertionError("a message file was read")

        self.patch(Folder, "read", forbidden)

        self.assertEqual([1], self.search("SEARCH UNSEEN SMALLER 1000 UID 1:2"))

    def test_cheap_keys_run_first(self) -> None:
        """With SEEN first-tested, BODY reads only the messages that are seen."""
        read: list[int] = []
        real = Folder.read

        def counting(folder: Folder, msg: Any) -> bytes:
            read.append(msg.uid)
            return real(folder, msg)

        self.patch(Folder, "read", counting)

        self.assertEqual([2], self.search("SEARCH BODY numbers SEEN"))
        self.assertEqual([2], read)


class CorpusSearchTests(unittest.TestCase):
    """Our answers to the corpus searches Dovecot answered (shared/corpus/oracle)."""

    def setUp(self) -> None:
        oracle = os.path.join(CORPUS, "oracle", "search.json")
        if not os.path.exists(oracle):
            raise unittest.SkipTest("the shared corpus is not present")
        with open(oracle, encoding="utf-8") as f:
            self.searches = json.load(f)["searches"]
        self.harness = Harness(self)
        client = self.harness.selected()
        for name in self.searches[0]["files"]:
            with open(os.path.join(CORPUS, "messages", name), "rb") as f:
                data = f.read()
            client.send(b"ap APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
        self.client = client

    def test_oracle_searches(self) -> None:
        """Every oracle search gives Dovecot's UIDs.

        Between the UNSEEN and NOT SEEN searches the oracle marked every
        fourth message \\Seen; so do we.
        """
        wrong = {}
        for search in self.searches:
            tag, command = search["command"].split(" ", 1)
            if tag == "A1313":
                seen = ",".join(str(uid) for uid in range(1, 132, 4))
                self.client.command(f"UID STORE {seen} +FLAGS.SILENT (\\Seen)")
            found = numbers(self.run_search(command).split(b"\r\n")[0])
            if found != search["uids"]:
                wrong[command] = (search["uids"], found)

        self.assertEqual({}, wrong)

    def run_search(self, command: str) -> bytes:
        """Send a search, with its literal when the oracle used one."""
        if "{" not in command:
            return self.client.command(command)
        head, text = command.split("\r\n", 1)
        match = re.search(r"\{(\d+)\}", head)
        assert match is not None
        self.client.send(b"s " + head.encode() + b"\r\n")
        return self.client.send(text.encode("utf-8")[: int(match.group(1))] + b"\r\n")
