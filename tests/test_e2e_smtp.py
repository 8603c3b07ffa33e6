"""SMTP end to end: Python's smtplib against the real suite on loopback ports.

The other listeners get echo stand-ins, so these tests exercise only the
SMTP receiver, the store, the spool and the password file.
"""

from __future__ import annotations

import glob
import os
import smtplib
import socket
from typing import Any

from twisted.internet import defer, threads
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from tests.support import RunningSuite, echo_factories, start_suite

SMTP_LISTENERS = ("smtp", "submission", "submissions")
USER = "alice@example.com"
PASSWORD = "correct horse"
TIMEOUT = 10

#: Dot-led lines, a lone dot, and 8-bit text: what must survive byte for byte.
MESSAGE = (
    "From: Alice <alice@example.com>\r\n"
    "To: someone\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    ".\r\n"
    "..two dots\r\n"
    ".leading dot\r\n"
    "Grüße aus Köln, ñ, 日本語\r\n"
).encode()


def start(testcase: unittest.TestCase, **overrides: Any) -> defer.Deferred[RunningSuite]:
    factories = {k: v for k, v in echo_factories().items() if k not in SMTP_LISTENERS}
    return start_suite(testcase, factories=factories, **overrides)


def inbox_messages(suite: RunningSuite, address: str) -> list[bytes]:
    local, domain = address.split("@")
    found = []
    for path in sorted(glob.glob(os.path.join(suite.store_path, domain, local, "new", "*"))):
        with open(path, "rb") as f:
            found.append(f.read())
    return found


def after_received(data: bytes) -> bytes:
    """The message with our one (folded) Received header taken off."""
    assert data.startswith(b"Received: from ")
    end = data.index(b"\r\n")
    while data[end + 2 : end + 3] == b"\t":
        end = data.index(b"\r\n", end + 2)
    return data[end + 2 :]


class SubmissionTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.suite = yield start(self)
        self.suite.add_user(USER, PASSWORD)

    @defer.inlineCallbacks
    def test_starttls_auth_and_local_delivery(self) -> Any:
        """Port 587: STARTTLS, AUTH, and 8-bit text with dot lines stored byte for byte."""
        port = self.suite.port("submission")
        context = self.suite.client_ssl_context()

        def send() -> dict[str, Any]:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.starttls(context=context)
                client.login(USER, PASSWORD)
                return client.sendmail(USER, [USER], MESSAGE, mail_options=["BODY=8BITMIME"])

        refused = yield threads.deferToThread(send)

        self.assertEqual({}, refused)
        [stored] = inbox_messages(self.suite, USER)
        self.assertEqual(MESSAGE, after_received(stored))
        self.assertIn(b"with ESMTPSA id", stored)

    @defer.inlineCallbacks
    def test_implicit_tls_and_remote_recipient_is_spooled(self) -> Any:
        """Port 465: SMTP_SSL, AUTH; mail to another domain lands in the spool."""
        port = self.suite.port("submissions")
        context = self.suite.client_ssl_context()

        def send() -> None:
            with smtplib.SMTP_SSL("127.0.0.1", port, timeout=TIMEOUT, context=context) as client:
                client.login(USER, PASSWORD)
                client.sendmail(USER, ["friend@elsewhere.example"], MESSAGE)

        yield threads.deferToThread(send)

        spool = self.suite.context.spool
        [entry] = spool.entries()
        self.assertEqual(USER, entry.sender)
        self.assertEqual(["friend@elsewhere.example"], [r.address for r in entry.recipients])
        self.assertEqual(MESSAGE, after_received(spool.read_message(entry.id)))

    @defer.inlineCallbacks
    def test_auth_before_tls_is_refused(self) -> Any:
        """Port 587 in the clear: AUTH is not offered, and sending it anyway is 538."""
        port = self.suite.port("submission")

        def try_plaintext() -> tuple[bool, int, int]:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.ehlo()
                offered = client.has_extn("auth")
                code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHg=")
                mail_code, _ = client.mail(USER)
                return offered, code, mail_code

        offered, code, mail_code = yield threads.deferToThread(try_plaintext)

        self.assertEqual((False, 538, 530), (offered, code, mail_code))

    @defer.inlineCallbacks
    def test_wrong_password(self) -> Any:
        """A wrong password is 535, and the mail log says who failed where."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        port = self.suite.port("submissions")
        context = self.suite.client_ssl_context()

        def login() -> int:
            with smtplib.SMTP_SSL("127.0.0.1", port, timeout=TIMEOUT, context=context) as client:
                try:
                    client.login(USER, "wrong")
                except smtplib.SMTPAuthenticationError as e:
                    return e.smtp_code
                return 0

        code = yield threads.deferToThread(login)

        self.assertEqual(535, code)
        # smtplib tries PLAIN, then LOGIN: two failures, both logged.
        failed = [e for e in events if e.get("mail_event") == "auth_failed"]
        self.assertEqual(
            [("submissions", USER)] * 2, [(e["protocol"], e["username"]) for e in failed]
        )
        self.assertNotIn("wrong", repr(events))


class MXTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.suite = yield start(self, limits={"message_size": 10_000})
        self.suite.add_user(USER, PASSWORD)

    @defer.inlineCallbacks
    def test_stranger_to_local_user(self) -> Any:
        """Port 25 without AUTH: mail for our user is delivered."""
        port = self.suite.port("smtp")

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.sendmail("someone@remote.example", ["Alice@Example.com"], MESSAGE)

        yield threads.deferToThread(send)

        [stored] = inbox_messages(self.suite, USER)
        self.assertEqual(MESSAGE, after_received(stored))
        self.assertIn(b"for <Alice@Example.com>", stored)

    @defer.inlineCallbacks
    def test_relay_is_refused(self) -> Any:
        """Port 25 is not an open relay: 550 for another domain, nothing spooled."""
        port = self.suite.port("smtp")

        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                try:
                    client.sendmail("someone@remote.example", ["victim@elsewhere.example"], b"x")
                except smtplib.SMTPRecipientsRefused as e:
                    return e.recipients
                return None

        refused = yield threads.deferToThread(send)

        self.assertEqual(550, refused["victim@elsewhere.example"][0])
        self.assertEqual([], self.suite.context.spool.entries())

    @defer.inlineCallbacks
    def test_unknown_user_is_refused(self) -> Any:
        """550 5.1.1 for a user we do not have."""
        port = self.suite.port("smtp")

        def rcpt() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.ehlo()
                client.mail("someone@remote.example")
                return client.rcpt("nobody@example.com")

        code, text = yield threads.deferToThread(rcpt)

        self.assertEqual(550, code)
        self.assertTrue(text.startswith(b"5.1.1"))

    @defer.inlineCallbacks
    def test_oversize_is_refused(self) -> Any:
        """Declared SIZE over the limit is 552 at MAIL; undeclared, 552 after DATA."""
        port = self.suite.port("smtp")
        big = b"Subject: big\r\n\r\n" + b"x" * 100 + b"\r\n" * 200 + (b"y" * 998 + b"\r\n") * 12

        def send() -> tuple[int, int, int]:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                try:
                    client.sendmail("someone@remote.example", [USER], big)
                    declared = 250
                except smtplib.SMTPSenderRefused as e:
                    declared = e.smtp_code
                client.rset()
                client.mail("someone@remote.example")
                client.rcpt(USER)
                actual, _ = client.data(big)
                code, _ = client.noop()
                return declared, actual, code

        codes = yield threads.deferToThread(send)

        self.assertEqual((552, 552, 250), codes)
        self.assertEqual([], inbox_messages(self.suite, USER))

    @defer.inlineCallbacks
    def test_starttls_injection_is_ignored(self) -> Any:
        """A command sent in the same packet as STARTTLS is never executed."""
        port = self.suite.port("smtp")

        def inject() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
                reader = s.makefile("rb")
                reader.readline()
                s.sendall(b"EHLO c\r\n")
                while reader.readline()[3:4] == b"-":
                    pass
                s.sendall(b"STARTTLS\r\nRSET\r\nNOOP\r\n")
                reply = reader.readline()
                s.shutdown(socket.SHUT_WR)
                # Anything more is either a TLS record or nothing; never "250".
                rest = reader.read()
                return reply + rest

        output = yield threads.deferToThread(inject)

        self.assertTrue(output.startswith(b"220 2.0.0"))
        self.assertNotIn(b"250", output)


class QuotaTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_full_mailbox_is_a_temporary_refusal_at_rcpt(self) -> Any:
        """Over limits.quota, RCPT gets 452 4.2.2 and the other recipients still get mail."""
        suite = yield start(self, limits={"quota": 1000})
        suite.add_user(USER, PASSWORD)
        suite.add_user("bob@example.com", PASSWORD)
        yield suite.context.store.deliver(USER, b"Subject: big\r\n\r\n" + b"x" * 2000 + b"\r\n")
        port = suite.port("smtp")

        def send() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.ehlo()
                client.mail("someone@remote.example")
                full = client.rcpt(USER)
                room = client.rcpt("bob@example.com")
                client.data(MESSAGE)
                return full, room

        full, room = yield threads.deferToThread(send)

        self.assertEqual((452, 250), (full[0], room[0]))
        self.assertTrue(full[1].startswith(b"4.2.2"))
        self.assertEqual(1, len(inbox_messages(suite, USER)))
        self.assertEqual(1, len(inbox_messages(suite, "bob@example.com")))
