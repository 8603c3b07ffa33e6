"""The first working whole: mail in over SMTP, read back over POP3 and IMAP.

One suite on loopback, every listener on, Python's own clients over TLS:
submission (STARTTLS and AUTH), submissions (implicit TLS) and a stranger on
the MX port put mail in; poplib (STLS) and imaplib (STARTTLS) read every
message back byte for byte after the headers we add; relaying and AUTH
before TLS are refused; and after an IMAP client reads and flags the mail
and the suite restarts, every UID, UIDVALIDITY and UIDL is unchanged.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import ssl
from typing import Any

from twisted.internet import threads
from twisted.trial import unittest

from tests.support import RunningSuite, start_suite

ALICE = "alice@example.com"
BOB = "bob@example.com"
PASSWORD = "correct horse battery"
TIMEOUT = 20

#: Dot-lines (one that is a lone dot), 8-bit text, a long line.
BODIES = {
    "submission": (
        b".leading dot\r\n..two dots\r\n.\r\n"
        b"caf\xc3\xa9 \xe2\x82\xac 8-bit text\r\n" + b"x" * 990 + b"\r\nend\r\n"
    ),
    "submissions": b"implicit TLS\r\n.\r\n..\r\n",
    "smtp": b"from a stranger\r\n.hidden dot\r\n",
}


def message(name: str, sender: str) -> bytes:
    headers = (
        f"From: <{sender}>\r\nTo: <{ALICE}>\r\nSubject: via {name}\r\n"
        f"Message-ID: <{name}@example.com>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode()
    return headers + BODIES[name]


def without_received(data: bytes) -> bytes:
    """The message as the sender wrote it: our Received: header taken off the top."""
    received = re.match(rb"Received: [^\r]*\r\n(?:[ \t][^\r]*\r\n)*", data)
    assert received is not None, data[:200]
    return data[received.end() :]


class JourneyTests(unittest.TestCase):
    async def started(self) -> RunningSuite:
        suite = await start_suite(self)
        suite.add_user(ALICE, PASSWORD)
        suite.add_user(BOB, PASSWORD)
        return suite

    # -- clients, run in threads ----------------------------------------------

    def send_all(self, suite: RunningSuite) -> None:
        context = suite.client_ssl_context()
        with smtplib.SMTP("127.0.0.1", suite.port("submission"), timeout=TIMEOUT) as smtp:
            smtp.starttls(context=context)
            smtp.login(BOB, PASSWORD)
            smtp.sendmail(BOB, [ALICE], message("submission", BOB))
        with smtplib.SMTP_SSL(
            "127.0.0.1", suite.port("submissions"), timeout=TIMEOUT, context=context
        ) as smtp:
            smtp.login(BOB, PASSWORD)
            smtp.sendmail(BOB, [ALICE], message("submissions", BOB))
        with smtplib.SMTP("127.0.0.1", suite.port("smtp"), timeout=TIMEOUT) as smtp:
            smtp.sendmail("stranger@example.org", [ALICE], message("smtp", "stranger@example.org"))

    def refusals(self, suite: RunningSuite) -> dict[str, Any]:
        found: dict[str, Any] = {}
        with smtplib.SMTP("127.0.0.1", suite.port("smtp"), timeout=TIMEOUT) as smtp:
            smtp.ehlo()
            found["mx_offers_auth"] = smtp.has_extn("auth")
            smtp.mail("stranger@example.org")
            found["relay"] = smtp.rcpt("victim@example.net")[0]
        with smtplib.SMTP("127.0.0.1", suite.port("submission"), timeout=TIMEOUT) as smtp:
            smtp.ehlo()
            found["auth_before_tls"] = smtp.docmd("AUTH", "PLAIN AGJvYkBleGFtcGxlLmNvbQBw")[0]
        return found

    def pop3_read(self, suite: RunningSuite) -> tuple[list[bytes], list[bytes]]:
        client = poplib.POP3("127.0.0.1", suite.port("pop3"), timeout=TIMEOUT)
        client.stls(context=suite.client_ssl_context())
        client.user(ALICE)
        client.pass_(PASSWORD)
        count = client.stat()[0]
        uidls = [line.split()[1] for line in client.uidl()[1]]
        bodies = [b"".join(x + b"\r\n" for x in client.retr(n)[1]) for n in range(1, count + 1)]
        client.quit()
        return uidls, bodies

    def imap_read_and_flag(self, suite: RunningSuite) -> tuple[list[bytes], bytes, list[bytes]]:
        client = imaplib.IMAP4("127.0.0.1", suite.port("imap"), timeout=TIMEOUT)
        client.starttls(ssl_context=suite.client_ssl_context())
        client.login(ALICE, PASSWORD)
        assert client.select("INBOX")[0] == "OK"
        validity = client.response("UIDVALIDITY")[1][0]
        status, data = client.uid("FETCH", "1:*", "(UID BODY[])")
        assert status == "OK", data
        bodies = [item[1] for item in data if isinstance(item, tuple)]
        uids = re.findall(rb"UID (\d+)", b" ".join(i[0] for i in data if isinstance(i, tuple)))
        client.uid("STORE", "1:*", "+FLAGS", "(\\Flagged \\Answered)")
        client.logout()
        return uids, validity or b"", bodies

    def imap_identities(self, suite: RunningSuite) -> tuple[list[bytes], bytes]:
        client = imaplib.IMAP4_SSL(
            "127.0.0.1",
            suite.port("imaps"),
            timeout=TIMEOUT,
            ssl_context=suite.client_ssl_context(),
        )
        client.login(ALICE, PASSWORD)
        client.select("INBOX", readonly=True)
        validity = client.response("UIDVALIDITY")[1][0]
        status, data = client.uid("SEARCH", "ALL")
        assert status == "OK", data
        client.logout()
        return data[0].split(), validity or b""

    # -- the journey ----------------------------------------------------------

    async def test_mail_in_read_back_and_identities_survive_restart(self) -> None:
        """Every message arrives, reads back byte for byte, and keeps its identity."""
        suite = await self.started()

        await threads.deferToThread(self.send_all, suite)
        pop_uidls, pop_bodies = await threads.deferToThread(self.pop3_read, suite)
        imap_uids, validity, imap_bodies = await threads.deferToThread(
            self.imap_read_and_flag, suite
        )

        expected = [message(n, BOB if n != "smtp" else "stranger@example.org") for n in BODIES]
        self.assertEqual(expected, [without_received(b) for b in pop_bodies])
        self.assertEqual(expected, [without_received(b) for b in imap_bodies])
        self.assertEqual(pop_bodies, imap_bodies)
        # One identity for both protocols: the UIDL is built from UID and UIDVALIDITY.
        expected_uidls = [b"%08X%08X" % (int(u), int(validity)) for u in imap_uids]
        self.assertEqual(expected_uidls, pop_uidls)

        await suite.restart()
        pop_after, _ = await threads.deferToThread(self.pop3_read, suite)
        uids_after, validity_after = await threads.deferToThread(self.imap_identities, suite)

        self.assertEqual(pop_uidls, pop_after)
        self.assertEqual(imap_uids, uids_after)
        self.assertEqual(validity, validity_after)

    async def test_relay_and_cleartext_auth_are_refused(self) -> None:
        """The MX relays for no one and offers no AUTH; submission wants TLS first."""
        suite = await self.started()

        found = await threads.deferToThread(self.refusals, suite)

        self.assertEqual({"mx_offers_auth": False, "relay": 550, "auth_before_tls": 538}, found)

    async def test_certificate_names_localhost(self) -> None:
        """The generated certificate verifies for localhost with hostname checking on."""
        suite = await self.started()
        context = suite.client_ssl_context()
        self.assertTrue(context.check_hostname)
        self.assertEqual(ssl.CERT_REQUIRED, context.verify_mode)

        def connect() -> str:
            with smtplib.SMTP("localhost", suite.port("submission"), timeout=TIMEOUT) as smtp:
                smtp.starttls(context=context)
                return str(smtp.sock.version())  # type: ignore[union-attr]

        version = await threads.deferToThread(connect)

        self.assertIn(version, {"TLSv1.2", "TLSv1.3"})
