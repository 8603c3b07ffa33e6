"""Aliases and the submission sender check end to end: smtplib against the real suite.

The other listeners get echo stand-ins, as in ``test_e2e_smtp``. Aliases are
written the way ``mailsuite alias add`` writes them, into the running
suite's aliases file, and the server sees them at once.
"""

from __future__ import annotations

import smtplib
from typing import Any

from twisted.internet import defer, threads
from twisted.trial import unittest

from mailsuite.aliases import AliasTable
from tests.support import RunningSuite
from tests.test_e2e_smtp import TIMEOUT, after_received, inbox_messages, start

ALICE = "alice@example.com"
BOB = "bob@example.com"
PASSWORD = "correct horse"


def message(from_header: str) -> bytes:
    return (f"From: {from_header}\r\nTo: someone\r\nSubject: aliases\r\n\r\nHello.\r\n").encode()


def add_alias(suite: RunningSuite, alias: str, *targets: str) -> None:
    AliasTable(suite.config.aliases, suite.config.domains).add(alias, list(targets))


class SubmissionSenderTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.suite = yield start(self)
        self.suite.add_user(ALICE, PASSWORD)
        self.suite.add_user(BOB, PASSWORD)
        add_alias(self.suite, "family@example.com", ALICE, BOB)
        add_alias(self.suite, "kids@example.com", BOB)

    def submit(self, sender: str, data: bytes, recipients: list[str]) -> Any:
        """alice sends over port 587 with STARTTLS; returns the refusal, if any."""
        port = self.suite.port("submission")
        context = self.suite.client_ssl_context()

        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.starttls(context=context)
                client.login(ALICE, PASSWORD)
                try:
                    client.sendmail(sender, recipients, data)
                except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as e:
                    return type(e).__name__, e.smtp_code, e.smtp_error
                return None

        return threads.deferToThread(send)

    @defer.inlineCallbacks
    def test_sending_as_another_user_is_refused_at_mail(self) -> Any:
        """MAIL FROM:<bob> as alice: 553 5.7.1, and nothing arrives anywhere."""
        refusal = yield self.submit(BOB, message(BOB), [BOB, "friend@remote.example"])

        self.assertEqual(("SMTPSenderRefused", 553), refusal[:2])
        self.assertTrue(refusal[2].startswith(b"5.7.1"))
        self.assertEqual([], inbox_messages(self.suite, BOB))
        self.assertEqual([], self.suite.context.spool.entries())

    @defer.inlineCallbacks
    def test_alias_of_someone_else_is_refused(self) -> Any:
        """kids@ delivers to bob only; alice may not use it."""
        refusal = yield self.submit("kids@example.com", message(ALICE), [BOB])

        self.assertEqual(("SMTPSenderRefused", 553), refusal[:2])

    @defer.inlineCallbacks
    def test_forged_from_header_is_refused_at_end_of_data(self) -> Any:
        """Her own envelope but From: bob: 553 5.7.1 after DATA; nothing stored or queued."""
        refusal = yield self.submit(
            ALICE, message(f"Bob <{BOB}>"), [BOB, ALICE, "friend@remote.example"]
        )

        self.assertEqual(("SMTPDataError", 553), refusal[:2])
        self.assertTrue(refusal[2].startswith(b"5.7.1"))
        self.assertEqual([], inbox_messages(self.suite, BOB))
        self.assertEqual([], inbox_messages(self.suite, ALICE))
        self.assertEqual([], self.suite.context.spool.entries())

    @defer.inlineCallbacks
    def test_sending_as_her_alias_works(self) -> Any:
        """family@ delivers to alice, so she may send as it, envelope and header."""
        data = message("The Family <family@example.com>")

        refusal = yield self.submit("family@example.com", data, [BOB, "friend@remote.example"])

        self.assertIsNone(refusal)
        [stored] = inbox_messages(self.suite, BOB)
        self.assertEqual(data, after_received(stored))
        [entry] = self.suite.context.spool.entries()
        self.assertEqual("family@example.com", entry.sender)


class MXAliasTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.suite = yield start(self)
        self.suite.add_user(ALICE, PASSWORD)
        self.suite.add_user(BOB, PASSWORD)

    def send(self, recipients: list[str]) -> Any:
        port = self.suite.port("smtp")
        data = message("Stranger <someone@remote.example>")

        def send() -> dict[str, Any]:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                return client.sendmail("someone@remote.example", recipients, data)

        return threads.deferToThread(send)

    @defer.inlineCallbacks
    def test_two_aliases_to_one_user_deliver_once(self) -> Any:
        """family@ and kids@ both reach bob: bob's Maildir gets exactly one copy."""
        add_alias(self.suite, "family@example.com", ALICE, BOB)
        add_alias(self.suite, "kids@example.com", BOB)

        refused = yield self.send(["family@example.com", "kids@example.com", BOB])

        self.assertEqual({}, refused)
        self.assertEqual(1, len(inbox_messages(self.suite, BOB)))
        self.assertEqual(1, len(inbox_messages(self.suite, ALICE)))

    @defer.inlineCallbacks
    def test_forwarding_alias_queues_the_remote_target(self) -> Any:
        """A remote target is queued with the stranger's return path; the user keeps a copy."""
        add_alias(self.suite, "alice@example.com", ALICE, "alice@phone.example")

        yield self.send([ALICE])

        self.assertEqual(1, len(inbox_messages(self.suite, ALICE)))
        [entry] = self.suite.context.spool.entries()
        self.assertEqual("someone@remote.example", entry.sender)
        self.assertEqual(["alice@phone.example"], [r.address for r in entry.recipients])

    @defer.inlineCallbacks
    def test_postmaster_alias(self) -> Any:
        """postmaster@ works as an alias, for every one of our domains."""
        add_alias(self.suite, "postmaster@example.com", ALICE)

        refused = yield self.send(["postmaster@example.com"])

        self.assertEqual({}, refused)
        self.assertEqual(1, len(inbox_messages(self.suite, ALICE)))

    @defer.inlineCallbacks
    def test_alias_to_nobody_is_refused(self) -> Any:
        """An alias whose targets do not exist is 550 5.1.1 at RCPT."""
        add_alias(self.suite, "ghosts@example.com", "gone@example.com")
        port = self.suite.port("smtp")

        def rcpt() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.ehlo()
                client.mail("someone@remote.example")
                return client.rcpt("ghosts@example.com")

        code, text = yield threads.deferToThread(rcpt)

        self.assertEqual(550, code)
        self.assertTrue(text.startswith(b"5.1.1"))
