"""Tests for FETCH and UID FETCH: items, sections, partials, \\Seen, sets and back-pressure."""

from __future__ import annotations

import re
from typing import Any

from twisted.trial import unittest

from mailsuite.imap import cache as cache_module
from mailsuite.imap.responses import internaldate
from mailsuite.store import Folder
from tests.test_imap_harness import ALICE, MESSAGE, Harness, message

MULTIPART = (
    b"From: a@example.net\r\n"
    b"Subject: parts\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n'
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"part one\r\n"
    b"--b\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>two</p>\r\n"
    b"--b--\r\n"
)


class FetchTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        self.harness.deliver(MESSAGE)
        self.harness.deliver(MULTIPART)
        self.client = self.harness.selected()
        self.folder = self.harness.store.account(ALICE).folder("INBOX")

    def test_body_is_byte_exact(self) -> None:
        """BODY.PEEK[] returns the stored message exactly, as a literal."""
        out = self.client.command("FETCH 1 BODY.PEEK[]")

        self.assertEqual(
            b"* 1 FETCH (BODY[] {%d}\r\n" % len(MESSAGE)
            + MESSAGE
            + b")\r\na3 OK FETCH completed\r\n",
            out,
        )

    def test_partial(self) -> None:
        """``BODY[]<5.10>`` returns those octets, labelled with the origin only."""
        out = self.client.command("FETCH 1 BODY.PEEK[]<5.10>")

        self.assertEqual(b"* 1 FETCH (BODY[]<5> {10}\r\n" + MESSAGE[5:15] + b")\r\n", out[:-23])

    def test_partial_past_the_end_is_empty(self) -> None:
        """A partial starting after the end is an empty string, not the whole message."""
        out = self.client.command("FETCH 1 BODY.PEEK[]<100000.10>")

        self.assertEqual(b'* 1 FETCH (BODY[]<100000> "")\r\na3 OK FETCH completed\r\n', out)

    def test_partial_running_past_the_end(self) -> None:
        """A partial that starts inside and runs past the end is cut at the end."""
        size = len(MESSAGE)
        out = self.client.command(f"FETCH 1 BODY.PEEK[]<{size - 3}.100>")

        self.assertIn(b"BODY[]<%d> {3}\r\n" % (size - 3) + MESSAGE[-3:] + b")", out)

    def test_header_text_and_rfc822_items(self) -> None:
        """HEADER, TEXT and the RFC822 items carry the right octets."""
        header, _, text = MESSAGE.partition(b"\r\n\r\n")
        header += b"\r\n\r\n"
        out = self.client.command("FETCH 1 (BODY.PEEK[HEADER] RFC822.HEADER BODY.PEEK[TEXT])")

        self.assertIn(b"BODY[HEADER] {%d}\r\n" % len(header) + header, out)
        self.assertIn(b"RFC822.HEADER {%d}\r\n" % len(header) + header, out)
        self.assertIn(b"BODY[TEXT] {%d}\r\n" % len(text) + text, out)

    def test_header_fields(self) -> None:
        """HEADER.FIELDS picks fields; the label lists them upper case, as Dovecot does."""
        out = self.client.command("FETCH 1 BODY.PEEK[HEADER.FIELDS (subject From)]")

        fields = b"From: Bob <bob@example.net>\r\nSubject: Hello there\r\n\r\n"
        self.assertIn(b"BODY[HEADER.FIELDS (SUBJECT FROM)] {%d}\r\n" % len(fields) + fields, out)

    def test_mime_parts(self) -> None:
        """Part numbers and MIME headers of a multipart message."""
        out = self.client.command("FETCH 2 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[3])")

        self.assertIn(b"BODY[1] {8}\r\npart one BODY", out)
        self.assertIn(b"BODY[2.MIME] {27}\r\nContent-Type: text/html\r\n\r\n", out)
        # A part that does not exist is an empty string (as Dovecot).
        self.assertIn(b'BODY[3] ""', out)

    def test_structure_items(self) -> None:
        """ENVELOPE, BODYSTRUCTURE and BODY come from the message model."""
        out = self.client.command("FETCH 2 (ENVELOPE BODYSTRUCTURE BODY)")

        self.assertIn(b'ENVELOPE (NIL "parts" ', out)
        self.assertIn(b'BODYSTRUCTURE (("text" "plain" ', out)
        self.assertIn(b'"mixed" ("boundary" "b") NIL NIL NIL)', out)
        self.assertIn(b' BODY (("text" "plain" ', out)
        self.assertTrue(out.endswith(b"a3 OK FETCH completed\r\n"))

    def test_macros_and_internaldate(self) -> None:
        """FAST gives FLAGS, INTERNALDATE and RFC822.SIZE; the date has the RFC format."""
        out = self.client.lines("FETCH 1 FAST")[0]

        self.assertTrue(out.startswith(b"* 1 FETCH (FLAGS (\\Recent) INTERNALDATE "), out)
        self.assertRegex(out, rb'INTERNALDATE "\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}"')
        self.assertTrue(out.endswith(b" RFC822.SIZE %d)" % len(MESSAGE)))

    def test_body_fetch_sets_seen(self) -> None:
        """BODY[] sets \\Seen and reports FLAGS in the same response; PEEK does not."""
        self.assertNotIn(b"FLAGS", self.client.command("FETCH 1 BODY.PEEK[TEXT]"))

        out = self.client.command("FETCH 1 BODY[TEXT]")

        self.assertIn(b" FLAGS (\\Seen \\Recent))\r\n", out)
        self.assertIn("S", self.folder.messages[0].letters)
        self.assertNotIn(b"FLAGS", self.client.command("FETCH 1 BODY[TEXT]"))

    def test_rfc822_sets_seen_and_reports_requested_flags_once(self) -> None:
        """RFC822 sets \\Seen; with FLAGS requested it is not repeated."""
        out = self.client.lines("FETCH 2 (FLAGS RFC822.SIZE RFC822)")[0]

        self.assertTrue(out.startswith(b"* 2 FETCH (FLAGS (\\Seen \\Recent) RFC822.SIZE "))
        self.assertEqual(1, out.count(b"FLAGS"))

    def test_examine_does_not_set_seen(self) -> None:
        """In a read-only mailbox a body fetch changes nothing."""
        client = self.harness.selected(examine=True)

        self.assertNotIn(b"FLAGS", client.command("FETCH 1 BODY[]"))
        self.assertNotIn("S", self.folder.messages[0].letters)

    def test_uid_fetch_includes_uid(self) -> None:
        """UID FETCH answers always carry the UID, first (RFC 3501 6.4.8)."""
        self.assertEqual(
            [b"* 2 FETCH (UID 2 FLAGS (\\Recent))", b"a3 OK FETCH completed"],
            self.client.lines("UID FETCH 2 FLAGS"),
        )

    def test_uid_fetch_of_missing_uids_is_empty(self) -> None:
        """UIDs that do not exist are skipped; the command still succeeds."""
        self.assertEqual([b"a3 OK FETCH completed"], self.client.lines("UID FETCH 7:9 FLAGS"))

    def test_uid_star_beyond_the_top(self) -> None:
        """``UID FETCH 45:*`` with the top UID 2 returns UID 2 (RFC 3501 6.4.8)."""
        self.assertEqual(
            [b"* 2 FETCH (UID 2 FLAGS (\\Recent))", b"a3 OK FETCH completed"],
            self.client.lines("UID FETCH 45:* FLAGS"),
        )

    def test_huge_uid_range(self) -> None:
        """``1:4294967295`` does not allocate a list of that size."""
        self.assertEqual(3, len(self.client.lines("UID FETCH 1:4294967295 UID")))

    def test_ranges_in_either_order(self) -> None:
        """``2:1`` is the same set as ``1:2``."""
        self.assertEqual(3, len(self.client.lines("FETCH 2:1 UID")))

    def test_invalid_message_numbers(self) -> None:
        """Message numbers above EXISTS are BAD (RFC 3501 9); so is ``*`` when empty."""
        self.assertIn(b"BAD", self.client.tagged("FETCH 3 FLAGS"))
        self.assertIn(b"BAD", self.client.tagged("FETCH 1:5 FLAGS"))
        self.assertIn(b"BAD", self.client.tagged("FETCH 0 FLAGS"))

        empty = self.harness.selected("Sent")
        self.assertIn(b"BAD", empty.tagged("FETCH 1:* FLAGS"))
        self.assertEqual([b"a4 OK FETCH completed"], empty.lines("UID FETCH 1:* FLAGS"))

    def test_bad_syntax(self) -> None:
        """Broken FETCH arguments are BAD with the reason."""
        self.assertEqual(
            b"a3 BAD Syntax error: unknown FETCH item BOGUS", self.client.tagged("FETCH 1 BOGUS")
        )
        self.assertIn(b"BAD", self.client.tagged("FETCH 1 (FLAGS"))
        self.assertIn(b"BAD", self.client.tagged("FETCH x FLAGS"))

    def test_nul_is_sent_as_0x80(self) -> None:
        """NUL cannot travel in an IMAP4rev1 literal; it goes as 0x80, size unchanged."""
        self.harness.deliver(b"Subject: nul\r\n\r\na\0b\r\n")
        self.client.command("NOOP")

        out = self.client.command("FETCH 3 BODY.PEEK[TEXT]")

        self.assertIn(b"BODY[TEXT] {5}\r\na\x80b\r\n)", out)


class FetchCostTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        for n in range(1, 6):
            self.harness.deliver(message(n))
        self.client = self.harness.selected()

    def test_metadata_fetch_reads_no_file(self) -> None:
        """UID, FLAGS, RFC822.SIZE and INTERNALDATE come from metadata, not message files."""

        def forbidden(*args: Any) -> bytes:
            raise AssertionError("a message file was read")

        self.patch(Folder, "read", forbidden)

        lines = self.client.lines("UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)")

        self.assertEqual(6, len(lines))
        self.assertRegex(
            lines[0], rb"\* 1 FETCH \(UID 1 FLAGS \(\\Recent\) RFC822.SIZE \d+ INTERNALDATE"
        )

    def test_structure_and_header_fields_are_kept_in_the_index(self) -> None:
        """A second ENVELOPE / header-field fetch is served from the index, no file read."""
        command = "UID FETCH 1:* (ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (From Subject)])"
        first = self.client.command(command)
        self.harness.imap.cache.clear()

        def forbidden(*args: Any) -> bytes:
            raise AssertionError("a message file was read")

        self.patch(Folder, "read", forbidden)

        self.assertEqual(first.replace(b"a3 OK", b"a4 OK"), self.client.command(command))

    def test_parse_is_cached_between_fetches(self) -> None:
        """A header fetch then a body fetch of one message parse it once."""
        made: list[bytes] = []
        real = cache_module.ParsedMessage

        def counting(data: bytes) -> Any:
            made.append(data)
            return real(data)

        self.patch(cache_module, "ParsedMessage", counting)

        self.client.command("FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)])")
        self.client.command("FETCH 1 (ENVELOPE BODY.PEEK[TEXT]<0.2048>)")

        self.assertEqual(1, len(made))

    def test_internaldate_of_append(self) -> None:
        """APPEND's date-time is the INTERNALDATE served afterwards."""
        self.client.command('APPEND INBOX "17-Jul-2024 02:44:25 -0700" {5}')
        self.client.send(b"hello\r\n")

        out = self.client.command("FETCH 6 INTERNALDATE")

        match = re.search(rb"INTERNALDATE (\"[^\"]+\")", out)
        assert match is not None
        self.assertEqual(internaldate(1721209465.0), match.group(1))


