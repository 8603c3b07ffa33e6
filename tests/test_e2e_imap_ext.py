"""IMAP extensions end to end: imaplib against the real suite on loopback over TLS.

CONDSTORE/QRESYNC, LIST-EXTENDED with LIST-STATUS, CREATE-SPECIAL-USE and
the capability list a logged-in client sees.
"""

from __future__ import annotations

import imaplib
import re
from typing import Any

from twisted.internet import threads
from twisted.trial import unittest

from tests.support import RunningSuite
from tests.test_e2e_imap import (
    imaps_login,
    numbered,
    started_imap_suite,
)

#: What a logged-in client is offered, besides AUTH and APPENDLIMIT.
EXPECTED = {
    "IMAP4REV1",
    "CONDSTORE",
    "QRESYNC",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "CREATE-SPECIAL-USE",
    "SPECIAL-USE",
    "STATUS=SIZE",
    "MULTIAPPEND",
    "BINARY",
    "UIDPLUS",
    "MOVE",
    "IDLE",
}


class ExtensionEndToEndTests(unittest.TestCase):
    async def started(self) -> RunningSuite:
        return await started_imap_suite(self)

    def client(self, suite: RunningSuite) -> imaplib.IMAP4_SSL:
        return imaps_login(suite)

    async def test_condstore_and_qresync(self) -> None:
        """A client resynchronises: HIGHESTMODSEQ, CHANGEDSINCE, UNCHANGEDSINCE, VANISHED."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            client = self.client(suite)
            out: dict[str, Any] = {"caps": set(client.capability()[1][0].decode().split())}
            for n in range(1, 4):
                client.append("INBOX", None, None, numbered(n))
            client.enable("QRESYNC")
            client.select("INBOX")
            (highest,) = client.untagged_responses.get("HIGHESTMODSEQ", [b"0"])
            out["highest"] = int(highest)
            client.uid("STORE", "2", "+FLAGS", r"(\Seen)")
            _, data = client.uid("FETCH", "1:*", "(FLAGS)", f"(CHANGEDSINCE {out['highest']})")
            out["changed"] = data
            client.uid(
                "STORE", "1:3", f"(UNCHANGEDSINCE {out['highest']})", "+FLAGS", r"(\Flagged)"
            )
            out["conditional"] = client.untagged_responses.get("MODIFIED")
            client.uid("STORE", "3", "+FLAGS", r"(\Deleted)")
            client.expunge()
            out["vanished"] = client.untagged_responses.get("VANISHED")
            client.logout()
            return out

        out = await threads.deferToThread(run)

        self.assertTrue({c.upper() for c in out["caps"]} >= EXPECTED, out["caps"])
        self.assertGreater(out["highest"], 0)
        self.assertEqual(1, len(out["changed"]))
        self.assertRegex(out["changed"][0].decode(), r"UID 2 .*MODSEQ \(\d+\)")
        self.assertEqual([b"2"], out["conditional"])
        self.assertEqual([b"3"], out["vanished"])

    async def test_list_extended_status_and_special_use(self) -> None:
        """LIST-EXTENDED with RECURSIVEMATCH and RETURN STATUS; CREATE with USE."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            client = self.client(suite)
            out: dict[str, Any] = {}
            out["create"] = client._simple_command("CREATE", "Archive", r"(USE (\Archive))")
            out["useattr"] = client._simple_command("CREATE", "All", r"(USE (\All))")
            client.create("Projects/Mail")
            client.subscribe("Projects/Mail")
            client.append("Archive", None, None, numbered(1))
            client._simple_command("LIST", '(SUBSCRIBED RECURSIVEMATCH) "" "%"')
            out["recursive"] = client.untagged_responses.pop("LIST", [])
            client._simple_command(
                "LIST", '"" "Archive" RETURN (SPECIAL-USE STATUS (MESSAGES SIZE))'
            )
            out["list"] = client.untagged_responses.pop("LIST", [])
            out["status"] = client.untagged_responses.pop("STATUS", [])
            client.logout()
            return out

        out = await threads.deferToThread(run)

        self.assertEqual("OK", out["create"][0])
        self.assertEqual("NO", out["useattr"][0])
        self.assertIn(b'() "/" Projects ("CHILDINFO" ("SUBSCRIBED"))', out["recursive"])
        self.assertEqual([b'(\\Archive) "/" Archive'], out["list"])
        self.assertEqual(1, len(out["status"]))
        self.assertTrue(re.match(rb"Archive \(MESSAGES 1 SIZE \d+\)", out["status"][0]))
