"""Tests for SEARCH at scale: the search cache, work in slices, ESEARCH and MODSEQ."""

from __future__ import annotations

import glob
import os
from typing import Any

from twisted.trial import unittest

from mailsuite.imap import offload, searchindex
from mailsuite.imap.message import ParsedMessage
from mailsuite.imap.mime import parse_header, parse_message
from mailsuite.imap.searchindex import SearchRecords, read_head
from mailsuite.store import Folder, Store, to_crlf
from tests.test_imap_harness import ALICE, Harness, SyncReactor, message

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus", "messages")


def numbers(line: bytes) -> list[int]:
    assert line.startswith(b"* SEARCH"), line
    return [int(n) for n in line.split()[2:] if n.isdigit()]


class Fixture:
    """Three delivered messages, one of them seen and flagged, and a session on INBOX."""

    def __init__(self, testcase: unittest.TestCase) -> None:
        self.harness = Harness(testcase)
        self.harness.deliver(message(1, subject="Lunch", body="pizza"))
        self.harness.deliver(message(2, subject="Report", body="numbers"))
        self.harness.deliver(message(3, subject="lunch again", body="pasta " * 400))
        self.folder = self.harness.store.account(ALICE).folder("INBOX")
        self.folder.set_flags(self.folder.messages[1], ["\\Seen", "\\Flagged"])
        self.client = self.harness.selected()

    def search(self, criteria: str) -> list[int]:
        lines = self.client.lines(criteria)
        assert lines[-1].endswith(b"OK SEARCH completed"), lines
        return numbers(lines[0])


def forbid_reading(testcase: unittest.TestCase) -> None:
    """Make any read of a message file fail the test."""

    def forbidden(*args: Any) -> Any:
        raise AssertionError("a message file was read")

    testcase.patch(Folder, "read", forbidden)
    testcase.patch(Folder, "open_message", forbidden)


