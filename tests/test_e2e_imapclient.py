"""IMAP end to end with the ``imapclient`` package: the real suite on loopback over TLS.

imapclient is what many fetch scripts and small tools use; it parses every
response (ENVELOPE, BODYSTRUCTURE, LIST flags, SELECT codes) strictly, so a
server reply it cannot read fails here. Each test drives one command group
over implicit TLS or STARTTLS; IDLE uses two sessions at once.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from imapclient import IMAPClient  # type: ignore[import-untyped]
from imapclient.exceptions import CapabilityError, LoginError  # type: ignore[import-untyped]
from twisted.internet import threads
from twisted.trial import unittest

from tests.support import RunningSuite
from tests.test_e2e_imap import (
    ADDRESS,
    MESSAGE,
    PASSWORD,
    TIMEOUT,
    numbered,
    started_imap_suite,
)

#: When MESSAGE was "received", as APPEND gives it.
RECEIVED = datetime(2023, 1, 2, 11, 30, 15, tzinfo=timezone(timedelta(hours=1)))

UTF8_MESSAGE = (
    b"From: Zo\xc3\xab <zoe@example.net>\r\n"
    b"To: Alice <alice@example.com>\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9_tonight?=\r\n"
    b"Date: Wed, 4 Jan 2023 18:00:00 +0000\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"See you at the caf\xc3\xa9.\r\n"
)

MULTIPART = (
    b"From: Bob <bob@example.net>\r\n"
    b"To: Alice <alice@example.com>\r\n"
    b"Subject: Two parts\r\n"
    b"Date: Thu, 5 Jan 2023 09:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="sep"\r\n'
    b"\r\n"
    b"--sep\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Hello\r\n"
    b"--sep\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAEC\r\n"
    b"--sep--\r\n"
)


class IMAPClientEndToEndTests(unittest.TestCase):
    async def started(self, **overrides: Any) -> RunningSuite:
        return await started_imap_suite(self, **overrides)

    def ssl_client(self, suite: RunningSuite) -> IMAPClient:
        """A logged-in client on the implicit-TLS port."""
        client = IMAPClient(
            "127.0.0.1",
            suite.port("imaps"),
            ssl=True,
            ssl_context=suite.client_ssl_context(),
            timeout=TIMEOUT,
        )
        client.normalise_times = False
        client.login(ADDRESS, PASSWORD)
        return client

    def starttls_client(self, suite: RunningSuite) -> IMAPClient:
        """A logged-in client on the plain port, after STARTTLS."""
        client = IMAPClient("127.0.0.1", suite.port("imap"), ssl=False, timeout=TIMEOUT)
        client.normalise_times = False
        client.starttls(suite.client_ssl_context())
        client.login(ADDRESS, PASSWORD)
        return client

    async def test_capabilities_before_and_after_starttls(self) -> None:
        """The plain port offers STARTTLS and refuses LOGIN; after STARTTLS login works."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            client = IMAPClient("127.0.0.1", suite.port("imap"), ssl=False, timeout=TIMEOUT)
            out: dict[str, Any] = {"plain": set(client.capabilities())}
            try:
                client.login(ADDRESS, PASSWORD)
            except LoginError as e:
                out["refused"] = str(e)
            client.starttls(suite.client_ssl_context())
            out["secure"] = set(client.capabilities())
            out["login"] = client.login(ADDRESS, PASSWORD)
            out["after"] = set(client.capabilities())
            client.logout()
            return out

        out = await threads.deferToThread(run)

        self.assertTrue({b"STARTTLS", b"LOGINDISABLED"} <= out["plain"], out["plain"])
        self.assertIn("PRIVACYREQUIRED", out.get("refused", "logged in"))
        self.assertNotIn(b"STARTTLS", out["secure"])
        self.assertNotIn(b"LOGINDISABLED", out["secure"])
        self.assertIn(b"AUTH=PLAIN", out["secure"])
        self.assertTrue(out["login"].endswith(b"] Logged in"), out["login"])
        expected = {b"IMAP4REV1", b"IDLE", b"NAMESPACE", b"ID", b"UIDPLUS", b"MOVE", b"CONDSTORE"}
        self.assertTrue(expected | {b"SPECIAL-USE", b"ENABLE"} <= out["after"], out["after"])

    async def test_folders_over_implicit_tls(self) -> None:
        """LIST/LSUB with special-use flags, CREATE, RENAME, DELETE, SUBSCRIBE."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            client = self.ssl_client(suite)
            out: dict[str, Any] = {"initial": client.list_folders()}
            out["sent"] = client.find_special_folder(b"\\Sent")
            out["trash"] = client.find_special_folder(b"\\Trash")
            client.create_folder("Projects")
            client.create_folder("Projects/2024")
            client.rename_folder("Projects/2024", "Projects/Done")
            client.subscribe_folder("Projects/Done")
            out["subscribed"] = client.list_sub_folders()
            out["children"] = client.list_folders("Projects/", "%")
            client.unsubscribe_folder("Projects/Done")
            client.delete_folder("Projects/Done")
            out["exists"] = client.folder_exists("Projects/Done")
            out["utf8"] = client.create_folder("Réunions")
            out["names"] = [name for _, _, name in client.list_folders()]
            try:
                client.xlist_folders()
            except CapabilityError as e:
                out["xlist"] = str(e)
            client.logout()
            return out

        out = await threads.deferToThread(run)

        initial = {name: flags for flags, _, name in out["initial"]}
        self.assertEqual({"INBOX", "Drafts", "Sent", "Trash", "Junk"}, set(initial))
        self.assertIn(b"\\Sent", initial["Sent"])
        self.assertIn(b"\\Drafts", initial["Drafts"])
        self.assertEqual("Sent", out["sent"])
        self.assertEqual("Trash", out["trash"])
        self.assertIn("Projects/Done", [name for _, _, name in out["subscribed"]])
        self.assertEqual([((b"\\HasNoChildren",), b"/", "Projects/Done")], out["children"])
        self.assertFalse(out["exists"])
        self.assertIn("Réunions", out["names"])
        self.assertNotIn("Projects/Done", out["names"])
        # XLIST is Gmail's pre-RFC 6154 command; SPECIAL-USE on LIST replaces it.
        self.assertIn("XLIST", out["xlist"])

    async def test_select_examine_append_over_starttls(self) -> None:
        """SELECT/EXAMINE report UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ; APPEND keeps flags, date."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            client = self.starttls_client(suite)
            out: dict[str, Any] = {}
            out["append"] = client.append("INBOX", MESSAGE, (b"\\Flagged", b"$Work"), RECEIVED)
            client.append("INBOX", numbered(2))
            out["examine"] = client.select_folder("INBOX", readonly=True)
            out["select"] = client.select_folder("INBOX")
            out["fetch"] = client.fetch([1, 2], ["FLAGS", "INTERNALDATE", "RFC822.SIZE"])
            client.logout()
            return out

        out = await threads.deferToThread(run)

        self.assertIn(b"[APPENDUID ", out["append"])
        examine, select = out["examine"], out["select"]
        self.assertTrue(examine[b"READ-ONLY"])
        self.assertTrue(select[b"READ-WRITE"])
        self.assertEqual(2, select[b"EXISTS"])
        self.assertEqual(3, select[b"UIDNEXT"])
        self.assertEqual(examine[b"UIDVALIDITY"], select[b"UIDVALIDITY"])
        folder = suite.context.store.account(ADDRESS).folder("INBOX")
        self.assertEqual(folder.uidvalidity, select[b"UIDVALIDITY"])
        self.assertGreater(select[b"HIGHESTMODSEQ"], 0)
        self.assertIn(b"$Work", select[b"FLAGS"])
        first = out["fetch"][1]
        # Appended before this SELECT, so \\Recent here (RFC 3501 6.3.11).
        self.assertEqual((b"\\Flagged", b"\\Recent", b"$Work"), _ordered(first[b"FLAGS"]))
        self.assertEqual(RECEIVED, first[b"INTERNALDATE"])
        self.assertEqual(len(MESSAGE), first[b"RFC822.SIZE"])

    async def test_fetch_items(self) -> None:
        """FETCH returns exact bodies, parsed ENVELOPE/BODYSTRUCTURE, header fields, partials."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            client = self.ssl_client(suite)
            client.append("INBOX", MESSAGE)
            client.append("INBOX", MULTIPART)
            client.select_folder("INBOX")
            out: dict[str, Any] = {}
            out["first"] = client.fetch(
                [1],
                ["UID", "BODY.PEEK[]", "ENVELOPE", "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]"],
            )[1]
            out["partial"] = client.fetch([1], ["BODY.PEEK[]<10.20>"])[1]
            out["second"] = client.fetch([2], ["BODYSTRUCTURE", "BODY.PEEK[2]"])[2]
            out["flags"] = client.get_flags([1, 2])
            client.logout()
            return out

        out = await threads.deferToThread(run)

        first = out["first"]
        self.assertEqual(1, first[b"SEQ"])
        self.assertEqual(MESSAGE, first[b"BODY[]"])
        self.assertEqual(
            b"From: Bob <bob@example.net>\r\nSubject: Hello end to end\r\n\r\n",
            first[b"BODY[HEADER.FIELDS (SUBJECT FROM)]"],
        )
        envelope = first[b"ENVELOPE"]
        self.assertEqual(b"Hello end to end", envelope.subject)
        self.assertEqual(b"<e2e@example.net>", envelope.message_id)
        self.assertEqual(datetime(2023, 1, 2, 10, 0, tzinfo=UTC), envelope.date)
        self.assertEqual((b"Bob", b"bob", b"example.net"), _address(envelope.from_[0]))
        self.assertEqual((b"Alice", b"alice", b"example.com"), _address(envelope.to[0]))
        self.assertEqual(MESSAGE[10:30], out["partial"][b"BODY[]<10>"])
        structure = out["second"][b"BODYSTRUCTURE"]
        self.assertTrue(structure.is_multipart)
        self.assertEqual(b"mixed", structure[1])
        self.assertEqual((b"text", b"plain"), tuple(structure[0][0][:2]))
        self.assertEqual((b"application", b"octet-stream"), tuple(structure[0][1][:2]))
        self.assertEqual(b"AAEC", out["second"][b"BODY[2]"])
        self.assertEqual({1: (b"\\Recent",), 2: (b"\\Recent",)}, out["flags"])

    async def test_flags_and_search(self) -> None:
        """STORE set/add/remove incl. a keyword; SEARCH with several criteria and UTF-8."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            client = self.starttls_client(suite)
            client.append("INBOX", MESSAGE, msg_time=RECEIVED)
            client.append("INBOX", UTF8_MESSAGE, msg_time=datetime(2023, 3, 1, tzinfo=UTC))
            client.append("INBOX", numbered(3), msg_time=datetime(2023, 3, 2, tzinfo=UTC))
            client.select_folder("INBOX")
            out: dict[str, Any] = {}
            out["set"] = client.set_flags([1], [b"\\Seen", b"$Important"])
            out["add"] = client.add_flags([2, 3], [b"\\Flagged"])
            out["remove"] = client.remove_flags([3], [b"\\Flagged"])
            out["keyword"] = client.search(["KEYWORD", "$Important"])
            out["unseen"] = client.search(["UNSEEN"])
            out["unseen_since"] = client.search(["UNSEEN", "SINCE", date(2023, 3, 2)])
            out["subject"] = client.search(["SUBJECT", "end to end", "SEEN"])
            out["or"] = client.search(["OR", "FLAGGED", "KEYWORD", "$Important"])
            out["utf8"] = client.search(["SUBJECT", "Café"], charset="utf-8")
            out["utf8_body"] = client.search(["BODY", "café", "UNSEEN"], charset="utf-8")
            out["none"] = client.search(["FROM", "nobody@example.org"])
            client.logout()
            return out

        out = await threads.deferToThread(run)

        recent = b"\\Recent"
        self.assertEqual({1: (recent, b"\\Seen", b"$Important")}, _sorted_flags(out["set"]))
        flagged = (b"\\Flagged", recent)
        self.assertEqual({2: flagged, 3: flagged}, _sorted_flags(out["add"]))
        self.assertEqual({3: (recent,)}, _sorted_flags(out["remove"]))
        self.assertEqual([1], out["keyword"])
        self.assertEqual([2, 3], out["unseen"])
        self.assertEqual([3], out["unseen_since"])
        self.assertEqual([1], out["subject"])
        self.assertEqual([1, 2], out["or"])
        self.assertEqual([2], out["utf8"])
        self.assertEqual([2], out["utf8_body"])
        self.assertEqual([], out["none"])

    async def test_copy_move_expunge(self) -> None:
        """COPY and MOVE land in the target; EXPUNGE and UID EXPUNGE remove only what they name."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            client = self.ssl_client(suite)
            for n in range(1, 6):
                client.append("INBOX", numbered(n))
            client.select_folder("INBOX")
            out: dict[str, Any] = {}
            client.create_folder("Archive")
            out["copy"] = client.copy([1, 2], "Archive")
            out["move"] = client.move([3], "Trash")
            client.add_flags([1, 2, 4], [b"\\Deleted"])
            out["uid_expunge"] = client.uid_expunge([4])
            out["left"] = client.search(["ALL"])
            out["expunge"] = client.expunge()
            out["final"] = client.search(["ALL"])
            out["archive"] = client.folder_status("Archive", ["MESSAGES", "UIDNEXT"])
            out["trash"] = client.folder_status("Trash", ["MESSAGES"])
            client.select_folder("Trash")
            out["moved"] = client.fetch([1], ["BODY.PEEK[]"])
            client.logout()
            return out

        out = await threads.deferToThread(run)

        self.assertEqual([1, 2, 5], out["left"])
        self.assertEqual([5], out["final"])
        self.assertEqual({b"MESSAGES": 2, b"UIDNEXT": 3}, out["archive"])
        self.assertEqual({b"MESSAGES": 1}, out["trash"])
        self.assertEqual([numbered(3)], [v[b"BODY[]"] for v in out["moved"].values()])
        # Sequence numbers shift after each EXPUNGE (RFC 3501 7.4.1): 1:2 goes as 1, 1.
        self.assertEqual([(1, b"EXPUNGE"), (1, b"EXPUNGE")], out["expunge"][1])

    async def test_idle_sees_append_from_second_session(self) -> None:
        """An idling session (imaps) sees EXISTS when a STARTTLS session APPENDs."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            idler, writer = self.ssl_client(suite), self.starttls_client(suite)
            idler.select_folder("INBOX")
            idler.idle()
            writer.append("INBOX", MESSAGE)
            seen = _idle_until(idler, b"EXISTS")
            done = idler.idle_done()
            out = {"seen": seen, "done": done, "fetch": idler.fetch([1], ["BODY.PEEK[]"])}
            idler.logout()
            writer.logout()
            return out

        out = await threads.deferToThread(run)

        self.assertIn((1, b"EXISTS"), out["seen"])
        self.assertEqual(MESSAGE, out["fetch"][1][b"BODY[]"])

    async def test_condstore(self) -> None:
        """ENABLE CONDSTORE; flag changes raise MODSEQ and CHANGEDSINCE returns only them."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            client = self.ssl_client(suite)
            for n in range(1, 4):
                client.append("INBOX", numbered(n))
            out: dict[str, Any] = {"enable": client.enable("CONDSTORE")}
            out["select"] = client.select_folder("INBOX", readonly=False)
            highest = out["select"][b"HIGHESTMODSEQ"]
            client.add_flags([2], [b"\\Answered"])
            out["changed"] = client.fetch(
                [1, 2, 3], ["FLAGS"], modifiers=[f"CHANGEDSINCE {highest}"]
            )
            out["modseq"] = client.fetch([1, 2], ["MODSEQ"])
            out["highest"] = highest
            out["status"] = client.folder_status("INBOX", ["HIGHESTMODSEQ"])
            client.logout()
            return out

        out = await threads.deferToThread(run)

        self.assertEqual([b"CONDSTORE"], out["enable"])
        self.assertEqual([2], list(out["changed"]))
        self.assertEqual((b"\\Answered", b"\\Recent"), _ordered(out["changed"][2][b"FLAGS"]))
        (modseq_2,) = out["modseq"][2][b"MODSEQ"]
        (modseq_1,) = out["modseq"][1][b"MODSEQ"]
        self.assertGreater(modseq_2, out["highest"])
        self.assertLessEqual(modseq_1, out["highest"])
        self.assertEqual({b"HIGHESTMODSEQ": modseq_2}, out["status"])

    async def test_namespace_and_id(self) -> None:
        """NAMESPACE gives one personal namespace; ID answers with server fields."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            client = self.starttls_client(suite)
            out = {"namespace": client.namespace(), "id": client.id_({"name": "imapclient"})}
            client.logout()
            return out

        out = await threads.deferToThread(run)

        namespace = out["namespace"]
        self.assertEqual((("", "/"),), namespace.personal)
        self.assertIsNone(namespace.other)
        self.assertIsNone(namespace.shared)
        self.assertEqual(((b"name", b"mailsuite", b"vendor", b"mailsuite"),), out["id"])

    async def test_quota(self) -> None:
        """With limits.quota set, GETQUOTAROOT reports usage and the limit in KiB."""
        suite = await self.started(limits={"quota": 10_000_000})

        def run() -> dict[str, Any]:
            client = self.ssl_client(suite)
            client.append("INBOX", MESSAGE * 100)
            out = {"caps": client.capabilities(), "root": client.get_quota_root("INBOX")}
            out["quota"] = client.get_quota("INBOX")
            client.logout()
            return out

        out = await threads.deferToThread(run)

        self.assertIn(b"QUOTA", out["caps"])
        roots, quotas = out["root"]
        self.assertEqual("INBOX", roots.mailbox)
        self.assertEqual(1, len(roots.quota_roots))
        self.assertEqual(quotas, out["quota"])
        (quota,) = quotas
        self.assertEqual("STORAGE", quota.resource)
        self.assertEqual(10_000_000 // 1024, quota.limit)
        self.assertLessEqual(len(MESSAGE * 100) // 1024, quota.usage)
        self.assertGreaterEqual(len(MESSAGE * 100) // 1024 + 1, quota.usage)


def _address(address: Any) -> tuple[bytes, bytes, bytes]:
    return (address.name, address.mailbox, address.host)


def _ordered(flags: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """Flags in a fixed order: system flags first, then keywords."""
    return tuple(sorted(flags, key=lambda f: (not f.startswith(b"\\"), f.lower())))


def _sorted_flags(result: dict[int, Any]) -> dict[int, tuple[bytes, ...]]:
    return {uid: _ordered(flags) for uid, flags in result.items()}


def _idle_until(client: IMAPClient, wanted: bytes) -> list[Any]:
    """IDLE responses until one names ``wanted``; fails after TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    seen: list[Any] = []
    while not any(len(r) > 1 and r[1] == wanted for r in seen):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {wanted!r} while idling: {seen!r}")
        seen += client.idle_check(timeout=left)
    return seen
