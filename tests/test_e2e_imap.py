"""IMAP end to end: the real suite on loopback, driven by imaplib and a raw client.

Covers STARTTLS and implicit TLS, the command groups a mail client uses,
IDLE receiving a delivery, two sessions seeing each other, UIDs across a
restart, the STARTTLS injection fix, and a replay of what Thunderbird sends
on its first sync (from ``shared/clients``).
"""

from __future__ import annotations

import base64
import imaplib
import os
import re
import socket
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from mailsuite.config import LISTENER_NAMES
from mailsuite.imap.commands import idle
from tests.support import RunningSuite, start_suite

ADDRESS = "alice@example.com"
PASSWORD = "s3cret pass"
TIMEOUT = 20

#: Only the IMAP listeners.
IMAP_ONLY = {name: [] for name in LISTENER_NAMES if name not in ("imap", "imaps")}

CLIENTS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "clients")

MESSAGE = (
    b"From: Bob <bob@example.net>\r\n"
    b"To: Alice <alice@example.com>\r\n"
    b"Subject: Hello end to end\r\n"
    b"Date: Mon, 2 Jan 2023 10:00:00 +0000\r\n"
    b"Message-ID: <e2e@example.net>\r\n"
    b"\r\n"
    b"Line one \xc3\xa9\r\n"
    b"Line two\r\n"
)


def numbered(n: int) -> bytes:
    return (
        f"From: Sender {n} <s{n}@example.net>\r\nTo: {ADDRESS}\r\nSubject: Number {n}\r\n"
        f"Date: Tue, 3 Jan 2023 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nBody {n}\r\n"
    ).encode()


