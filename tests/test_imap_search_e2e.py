"""SEARCH end to end: imaplib against the real suite on loopback (cache, ESEARCH, MODSEQ)."""

from __future__ import annotations

import imaplib
from typing import Any

from twisted.internet import threads
from twisted.trial import unittest

from mailsuite.config import LISTENER_NAMES
from tests.support import RunningSuite, start_suite

ADDRESS = "alice@example.com"
PASSWORD = "s3cret pass"
TIMEOUT = 20

#: Only the IMAP listeners.
IMAP_ONLY = {name: [] for name in LISTENER_NAMES if name not in ("imap", "imaps")}


def numbered(n: int) -> bytes:
    return (
        f"From: Sender {n} <s{n}@example.net>\r\nTo: {ADDRESS}\r\nSubject: Number {n}\r\n"
        f"Date: Tue, 3 Jan 2023 10:00:00 +0000\r\n\r\nBody {'even' if n % 2 else 'odd'}\r\n"
    ).encode()


class SearchEndToEndTests(unittest.TestCase):
    async def started(self) -> RunningSuite:
        suite = await start_suite(self, listen=IMAP_ONLY)
        suite.add_user(ADDRESS, PASSWORD)
        for n in range(1, 7):
            await suite.context.store.deliver(ADDRESS, numbered(n))
        return suite

    async def test_search_esearch_and_modseq_with_imaplib(self) -> None:
        """A stdlib client's SEARCH, UID SEARCH RETURN (...) and MODSEQ get the right answers."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            client = imaplib.IMAP4_SSL(
                "127.0.0.1",
                suite.port("imaps"),
                ssl_context=suite.client_ssl_context(),
                timeout=TIMEOUT,
            )
            client.login(ADDRESS, PASSWORD)
            out: dict[str, Any] = {"caps": client.capability()[1][0].split()}
            client.select("INBOX")
            out["subject"] = client.search(None, "SUBJECT", '"number 3"')
            out["again"] = client.search(None, "SUBJECT", '"NUMBER 3"')
            out["body"] = client.search(None, "BODY", "odd")
            client.store("2", "+FLAGS", "(\\Seen)")
            out["esearch"] = client.uid("SEARCH", "RETURN", "(MIN MAX COUNT)", "UNSEEN")
            out["esearch_line"] = client.response("ESEARCH")
            out["modseq"] = client.search(None, "MODSEQ", "1", "SEEN")
            client.logout()
            return out

        out = await threads.deferToThread(run)

        self.assertIn(b"ESEARCH", out["caps"])
        self.assertEqual(("OK", [b"3"]), out["subject"])
        self.assertEqual(("OK", [b"3"]), out["again"])
        self.assertEqual(("OK", [b"2 4 6"]), out["body"])
        self.assertEqual("OK", out["esearch"][0])
        (line,) = out["esearch_line"][1]
        self.assertRegex(line.decode(), r'^\(TAG "\w+"\) UID MIN 1 MAX 6 COUNT 5$')
        self.assertRegex(out["modseq"][1][0].decode(), r"^2 \(MODSEQ \d+\)$")