class SearchCacheTests(unittest.TestCase):
    def setUp(self) -> None:
        self.fixture = Fixture(self)
        self.folder = self.fixture.folder

    def test_second_header_search_reads_no_file(self) -> None:
        """After the first search, SUBJECT/FROM/TO/HEADER/SENT* answer from the records."""
        self.assertEqual([1, 3], self.fixture.search("SEARCH SUBJECT lunch"))
        forbid_reading(self)

        self.assertEqual([1, 3], self.fixture.search("SEARCH SUBJECT LUNCH"))
        self.assertEqual([2], self.fixture.search("SEARCH FROM sender2"))
        self.assertEqual([1, 2, 3], self.fixture.search("SEARCH TO alice@example.com"))
        self.assertEqual([2], self.fixture.search('SEARCH HEADER From "Sender 2"'))
        self.assertEqual([1, 2, 3], self.fixture.search('SEARCH HEADER Date ""'))
        self.assertEqual([], self.fixture.search('SEARCH HEADER Cc ""'))
        self.assertEqual([], self.fixture.search("SEARCH CC alice"))
        self.assertEqual([3], self.fixture.search("SEARCH SENTON 4-Jan-2024"))
        self.assertEqual([1], self.fixture.search("SEARCH SENTBEFORE 3-Jan-2024"))

    def test_first_search_reads_headers_only(self) -> None:
        """Filling the records reads each header, never a whole message (Folder.read)."""

        def forbidden(*args: Any) -> bytes:
            raise AssertionError("a whole message was read")

        self.patch(Folder, "read", forbidden)

        self.assertEqual([2], self.fixture.search("SEARCH SUBJECT report"))

    def test_records_survive_a_restart(self) -> None:
        """The records are kept in the folder index: a new process reads no file."""
        self.fixture.search("SEARCH SUBJECT lunch")
        store = Store(self.fixture.harness.store.root, SyncReactor())
        folder = store.account(ALICE).folder("INBOX")
        forbid_reading(self)

        records = SearchRecords(folder)

        for m in folder.messages:
            self.assertIsNotNone(records.kept(m))
        self.assertIn("lunch again 3", records.get(folder, folder.messages[2]))

    def test_expunged_records_are_dropped(self) -> None:
        """An expunged message's record leaves memory and the index."""
        self.fixture.search("SEARCH SUBJECT lunch")
        first = self.folder.messages[0]
        self.fixture.client.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.fixture.client.command("EXPUNGE")

        self.assertIsNone(searchindex.records_of(self.folder).kept(first))
        self.assertNotIn(first.uid, self.folder.index.search_texts())
        self.assertEqual([2], self.fixture.search("SEARCH SUBJECT lunch"))

    def test_records_of_an_older_version_are_remade(self) -> None:
        """A record written by another VERSION is not trusted."""
        uid = self.folder.messages[0].uid
        self.folder.index.put_search_texts([(uid, "s0\x1fbogus")])

        self.assertIsNone(SearchRecords(self.folder).kept(self.folder.messages[0]))

    def test_separators_in_headers_and_search_strings(self) -> None:
        """Control characters cannot shift a record's fields or join two values."""
        self.fixture.harness.deliver(
            b"Subject: qq\x1fww\x1ezz\r\nFrom: <odd@example.net>\r\n"
            b"To: t@example.com\r\n\r\nhi\r\n"
        )
        client = self.fixture.harness.selected()

        self.assertEqual(b"* SEARCH 4", client.lines("SEARCH TO t@example.com")[0])
        self.assertEqual(b"* SEARCH 4", client.lines("SEARCH FROM odd@example.net")[0])
        self.assertEqual(b"* SEARCH 4", client.lines("SEARCH SUBJECT zz")[0])
        client.send(b"s1 SEARCH HEADER Subject {5}\r\n")
        self.assertEqual(b"* SEARCH 4\r\ns1 OK SEARCH completed\r\n", client.send(b"ww\x1ezz\r\n"))

    def test_long_header_and_odd_files(self) -> None:
        """A header longer than one read, LF line ends and a file with no body are read right."""
        long_header = b"".join(b"X-Filler-%d: %s\n" % (i, b"z" * 70) for i in range(400))
        self.write_file("a", long_header + b"Subject: far down\n\nbody\n")
        self.write_file("b", b"Subject: no body at all\nFrom: me@example.net\n")
        self.write_file("c", b"\nSubject: in the body\n")
        self.folder.refresh(force=True)
        client = self.fixture.harness.selected()

        self.assertEqual(b"* SEARCH 4", client.lines("SEARCH SUBJECT far")[0])
        self.assertEqual(b"* SEARCH 5", client.lines("SEARCH SUBJECT body")[0])
        self.assertEqual(b"* SEARCH", client.lines('SEARCH SUBJECT "the body"')[0])
        head = read_head(self.folder, self.folder.messages[3])
        self.assertTrue(head.endswith(b"Subject: far down\r\n\r\n"), head[-40:])

    def write_file(self, name: str, data: bytes) -> None:
        with open(os.path.join(self.folder.path, "cur", f"100{name}.x:2,"), "wb") as f:
            f.write(data)

    def test_other_header_fields_read_only_the_header(self) -> None:
        """HEADER of a field the records do not hold reads the header, not the message."""

        def forbidden(*args: Any) -> bytes:
            raise AssertionError("a whole message was read")

        self.patch(Folder, "read", forbidden)

        self.assertEqual([], self.fixture.search('SEARCH HEADER X-Mailer ""'))
        self.assertEqual([3], self.fixture.search('SEARCH HEADER Subject "again"'))


class HeaderParseTests(unittest.TestCase):
    def test_header_parse_matches_full_parse(self) -> None:
        """The header-only parse finds the same fields and body start as the full parse."""
        names = sorted(glob.glob(os.path.join(CORPUS, "*")))
        if not names:
            raise unittest.SkipTest("the shared corpus is not present")
        for name in names:
            with open(name, "rb") as f:
                data = f.read()
            full, head = parse_message(data), parse_header(data)

            self.assertEqual(full.headers, head.headers, name)
            self.assertEqual(full.body_start, head.body_start, name)