class RawClient:
    """A minimal blocking IMAP client that shows the raw responses (for IDLE, replays)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.greeting = self.file.readline()

    @classmethod
    def plain(cls, port: int) -> RawClient:
        return cls(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT))

    @classmethod
    def tls(cls, suite: RunningSuite, port: int) -> RawClient:
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        return cls(suite.client_ssl_context().wrap_socket(sock, server_hostname="127.0.0.1"))

    def starttls(self, suite: RunningSuite) -> None:
        self.sock.sendall(b"tls STARTTLS\r\n")
        assert self.file.readline().startswith(b"tls OK"), "STARTTLS refused"
        context = suite.client_ssl_context()
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.file = self.sock.makefile("rb")

    def response(self) -> bytes:
        """One response line with any literals it carries."""
        line = self.file.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        while (match := re.search(rb"\{(\d+)\}\r\n$", line)) is not None:
            line += self.file.read(int(match.group(1)))
            line += self.file.readline()
        return line

    def command(self, tag: str, text: bytes) -> list[bytes]:
        """Send a command; return its responses, the tagged one last."""
        self.sock.sendall(tag.encode() + b" " + text + b"\r\n")
        return self.until(tag)

    def until(self, tag: str) -> list[bytes]:
        lines = []
        while True:
            line = self.response()
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                return lines

    def login(self) -> None:
        self.command("l", b'LOGIN "%s" "%s"' % (ADDRESS.encode(), PASSWORD.encode()))

    def close(self) -> None:
        self.sock.close()


async def started_imap_suite(testcase: unittest.TestCase, **overrides: Any) -> RunningSuite:
    """The suite with only its IMAP listeners, and the test user added."""
    suite = await start_suite(testcase, listen=IMAP_ONLY, **overrides)
    suite.add_user(ADDRESS, PASSWORD)
    return suite


def imaps_login(suite: RunningSuite) -> imaplib.IMAP4_SSL:
    """An imaplib client logged in on the implicit-TLS port (call it in a thread)."""
    client = imaplib.IMAP4_SSL(
        "127.0.0.1",
        suite.port("imaps"),
        ssl_context=suite.client_ssl_context(),
        timeout=TIMEOUT,
    )
    client.login(ADDRESS, PASSWORD)
    return client


class IMAPEndToEndTests(unittest.TestCase):
    async def started(self) -> RunningSuite:
        return await started_imap_suite(self)

    def starttls_client(self, suite: RunningSuite) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", suite.port("imap"), timeout=TIMEOUT)
        client.starttls(ssl_context=suite.client_ssl_context())
        client.login(ADDRESS, PASSWORD)
        return client

    def ssl_client(self, suite: RunningSuite) -> imaplib.IMAP4_SSL:
        return imaps_login(suite)

    async def test_mail_client_session_over_starttls(self) -> None:
        """APPEND, SELECT, FETCH (whole and partial), STORE, SEARCH, COPY, EXPUNGE."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            client = self.starttls_client(suite)
            out: dict[str, Any] = {}
            out["append"] = client.append("INBOX", r"(\Flagged)", None, MESSAGE)
            client.append("INBOX", None, None, numbered(2))
            out["select"] = client.select("INBOX")
            out["body"] = client.fetch("1", "(BODY.PEEK[])")[1][0]
            out["partial"] = client.fetch("1", "(BODY.PEEK[]<10.20>)")[1][0]
            out["store"] = client.store("2", "+FLAGS", r"(\Seen \Deleted)")
            out["search"] = client.search(None, "UNSEEN")
            out["uid_search"] = client.uid("SEARCH", "SUBJECT", '"end to end"')
            out["copy"] = client.copy("1:2", "Trash")
            out["expunge"] = client.expunge()
            out["after"] = client.fetch("1:*", "(UID FLAGS)")
            client.logout()
            return out

        out = await threads.deferToThread(run)

        self.assertEqual("OK", out["append"][0])
        self.assertIn(b"[APPENDUID ", out["append"][1][0])
        self.assertEqual(("OK", [b"2"]), out["select"])
        self.assertEqual(MESSAGE, out["body"][1])
        self.assertEqual(b"1 (BODY[]<10> {20}", out["partial"][0])
        self.assertEqual(MESSAGE[10:30], out["partial"][1])
        self.assertEqual("OK", out["store"][0])
        self.assertEqual(("OK", [b"1"]), out["search"])
        self.assertEqual(("OK", [b"1"]), out["uid_search"])
        self.assertEqual("OK", out["copy"][0])
        self.assertEqual(("OK", [b"2"]), out["expunge"])
        # Appended before the SELECT, so recent to this session (RFC 3501 6.3.11).
        self.assertEqual(("OK", [b"1 (UID 1 FLAGS (\\Flagged \\Recent))"]), out["after"])
        trash = suite.context.store.account(ADDRESS).folder("Trash")
        self.assertEqual(2, len(trash.messages))

    async def test_mailboxes_over_implicit_tls(self) -> None:
        """imaps speaks TLS at once; LIST, CREATE, RENAME, DELETE, STATUS work."""
        suite = await self.started()

        def run() -> dict[str, Any]:
            client = self.ssl_client(suite)
            out: dict[str, Any] = {}
            out["create"] = client.create("Projects/2024")
            out["rename"] = client.rename("Projects", "Archive")
            out["list"] = client.list()
            out["status"] = client.status("Archive/2024", "(MESSAGES UIDNEXT)")
            out["delete"] = client.delete("Archive/2024")
            out["missing"] = client.select("Archive/2024")
            client.logout()
            return out

        out = await threads.deferToThread(run)

        self.assertEqual("OK", out["create"][0])
        self.assertEqual("OK", out["rename"][0])
        self.assertIn(b'(\\HasChildren) "/" Archive', out["list"][1])
        self.assertIn(b'(\\HasNoChildren) "/" Archive/2024', out["list"][1])
        self.assertIn(b'(\\HasNoChildren \\Sent) "/" Sent', out["list"][1])
        self.assertEqual(("OK", [b"Archive/2024 (MESSAGES 0 UIDNEXT 1)"]), out["status"])
        self.assertEqual("OK", out["delete"][0])
        self.assertEqual("NO", out["missing"][0])

    async def test_login_before_starttls_is_refused(self) -> None:
        """On the plain port LOGINDISABLED is offered and LOGIN is refused."""
        suite = await self.started()

        def run() -> tuple[tuple[str, ...], str]:
            client = imaplib.IMAP4("127.0.0.1", suite.port("imap"), timeout=TIMEOUT)
            capabilities = client.capabilities
            try:
                client.login(ADDRESS, PASSWORD)
            except imaplib.IMAP4.error as e:
                return capabilities, str(e)
            finally:
                client.shutdown()
            return capabilities, "logged in"

        capabilities, error = await threads.deferToThread(run)

        self.assertIn("LOGINDISABLED", capabilities)
        self.assertIn("STARTTLS", capabilities)
        self.assertIn("PRIVACYREQUIRED", error)

    async def test_starttls_injection_is_not_executed(self) -> None:
        """A command pipelined in the same packet as STARTTLS never runs."""
        suite = await self.started()

        def run() -> list[bytes]:
            raw = RawClient.plain(suite.port("imap"))
            raw.sock.sendall(
                b'tls STARTTLS\r\nx LOGIN %s "%s"\r\n' % (ADDRESS.encode(), PASSWORD.encode())
            )
            assert raw.file.readline().startswith(b"tls OK")
            context = suite.client_ssl_context()
            raw.sock = context.wrap_socket(raw.sock, server_hostname="127.0.0.1")
            raw.file = raw.sock.makefile("rb")
            lines = raw.command("n", b"NOOP")
            lines += raw.command("s", b"SELECT INBOX")
            raw.close()
            return lines

        lines = await threads.deferToThread(run)

        self.assertEqual(b"n OK NOOP completed\r\n", lines[0])
        self.assertTrue(lines[-1].startswith(b"s BAD"), lines[-1])

    async def test_idle_receives_delivery_without_polling(self) -> None:
        """Mail delivered by the store is pushed to an idling client at once.

        The disk re-scan that IDLE also runs (for other programs' changes) is
        pushed out of reach here, so the EXISTS can only come from the store
        telling the open folder: no timing is measured, none can flake.
        """
        self.patch(idle, "REFRESH_INTERVAL", 3600.0)
        suite = await self.started()
        idling: defer.Deferred[None] = defer.Deferred()

        def run() -> bytes:
            raw = RawClient.tls(suite, suite.port("imaps"))
            raw.login()
            raw.command("s", b"SELECT INBOX")
            raw.sock.sendall(b"i IDLE\r\n")
            assert raw.response() == b"+ idling\r\n"
            reactor.callFromThread(idling.callback, None)
            line = raw.response()
            raw.sock.sendall(b"DONE\r\n")
            raw.until("i")
            raw.close()
            return line

        result = threads.deferToThread(run)
        await idling
        await suite.context.store.deliver(ADDRESS, MESSAGE)
        line = await result

        self.assertEqual(b"* 1 EXISTS\r\n", line)

    async def test_two_sessions_see_flags_and_expunges(self) -> None:
        """One session's STORE and EXPUNGE reach another at its next NOOP."""
        suite = await self.started()
        for n in range(1, 4):
            await suite.context.store.deliver(ADDRESS, numbered(n))

        def run() -> dict[str, Any]:
            one, two = self.ssl_client(suite), self.starttls_client(suite)
            one.select("INBOX")
            two.select("INBOX")
            one.store("2", "+FLAGS", r"(\Flagged)")
            two.noop()
            flags = two.response("FETCH")
            one.store("1", "+FLAGS", r"(\Deleted)")
            one.expunge()
            two.noop()
            expunged = two.response("EXPUNGE")
            count = two.fetch("1:*", "(UID)")
            one.logout()
            two.logout()
            return {"flags": flags, "expunged": expunged, "count": count}

        out = await threads.deferToThread(run)

        self.assertEqual(("FETCH", [b"2 (UID 2 FLAGS (\\Flagged))"]), out["flags"])
        self.assertEqual(("EXPUNGE", [b"1"]), out["expunged"])
        self.assertEqual(("OK", [b"1 (UID 2)", b"2 (UID 3)"]), out["count"])

    async def test_uids_survive_restart(self) -> None:
        """UIDs and UIDVALIDITY are the same after the suite restarts."""
        suite = await self.started()
        for n in range(1, 4):
            await suite.context.store.deliver(ADDRESS, numbered(n))

        def look() -> tuple[Any, Any]:
            client = self.ssl_client(suite)
            client.select("INBOX")
            validity = client.response("UIDVALIDITY")
            uids = client.uid("SEARCH", "ALL")
            client.logout()
            return validity, uids

        before = await threads.deferToThread(look)
        await suite.restart()
        after = await threads.deferToThread(look)

        self.assertEqual(before, after)
        self.assertEqual(("OK", [b"1 2 3"]), after[1])

    async def test_thunderbird_first_sync_starttls(self) -> None:
        """Every command of Thunderbird's first sync over STARTTLS is answered OK."""
        await self.replay("thunderbird-first-sync-starttls.txt", starttls=True)

    async def test_thunderbird_first_sync_imaps(self) -> None:
        """Every command of Thunderbird's first sync over imaps is answered OK."""
        await self.replay("thunderbird-first-sync-imaps.txt", starttls=False)

    async def replay(self, name: str, starttls: bool) -> None:
        path = os.path.join(CLIENTS, name)
        if not os.path.exists(path):
            raise unittest.SkipTest("shared/clients is not present")
        connections = thunderbird_commands(path)
        suite = await self.started()
        for n in range(1, 45):
            await suite.context.store.deliver(ADDRESS, numbered(n))

        def run() -> list[tuple[str, bytes]]:
            failures = []
            for commands in connections:
                if starttls:
                    raw = RawClient.plain(suite.port("imap"))
                    raw.starttls(suite)
                else:
                    raw = RawClient.tls(suite, suite.port("imaps"))
                failures += replay_connection(raw, commands)
                raw.close()
            return failures

        failures = await threads.deferToThread(run)

        self.assertEqual([], failures)


