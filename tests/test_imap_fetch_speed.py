"""Tests for the fast paths of FETCH: kept values read a chunk at a time, bodies not copied.

They protect the changes that brought bulk header and body downloads near
Dovecot's speed (issue 3), and check that the faster paths answer byte for
byte what the plain ones did.
"""

from __future__ import annotations

import imaplib
import os
from typing import Any

from twisted.internet import threads
from twisted.trial import unittest

from mailsuite.imap.commands import fetch as fetch_module
from mailsuite.store.index import FolderIndex
from mailsuite.store.maildir import to_crlf
from tests.support import start_suite
from tests.test_e2e_imap import IMAP_ONLY
from tests.test_imap_harness import ALICE, Harness, message

HEADERS = "FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])"


class KeptValuesTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        for n in range(1, 41):
            self.harness.deliver(message(n))
        self.client = self.harness.selected()
        self.folder = self.harness.store.account(ALICE).folder("INBOX")

    def count_calls(self, owner: Any, name: str) -> list[Any]:
        """Record each call of ``owner.name`` (still calling it)."""
        calls: list[Any] = []
        original = getattr(owner, name)

        def recorded(*args: Any) -> Any:
            calls.append(args)
            return original(*args)

        setattr(owner, name, recorded)
        return calls

    def test_warm_header_fetch_reads_the_index_once_per_chunk(self) -> None:
        """A second header fetch loads its kept values in one query per chunk, none per message."""
        self.patch(fetch_module, "KEPT_CHUNK", 16)
        self.client.command(HEADERS)
        single = self.count_calls(self.folder, "cached")
        many = self.count_calls(self.folder.index, "blobs")

        self.client.command(HEADERS)

        self.assertEqual([], single)
        self.assertEqual(3, len(many))

    def test_cold_header_fetch_looks_nothing_up_per_message(self) -> None:
        """The first header fetch trusts the chunk's read: no lookup per message before parsing."""
        single = self.count_calls(self.folder, "cached")

        out = self.client.command(HEADERS)

        self.assertEqual([], single)
        self.assertEqual(40, out.count(b"Subject: Message "))

    def test_warm_and_cold_answers_are_identical(self) -> None:
        """Values read a chunk at a time give the bytes the first (parsing) fetch gave."""
        command = "FETCH 1:* (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODYSTRUCTURE)"
        cold = self.client.command(command)

        warm = self.client.command(command)

        self.assertEqual(cold.replace(b"a3 OK", b"a4 OK"), warm)

    def test_folder_reads_many(self) -> None:
        """``Folder.cached_many`` gives the values a header fetch kept, by UID and name."""
        self.client.command(HEADERS)
        name = fetch_module.BLOB_VERSION + "HEADER.FIELDS (FROM SUBJECT)"

        found = self.folder.cached_many([1, 2, 99], [name])

        self.assertEqual([(1, name), (2, name)], sorted(found))
        self.assertIn(b"Subject: Message 2\r\n", found[2, name])

    def test_some_values_kept_some_not(self) -> None:
        """When only some messages have kept values, the others are parsed; all are answered."""
        self.client.command("FETCH 1:10 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")

        out = self.client.command("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")

        self.assertEqual(40, out.count(b"Subject: Message "))
        self.assertIn(b"* 40 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {", out)


class BodyOutputTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        self.data = message(1, body="z" * 5000)
        self.harness.deliver(self.data)
        self.client = self.harness.selected()

    def test_body_is_handed_over_uncopied(self) -> None:
        """The message octets reach the session as the very object the cache holds."""
        pieces: list[bytes] = []
        session = self.client.session
        original = session.untagged_pieces

        def record(given: list[bytes]) -> None:
            pieces.extend(given)
            original(given)

        session.untagged_pieces = record  # type: ignore[method-assign]

        self.client.command("FETCH 1 BODY.PEEK[]")

        folder = self.harness.store.account(ALICE).folder("INBOX")
        cached = session.factory.cache.peek(folder, folder.messages[0])
        assert cached is not None
        self.assertTrue(any(piece is cached.data for piece in pieces))

    def test_items_around_a_literal_are_byte_exact(self) -> None:
        """Items before and after a body literal are spaced and closed exactly."""
        out = self.client.command("FETCH 1 (UID BODY.PEEK[] RFC822.SIZE BODY.PEEK[]<0.4>)")

        expected = (
            b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(self.data)
            + self.data
            + b" RFC822.SIZE %d BODY[]<0> {4}\r\n" % len(self.data)
            + self.data[:4]
            + b")\r\na3 OK FETCH completed\r\n"
        )
        self.assertEqual(expected, out)

    def test_empty_section_between_items(self) -> None:
        """A section that does not exist is an empty string in the middle of a response."""
        out = self.client.command("FETCH 1 (BODY.PEEK[2] UID)")

        self.assertEqual(b'* 1 FETCH (BODY[2] "" UID 1)\r\na3 OK FETCH completed\r\n', out)

    def test_literal_helper_is_unchanged(self) -> None:
        """``literal`` still gives a whole literal, NUL as 0x80, and "" for nothing."""
        self.assertEqual(b"{3}\r\na\x80b", fetch_module.literal(b"a\0b"))
        self.assertEqual(b'""', fetch_module.literal(None))


class IndexBlobsTests(unittest.TestCase):
    def setUp(self) -> None:
        path = self.mktemp()
        os.makedirs(path)
        self.index = FolderIndex(path, 1)

    def test_only_the_asked_uids_and_names(self) -> None:
        """``blobs`` returns the asked names of the asked messages, nothing else."""
        for uid in (1, 2, 3):
            self.index.put_blob(uid, "a", b"a%d" % uid)
            self.index.put_blob(uid, "b", b"b%d" % uid)

        found = self.index.blobs([1, 3, 7], ["a"])

        self.assertEqual({(1, "a"): b"a1", (3, "a"): b"a3"}, found)

    def test_more_uids_than_one_query_takes(self) -> None:
        """Thousands of UIDs are read in several queries, within SQLite's parameter limit."""
        uids = list(range(1, 2501))
        with self.index.batch():
            for uid in uids:
                self.index.put_blob(uid, "n", b"%d" % uid)

        found = self.index.blobs(uids, ["n"])

        self.assertEqual(2500, len(found))
        self.assertEqual(b"2500", found[2500, "n"])


class ToCrlfTests(unittest.TestCase):
    def test_line_ends(self) -> None:
        """LF, CR and CRLF all become CRLF; text already in CRLF is returned as is."""
        crlf = b"a\r\nb\r\n"

        self.assertEqual(b"a\r\nb\r\n", to_crlf(b"a\nb\n"))
        self.assertEqual(b"a\r\nb\r\nc\r\n", to_crlf(b"a\rb\r\nc\n"))
        self.assertIs(crlf, to_crlf(crlf))
        self.assertEqual(b"no ends", to_crlf(b"no ends"))


class EndToEndTests(unittest.TestCase):
    async def test_bulk_download_over_tls_is_byte_exact(self) -> None:
        """imaplib over implicit TLS gets every body and header selection exactly.

        Two megabytes go through the pieces, the join, back-pressure and TLS.
        """
        suite = await start_suite(self, listen=IMAP_ONLY)
        suite.add_user(ALICE, "pw pw")
        sent = [message(n, body="w" * (n * 1000)) for n in range(1, 61)]
        for data in sent:
            await suite.context.store.deliver(ALICE, data)

        def run() -> tuple[list[Any], list[Any]]:
            client = imaplib.IMAP4_SSL(
                "127.0.0.1", suite.port("imaps"), ssl_context=suite.client_ssl_context()
            )
            client.login(ALICE, "pw pw")
            client.select("INBOX", readonly=True)
            bodies = client.fetch("1:*", "(BODY.PEEK[])")[1]
            headers = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1]
            client.logout()
            return bodies, headers

        bodies, headers = await threads.deferToThread(run)

        self.assertEqual(sent, [part[1] for part in bodies if isinstance(part, tuple)])
        subjects = [part[1] for part in headers if isinstance(part, tuple)]
        self.assertEqual([b"Subject: Message %d\r\n\r\n" % n for n in range(1, 61)], subjects)