class BackPressureTests(unittest.TestCase):
    def test_long_fetch_waits_for_the_client(self) -> None:
        """A FETCH whose output fills the send buffer stops until the transport drains."""
        harness = Harness(self)
        body = "x" * 30000
        for n in range(1, 11):
            harness.deliver(message(n, body=body))
        client = harness.selected()
        transport = client.transport
        original_write = transport.write

        def write(data: bytes) -> None:
            original_write(data)
            if transport.producer is not None and len(transport.value()) > 100_000:
                transport.producer.pauseProducing()

        transport.write = write  # type: ignore[method-assign]

        out = client.command("FETCH 1:* BODY.PEEK[]")
        self.assertNotIn(b"a3 OK", out)
        # Written in 64 KiB pieces: the one that passed 100 KB is the last.
        self.assertEqual(6, out.count(b" FETCH ("))

        transport.producer.resumeProducing()
        rest = client.take()

        self.assertEqual(10, (out + rest).count(b" FETCH ("))
        self.assertTrue(rest.endswith(b"a3 OK FETCH completed\r\n"))
        self.assertIsNone(transport.producer)

    def test_client_gone_while_waiting(self) -> None:
        """If the client disconnects while a FETCH waits to write, the FETCH just stops."""
        harness = Harness(self)
        for n in range(1, 11):
            harness.deliver(message(n, body="y" * 30000))
        client = harness.selected()
        transport = client.transport
        original_write = transport.write

        def write(data: bytes) -> None:
            original_write(data)
            if transport.producer is not None:
                transport.producer.pauseProducing()

        transport.write = write  # type: ignore[method-assign]
        client.command("FETCH 1:* BODY.PEEK[]")

        client.session.connectionLost(None)

        self.assertNotIn(b"a3 OK", client.take())
