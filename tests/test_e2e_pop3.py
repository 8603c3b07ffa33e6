"""POP3 end to end: the real suite on loopback, driven by Python's poplib."""

from __future__ import annotations

import os
import poplib
import socket
import time
from typing import Any

from twisted.internet import threads
from twisted.trial import unittest

from mailsuite.config import LISTENER_NAMES
from mailsuite.store import to_crlf
from tests.support import RunningSuite, start_suite

ADDRESS = "alice@example.com"
PASSWORD = "s3cret pass"
TIMEOUT = 20

#: Only the POP3 listeners: these tests neither need nor test the others.
POP3_ONLY = {name: [] for name in LISTENER_NAMES if name not in ("pop3", "pop3s")}

#: Dot-lines, 8-bit text, a line of dots, no final newline.
TRICKY = (
    b"From: a@example.com\r\nSubject: dots\r\n\r\n"
    b".leading dot\r\n..two\r\n.\r\nend \xc3\xa9\xff\r\n...\r\nlast line"
)

#: Stored with bare LF, as another program would leave it.
BARE_LF = b"From: b@example.com\nSubject: bare LF\n\n.one\nline two\n\n.\n"


def retrieved(lines: list[bytes]) -> bytes:
    """Rebuild the octets of a RETR answer from poplib's unstuffed lines."""
    return b"".join(line + b"\r\n" for line in lines)