class SlicingTests(unittest.TestCase):
    def setUp(self) -> None:
        self.fixture = Fixture(self)
        # Every slice is over at once: the work yields after each message.
        self.patch(offload, "SLICE_SECONDS", 0)
        self.reactor = self.fixture.harness.reactor

    def test_body_search_yields_and_others_are_served(self) -> None:
        """A long SEARCH lets other sessions' commands through between slices."""
        other = self.fixture.harness.selected()

        self.assertEqual(b"", self.fixture.client.command("SEARCH BODY pasta"))
        self.assertEqual(b"a3 OK NOOP completed\r\n", other.command("NOOP"))
        self.assertTrue(self.reactor.getDelayedCalls())
        self.reactor.advance(0)

        self.assertEqual(b"* SEARCH 3\r\na3 OK SEARCH completed\r\n", self.fixture.client.take())

    def test_session_waits_for_its_search(self) -> None:
        """Commands pipelined behind a sliced SEARCH run after it, in order."""
        out = self.fixture.client.send(b"s1 SEARCH TEXT numbers\r\ns2 NOOP\r\n")
        self.assertEqual(b"", out)

        self.reactor.advance(0)

        self.assertEqual(
            b"* SEARCH 2\r\ns1 OK SEARCH completed\r\ns2 OK NOOP completed\r\n",
            self.fixture.client.take(),
        )

    def test_client_gone_mid_search(self) -> None:
        """A client that leaves mid-search stops the work; nothing is written or logged."""
        read: list[int] = []
        real = Folder.read

        def counting(folder: Folder, msg: Any) -> bytes:
            read.append(msg.uid)
            return real(folder, msg)

        self.patch(Folder, "read", counting)
        self.fixture.client.command("SEARCH BODY nothing")
        self.fixture.client.session.connectionLost(None)

        self.reactor.advance(0)

        self.assertEqual(1, len(read))
        self.assertEqual(b"", self.fixture.client.take())
        self.assertEqual([], self.flushLoggedErrors())

    def test_fetch_of_bodies_yields(self) -> None:
        """A FETCH of many bodies lets other sessions run between slices."""
        other = self.fixture.harness.selected()

        first = self.fixture.client.command("FETCH 1:* BODY.PEEK[]")
        self.assertEqual(b"a3 OK NOOP completed\r\n", other.command("NOOP"))
        self.reactor.advance(0)

        out = first + self.fixture.client.take()
        self.assertEqual(3, out.count(b" FETCH (BODY[] {"))
        self.assertTrue(out.endswith(b"a3 OK FETCH completed\r\n"), out[-60:])


class ESearchTests(unittest.TestCase):
    def setUp(self) -> None:
        self.fixture = Fixture(self)
        self.client = self.fixture.client

    def test_return_options(self) -> None:
        """RETURN (MIN MAX COUNT ALL) answers one ESEARCH line with the tag (RFC 4731)."""
        self.assertEqual(
            [b'* ESEARCH (TAG "a3") MIN 1 MAX 3 COUNT 2 ALL 1,3', b"a3 OK SEARCH completed"],
            self.client.lines("SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN"),
        )
        self.assertEqual(
            [b'* ESEARCH (TAG "a4") COUNT 3', b"a4 OK SEARCH completed"],
            self.client.lines("SEARCH RETURN (COUNT) ALL"),
        )

    def test_empty_return_means_all(self) -> None:
        """RETURN () is RETURN (ALL); UID SEARCH reports UIDs and says UID."""
        uids = [m.uid for m in self.fixture.folder.messages]

        line = self.client.lines("UID SEARCH RETURN () CHARSET UTF-8 SUBJECT lunch")[0]

        self.assertEqual(b'* ESEARCH (TAG "a3") UID ALL %d,%d' % (uids[0], uids[2]), line)

    def test_no_match(self) -> None:
        """With no match only COUNT is given (0); MIN, MAX and ALL are left out."""
        self.assertEqual(
            b'* ESEARCH (TAG "a3") COUNT 0',
            self.client.lines("SEARCH RETURN (MIN MAX ALL COUNT) SUBJECT nothing")[0],
        )
        self.assertEqual(
            b'* ESEARCH (TAG "a4")', self.client.lines("SEARCH RETURN (MIN) DRAFT")[0]
        )

    def test_unsupported_options(self) -> None:
        """SAVE (RFC 5182) and unknown options are BAD; a missing list is a syntax error."""
        self.assertIn(b"a3 BAD", self.client.tagged("SEARCH RETURN (SAVE) ALL"))
        self.assertIn(b"a4 BAD", self.client.tagged("SEARCH RETURN (BOGUS) ALL"))
        self.assertIn(b"a5 BAD", self.client.tagged("SEARCH RETURN ALL"))