def thunderbird_commands(path: str) -> list[list[str]]:
    """The commands Thunderbird sent, per connection, from a first-sync transcript."""
    connections: list[list[str]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("=== connection"):
                connections.append([])
            elif line.startswith("####"):
                break
            elif " C: " in line and connections:
                command = line.split(" C: ", 1)[1].rstrip("\n")
                if not command.startswith("Logging suppressed"):
                    connections[-1].append(command)
    return connections


def replay_connection(raw: RawClient, commands: list[str]) -> list[tuple[str, bytes]]:
    """Send each command as Thunderbird did; return those not answered OK."""
    failures = []
    for command in commands:
        tag, _, rest = command.partition(" ")
        if rest.upper() == "STARTTLS" or command == "DONE":
            continue
        if rest.upper() == "IDLE":
            raw.sock.sendall(command.encode() + b"\r\n")
            if raw.response() != b"+ idling\r\n":
                failures.append((command, b"no continuation"))
                continue
            raw.sock.sendall(b"DONE\r\n")
            reply = raw.until(tag)[-1]
        elif rest.lower() == "authenticate plain":
            raw.sock.sendall(command.encode() + b"\r\n")
            raw.response()
            response = base64.b64encode(f"\0{ADDRESS}\0{PASSWORD}".encode())
            raw.sock.sendall(response + b"\r\n")
            reply = raw.until(tag)[-1]
        else:
            reply = raw.command(tag, rest.encode())[-1]
        if not reply.startswith(tag.encode() + b" OK"):
            failures.append((command, reply))
    return failures