def served(data: bytes) -> bytes:
    """What RETR must return for stored ``data``: CRLF line ends, ending in CRLF."""
    data = to_crlf(data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


class POP3EndToEndTests(unittest.TestCase):
    async def started(self) -> RunningSuite:
        suite = await start_suite(self, listen=POP3_ONLY)
        suite.add_user(ADDRESS, PASSWORD)
        return suite

    async def deliver(self, suite: RunningSuite, *messages: bytes) -> None:
        for data in messages:
            await suite.context.store.deliver(ADDRESS, data)

    def drop_bare_lf_file(self, suite: RunningSuite) -> None:
        """Put a bare-LF message into new/ by hand, as procmail would."""
        inbox = suite.context.store.account(ADDRESS).path
        os.makedirs(os.path.join(inbox, "new"), exist_ok=True)
        # Named as if it arrived last, so it is numbered after delivered mail.
        name = f"{int(time.time()) + 3600}.M1P1.elsewhere"
        with open(os.path.join(inbox, "new", name), "wb") as f:
            f.write(BARE_LF)

    # -- clients (run in threads) -------------------------------------------------

    def stls_client(self, suite: RunningSuite, port: int) -> poplib.POP3:
        client = poplib.POP3("127.0.0.1", port, timeout=TIMEOUT)
        client.stls(context=suite.client_ssl_context())
        client.user(ADDRESS)
        client.pass_(PASSWORD)
        return client

    def ssl_client(self, suite: RunningSuite, port: int) -> poplib.POP3_SSL:
        client = poplib.POP3_SSL(
            "127.0.0.1", port, timeout=TIMEOUT, context=suite.client_ssl_context()
        )
        client.user(ADDRESS)
        client.pass_(PASSWORD)
        return client

    def fetch_all(self, client: poplib.POP3) -> dict[str, Any]:
        """STAT, LIST, UIDL and RETR of every message, then QUIT without DELE."""
        count, octets = client.stat()
        sizes = [int(line.split()[1]) for line in client.list()[1]]
        uidls = [line.split()[1] for line in client.uidl()[1]]
        bodies = [retrieved(client.retr(n)[1]) for n in range(1, count + 1)]
        client.quit()
        return {"count": count, "octets": octets, "sizes": sizes, "uidls": uidls, "bodies": bodies}

    # -- tests --------------------------------------------------------------------

    async def test_stls_retrieves_messages_byte_for_byte(self) -> None:
        """Over pop3 with STLS, RETR returns dot-lines, 8-bit and bare-LF mail exactly."""
        suite = await self.started()
        await self.deliver(suite, TRICKY, b"Subject: plain\r\n\r\nhello\r\n")
        self.drop_bare_lf_file(suite)

        def run() -> dict[str, Any]:
            return self.fetch_all(self.stls_client(suite, suite.port("pop3")))

        result = await threads.deferToThread(run)

        expected = [served(TRICKY), b"Subject: plain\r\n\r\nhello\r\n", served(BARE_LF)]
        self.assertEqual(expected, result["bodies"])
        self.assertEqual(
            [len(to_crlf(d)) for d in (TRICKY, expected[1], BARE_LF)], result["sizes"]
        )
        self.assertEqual(sum(result["sizes"]), result["octets"])

    async def test_pop3s_implicit_tls(self) -> None:
        """pop3s speaks TLS from the first byte and serves the same bytes."""
        suite = await self.started()
        await self.deliver(suite, TRICKY)

        def run() -> dict[str, Any]:
            return self.fetch_all(self.ssl_client(suite, suite.port("pop3s")))

        result = await threads.deferToThread(run)

        self.assertEqual([served(TRICKY)], result["bodies"])

    async def test_list_sizes_equal_retr_octets(self) -> None:
        """The size LIST announces is the number of octets RETR delivers."""
        suite = await self.started()
        await self.deliver(suite, b"Subject: a\r\n\r\nbody\r\n", b"Subject: b\n\n.x\n..y\n")
        self.drop_bare_lf_file(suite)

        def run() -> list[tuple[int, int]]:
            client = self.ssl_client(suite, suite.port("pop3s"))
            pairs = []
            for line in client.list()[1]:
                number, size = (int(x) for x in line.split())
                pairs.append((size, client.retr(number)[2]))
            client.quit()
            return pairs

        pairs = await threads.deferToThread(run)

        self.assertEqual(3, len(pairs))
        for size, octets in pairs:
            self.assertEqual(size, octets)

    async def test_login_before_stls_refused(self) -> None:
        """On pop3, CAPA hides USER and SASL, and USER/PASS/AUTH are refused until STLS."""
        suite = await self.started()

        def run() -> tuple[dict[str, list[str]], list[str]]:
            client = poplib.POP3("127.0.0.1", suite.port("pop3"), timeout=TIMEOUT)
            capabilities = client.capa()
            errors = []
            for attempt in (
                lambda: client.user(ADDRESS),
                lambda: client.pass_(PASSWORD),
                lambda: client._shortcmd("AUTH PLAIN AGFsaWNlAHg="),
            ):
                try:
                    attempt()
                except poplib.error_proto as e:
                    errors.append(str(e))
            client.quit()
            return capabilities, errors

        capabilities, errors = await threads.deferToThread(run)

        self.assertIn("STLS", capabilities)
        self.assertNotIn("USER", capabilities)
        self.assertNotIn("SASL", capabilities)
        self.assertEqual(3, len(errors))
        for error in errors:
            self.assertIn("[AUTH]", error)

    async def test_stls_discards_injected_commands(self) -> None:
        """A command sent in the same packet as STLS is never run (RFC 2595 3.1)."""
        suite = await self.started()
        await self.deliver(suite, b"Subject: a\r\n\r\nbody\r\n")

        def run() -> bytes:
            with socket.create_connection(("127.0.0.1", suite.port("pop3")), TIMEOUT) as raw:
                reader = raw.makefile("rb")
                reader.readline()
                raw.sendall(b"STLS\r\nCAPA\r\n")
                reader.readline()
                context = suite.client_ssl_context()
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"NOOP\r\n")
                    tls.settimeout(TIMEOUT)
                    return tls.recv(4096)

        answer = await threads.deferToThread(run)

        self.assertEqual(b"-ERR command not valid in this state\r\n", answer)

    async def test_uidls_stable_across_restart(self) -> None:
        """UIDLs are the same after the whole suite restarts on the same files."""
        suite = await self.started()
        await self.deliver(suite, b"Subject: 1\r\n\r\none\r\n", b"Subject: 2\r\n\r\ntwo\r\n")
        self.drop_bare_lf_file(suite)

        def uidls() -> list[bytes]:
            client = self.ssl_client(suite, suite.port("pop3s"))
            result = [line.split()[1] for line in client.uidl()[1]]
            client.quit()
            return result

        before = await threads.deferToThread(uidls)
        await suite.restart()
        after = await threads.deferToThread(uidls)

        self.assertEqual(3, len(before))
        self.assertEqual(before, after)

    async def test_fetchmail_keep_pattern(self) -> None:
        """UIDL, RETR all, QUIT without DELE, reconnect: same UIDLs, same mail, now seen."""
        suite = await self.started()
        await self.deliver(suite, TRICKY, b"Subject: 2\r\n\r\ntwo\r\n")

        def session() -> dict[str, Any]:
            return self.fetch_all(self.stls_client(suite, suite.port("pop3")))

        first = await threads.deferToThread(session)
        second = await threads.deferToThread(session)

        self.assertEqual(first["uidls"], second["uidls"])
        self.assertEqual(first["bodies"], second["bodies"])
        inbox = suite.context.store.account(ADDRESS).folder("INBOX")
        inbox.refresh(force=True)
        self.assertEqual([["\\Seen"], ["\\Seen"]], [m.flags for m in inbox.messages])

    async def test_dele_takes_effect_at_quit_only(self) -> None:
        """DELE then a dropped connection keeps mail; DELE then QUIT removes it."""
        suite = await self.started()
        await self.deliver(suite, b"Subject: 1\r\n\r\none\r\n", b"Subject: 2\r\n\r\ntwo\r\n")

        def drop_after_dele() -> None:
            client = self.ssl_client(suite, suite.port("pop3s"))
            client.dele(1)
            client.sock.close()

        def quit_after_dele() -> int:
            client = self.ssl_client(suite, suite.port("pop3s"))
            self.assertEqual(2, client.stat()[0])
            client.dele(1)
            client.quit()
            again = self.ssl_client(suite, suite.port("pop3s"))
            count = again.stat()[0]
            again.quit()
            return count

        await threads.deferToThread(drop_after_dele)
        remaining = await threads.deferToThread(quit_after_dele)

        self.assertEqual(1, remaining)

    async def test_large_message_streams_over_tls(self) -> None:
        """A multi-megabyte message with dot-lines at chunk boundaries arrives intact over TLS."""
        suite = await self.started()
        line = b"x" * 70 + b"\r\n"
        body = bytearray(line * 60000)
        for offset in range(0, len(body) - 8, 65536):
            body[offset : offset + 5] = b"\n.\r\n."
        data = b"Subject: big\r\n\r\n" + bytes(body)
        await self.deliver(suite, data)

        def run() -> tuple[int, bytes]:
            client = self.ssl_client(suite, suite.port("pop3s"))
            size = int(client.list(1).split()[2])
            content = retrieved(client.retr(1)[1])
            client.quit()
            return size, content

        size, content = await threads.deferToThread(run)

        self.assertEqual(served(data), content)
        self.assertEqual(len(to_crlf(data)), size)

    async def test_server_closes_tls_connection_after_quit(self) -> None:
        """After QUIT the server really closes a TLS connection (pop3s and STLS)."""
        suite = await self.started()

        def quit_and_wait_for_eof(port: int, starttls: bool) -> bytes:
            context = suite.client_ssl_context()
            with socket.create_connection(("127.0.0.1", port), TIMEOUT) as raw:
                if starttls:
                    raw.recv(100)
                    raw.sendall(b"STLS\r\n")
                    raw.recv(100)
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.settimeout(TIMEOUT)
                    if not starttls:
                        tls.recv(100)
                    tls.sendall(b"QUIT\r\n")
                    received = b""
                    while chunk := tls.recv(4096):
                        received += chunk
                    return received

        implicit = await threads.deferToThread(quit_and_wait_for_eof, suite.port("pop3s"), False)
        upgraded = await threads.deferToThread(quit_and_wait_for_eof, suite.port("pop3"), True)

        self.assertEqual(b"+OK bye\r\n", implicit)
        self.assertEqual(b"+OK bye\r\n", upgraded)

    async def test_client_that_pipelines_without_reading(self) -> None:
        """Hundreds of pipelined RETRs from a client that reads late all arrive intact."""
        suite = await self.started()
        message = b"Subject: p\r\n\r\n" + b"." * 70 + b"\r\n" + b"y" * 70 * 300 + b"\r\n"
        await self.deliver(suite, message)
        count = 300

        def run() -> bytes:
            client = self.ssl_client(suite, suite.port("pop3s"))
            client.sock.sendall(b"RETR 1\r\n" * count + b"QUIT\r\n")
            time.sleep(0.5)
            received = b""
            while chunk := client.sock.recv(65536):
                received += chunk
            client.sock.close()
            return received

        received = await threads.deferToThread(run)

        answer = b"+OK %d octets\r\n" % len(message)
        stuffed = message.replace(b"\r\n.", b"\r\n..") + b".\r\n"
        self.assertEqual((answer + stuffed) * count + b"+OK bye, 0 messages deleted\r\n", received)