class ModseqSearchTests(unittest.TestCase):
    def setUp(self) -> None:
        self.fixture = Fixture(self)
        self.client = self.fixture.client
        self.messages = self.fixture.folder.messages

    def test_modseq_key(self) -> None:
        """MODSEQ n finds messages changed at n or later, and reports the highest (RFC 7162)."""
        self.client.command("STORE 3 +FLAGS.SILENT (\\Answered)")
        changed = self.messages[2].modseq

        self.assertEqual(
            b"* SEARCH 3 (MODSEQ %d)" % changed, self.client.lines(f"SEARCH MODSEQ {changed}")[0]
        )
        self.assertEqual(b"* SEARCH", self.client.lines(f"SEARCH MODSEQ {changed + 1}")[0])
        everything = self.client.lines("SEARCH MODSEQ 1")[0]
        self.assertEqual(b"* SEARCH 1 2 3 (MODSEQ %d)" % changed, everything)

    def test_entry_name_form(self) -> None:
        """The per-flag entry name and type are accepted and read as plain MODSEQ."""
        line = self.client.lines('SEARCH MODSEQ "/flags/\\\\draft" all 1 NOT SEEN')[0]

        self.assertTrue(line.startswith(b"* SEARCH 1 3 (MODSEQ "), line)

    def test_modseq_in_esearch(self) -> None:
        """ESEARCH ends with MODSEQ: of MIN/MAX when only those were asked, else of all."""
        self.client.command("STORE 1 +FLAGS.SILENT (\\Answered)")
        first = self.messages[0].modseq
        highest = max(m.modseq for m in self.messages)

        self.assertEqual(
            b'* ESEARCH (TAG "a4") MIN 1 MODSEQ %d' % first,
            self.client.lines("SEARCH RETURN (MIN) MODSEQ 1")[0],
        )
        self.assertEqual(
            b'* ESEARCH (TAG "a5") COUNT 3 MODSEQ %d' % highest,
            self.client.lines("SEARCH RETURN (COUNT) MODSEQ 1")[0],
        )

    def test_bad_modseq(self) -> None:
        """A modseq beyond 2^63-1, or a bad entry type, is BAD."""
        self.assertIn(b"BAD", self.client.tagged("SEARCH MODSEQ 99999999999999999999"))
        self.assertIn(b"BAD", self.client.tagged('SEARCH MODSEQ "/flags/x" some 5'))


class SinglePartTests(unittest.TestCase):
    def test_single_part_body_search_matches_full_parse(self) -> None:
        """BODY and TEXT over a header-only parse agree with the full MIME walk."""
        names = sorted(glob.glob(os.path.join(CORPUS, "*")))
        if not names:
            raise unittest.SkipTest("the shared corpus is not present")
        for name in names:
            with open(name, "rb") as f:
                data = to_crlf(f.read())
            for key in ("BODY", "TEXT"):
                for value in ("the", "attachment", "Grüße", "X-Mailer", "e", "zzz"):
                    fast = ParsedMessage(data).matches_text(key, value)
                    full = ParsedMessage(data)
                    full.root  # noqa: B018 - parse the tree first: the full path

                    self.assertEqual(full.matches_text(key, value), fast, (name, key, value))


class ArrivalTests(unittest.TestCase):
    def test_new_mail_is_recorded_on_arrival(self) -> None:
        """Once a folder has records, a delivered message gets one without a search."""
        fixture = Fixture(self)
        fixture.search("SEARCH SUBJECT lunch")
        fixture.harness.deliver(message(4, subject="Fresh"))
        fixture.harness.reactor.advance(0)
        fixture.client.command("NOOP")
        forbid_reading(self)

        self.assertEqual([4], fixture.search("SEARCH SUBJECT fresh"))
        self.assertIn(fixture.folder.messages[3].uid, fixture.folder.index.search_texts())

    def test_large_imports_wait_for_a_search(self) -> None:
        """A rescan that finds many messages records none of them at once."""
        fixture = Fixture(self)
        fixture.search("SEARCH SUBJECT lunch")
        for n in range(4, 5 + searchindex.FILL_ON_ARRIVAL):
            path = os.path.join(fixture.folder.path, "cur", f"{n}.import:2,")
            with open(path, "wb") as f:
                f.write(message(n))
        fixture.folder.refresh(force=True)

        now = fixture.harness.reactor.seconds()
        soon = [c for c in fixture.harness.reactor.getDelayedCalls() if c.getTime() == now]
        self.assertEqual([], soon)


class FetchFillsRecordsTests(unittest.TestCase):
    def test_header_fetch_fills_records(self) -> None:
        """A client's header FETCH records the messages: its first SEARCH opens no file."""
        fixture = Fixture(self)
        fixture.client.command("FETCH 1:* (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        forbid_reading(self)

        self.assertEqual([1, 3], fixture.search("SEARCH SUBJECT lunch"))
