"""Submission: AUTH only under TLS, MAIL only after AUTH, relaying for users."""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from mailsuite.store.errors import TemporaryFailure
from tests.test_smtp_server import (
    QUEUE_ID,
    Client,
    Harness,
    make_harness,
    reply_codes,
    split_received,
)
from tests.test_smtp_server import send_mail as send_any_mail

#: What alice's mail program sends: her own From: (the sender check wants it).
MESSAGE = b"From: <alice@example.org>\r\nSubject: hi\r\n\r\nHello.\r\n"


def send_mail(client: Client, sender: str, recipients: list[str]) -> list[str]:
    return send_any_mail(client, sender, recipients, MESSAGE)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


PLAIN = b64("\0alice@example.org\0secret")


def submission(kind: str = "submission") -> tuple[Harness, Client]:
    """A submission session after EHLO, STARTTLS and EHLO again."""
    harness = make_harness(kind)
    client = harness.connect()
    if kind == "submission":
        client.send("EHLO c\r\n")
        client.start_tls()
    client.send("EHLO c\r\n")
    return harness, client


class BeforeTLSTests(unittest.TestCase):
    def test_auth_not_offered_before_tls(self) -> None:
        """Port 587 in the clear advertises STARTTLS but not AUTH."""
        client = make_harness("submission").connect()

        ehlo = client.send("EHLO c\r\n")

        self.assertIn("STARTTLS", ehlo)
        self.assertNotIn("AUTH", ehlo)

    def test_auth_refused_before_tls(self) -> None:
        """538 5.7.11: no password crosses the wire in the clear, and none is checked."""
        harness = make_harness("submission")
        client = harness.connect()
        client.send("EHLO c\r\n")

        self.assertEqual(["538 5.7.11"], client.codes(f"AUTH PLAIN {PLAIN}\r\n"))
        self.assertEqual(["538 5.7.11"], client.codes("AUTH LOGIN\r\n"))
        self.assertEqual([], harness.checker.seen)

    def test_mail_needs_auth(self) -> None:
        """530 5.7.0 for MAIL without AUTH, before and after TLS."""
        harness = make_harness("submission")
        client = harness.connect()
        client.send("EHLO c\r\n")

        self.assertEqual(["530 5.7.0"], client.codes("MAIL FROM:<alice@example.org>\r\n"))
        client.start_tls()
        client.send("EHLO c\r\n")
        self.assertEqual(["530 5.7.0"], client.codes("MAIL FROM:<alice@example.org>\r\n"))


class MechanismTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness, self.client = submission()

    def test_auth_offered_after_tls(self) -> None:
        """After STARTTLS, EHLO offers AUTH PLAIN LOGIN."""
        self.assertIn("250 AUTH PLAIN LOGIN\r\n", self.client.send("EHLO c\r\n"))

    def test_plain_with_initial_response(self) -> None:
        """AUTH PLAIN <response>: 235, and the checker saw the session and protocol."""
        self.assertEqual(["235 2.7.0"], self.client.codes(f"AUTH PLAIN {PLAIN}\r\n"))

        [credentials] = self.harness.checker.seen
        self.assertEqual(
            (b"alice@example.org", b"secret", "submission", self.client.session.session_id),
            (
                credentials.username,
                credentials.password,
                credentials.protocol,
                credentials.session,
            ),
        )

    def test_plain_without_initial_response(self) -> None:
        """AUTH PLAIN then an empty 334 challenge, then the response."""
        self.assertEqual("334 \r\n", self.client.send("AUTH PLAIN\r\n"))
        self.assertEqual(["235 2.7.0"], self.client.codes(f"{PLAIN}\r\n"))

    def test_login(self) -> None:
        """AUTH LOGIN asks Username: and Password: in base64."""
        self.assertEqual("334 VXNlcm5hbWU6\r\n", self.client.send("auth login\r\n"))
        self.assertEqual(
            "334 UGFzc3dvcmQ6\r\n", self.client.send(b64("alice@example.org") + "\r\n")
        )
        self.assertEqual(["235 2.7.0"], self.client.codes(b64("secret") + "\r\n"))

    def test_login_with_initial_user_name(self) -> None:
        """AUTH LOGIN <user> goes straight to the password challenge."""
        reply = self.client.send(f"AUTH LOGIN {b64('alice@example.org')}\r\n")

        self.assertEqual("334 UGFzc3dvcmQ6\r\n", reply)
        self.assertEqual(["235 2.7.0"], self.client.codes(b64("secret") + "\r\n"))

    def test_cancel(self) -> None:
        """RFC 4954 4: "*" cancels with 501, and commands work again."""
        self.client.send("AUTH LOGIN\r\n")

        self.assertEqual(["501 5.7.0"], self.client.codes("*\r\n"))
        self.assertEqual(["250 2.0.0"], self.client.codes("NOOP\r\n"))

    def test_bad_responses(self) -> None:
        """Undecodable base64 or a malformed PLAIN response is 501 5.5.2."""
        for command in ("AUTH PLAIN !!!!\r\n", f"AUTH PLAIN {b64('no-nuls')}\r\n"):
            self.assertEqual(["501 5.5.2"], self.client.codes(command))

    def test_acting_as_another_user_is_an_auth_failure(self) -> None:
        """A PLAIN authzid naming someone else is refused as 535, not as undecodable."""
        response = b64("bob@example.org\0alice@example.org\0secret")
        command = f"AUTH PLAIN {response}\r\n"

        self.assertEqual(["535 5.7.8"], self.client.codes(command))

    def test_unknown_mechanism(self) -> None:
        """504 5.5.4 for CRAM-MD5 and the like."""
        self.assertEqual(["504 5.5.4"], self.client.codes("AUTH CRAM-MD5\r\n"))

    def test_overlong_response_ends_the_exchange(self) -> None:
        """A response over 12288 octets is 500 5.5.6 and the exchange is over."""
        self.client.send("AUTH PLAIN\r\n")

        self.assertEqual(["500 5.5.6"], self.client.codes(b"A" * 13000 + b"\r\n"))
        self.assertEqual(["250 2.0.0"], self.client.codes("NOOP\r\n"))

    def test_long_initial_response_is_read(self) -> None:
        """RFC 4954 4: AUTH lines up to 12288 octets are parsed, not refused as too long."""
        self.assertEqual(["501 5.5.2"], self.client.codes("AUTH PLAIN " + "A" * 8000 + "\r\n"))

    def test_auth_twice(self) -> None:
        """RFC 4954 4: a second AUTH after success is 503."""
        self.client.login()

        self.assertEqual(["503 5.5.1"], self.client.codes(f"AUTH PLAIN {PLAIN}\r\n"))

    def test_auth_needs_ehlo(self) -> None:
        """AUTH is an ESMTP extension: after HELO it is out of sequence."""
        self.client.send("HELO c\r\n")

        self.assertEqual(["503 5.5.1"], self.client.codes(f"AUTH PLAIN {PLAIN}\r\n"))

    def test_no_password_in_any_log(self) -> None:
        """Neither the password nor the AUTH argument reaches any log event."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        self.client.login()
        self.client.codes(f"AUTH PLAIN {b64(chr(0) + 'x@example.org' + chr(0) + 'hunter2')}\r\n")

        text = repr(events) + repr(self.harness.events)
        for secret in ("secret", PLAIN, "hunter2"):
            self.assertNotIn(secret, text)


class FailureTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness, self.client = submission()

    def test_wrong_password_answered_after_the_delay(self) -> None:
        """535 5.7.8 comes only when the checker's delay has passed; input waits."""
        wrong = b64("\0alice@example.org\0wrong")

        self.assertEqual("", self.client.send(f"AUTH PLAIN {wrong}\r\nNOOP\r\n"))
        self.harness.clock.advance(2)

        self.assertEqual(["535 5.7.8", "250 2.0.0"], reply_codes(self.client.take()))

    def test_too_many_failures_close(self) -> None:
        """The third failure is followed by 421 4.7.0 and the connection closes."""
        wrong = b64("\0alice@example.org\0wrong")
        for _ in range(3):
            self.client.send(f"AUTH PLAIN {wrong}\r\n")
            self.harness.clock.advance(2)

        self.assertTrue(self.client.closed)

    def test_checker_failure_is_temporary(self) -> None:
        """A broken password file is 454 4.7.0 and logged, not 535."""
        self.harness.checker.broken = True

        self.assertEqual(["454 4.7.0"], self.client.codes(f"AUTH PLAIN {PLAIN}\r\n"))
        self.assertEqual(1, len(self.flushLoggedErrors(OSError)))


class RelayTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness, self.client = submission()
        self.client.login()

    def test_remote_recipient_is_queued(self) -> None:
        """An authenticated user's mail to anyone goes to the spool, marked ESMTPSA."""
        codes = send_mail(self.client, "alice@example.org", ["bob@elsewhere.example"])

        self.assertEqual(["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"], codes)
        [(sender, recipients, data)] = self.harness.spool.queued
        self.assertEqual(("alice@example.org", ["bob@elsewhere.example"]), (sender, recipients))
        self.assertIn(b"with ESMTPSA id", data)
        self.assertEqual(MESSAGE, split_received(data)[1])
        [event] = self.harness.mail_events("queued")
        self.assertEqual(QUEUE_ID, event["queue_id"])

    def test_local_and_remote_recipients(self) -> None:
        """Local recipients go to the store, remote ones to one spool entry."""
        send_mail(
            self.client,
            "alice@example.org",
            ["bob@elsewhere.example", "alice@example.org", "carol@other.example"],
        )

        self.assertEqual(["alice@example.org"], [m for m, _ in self.harness.store.delivered])
        [(_, recipients, _)] = self.harness.spool.queued
        self.assertEqual(["bob@elsewhere.example", "carol@other.example"], recipients)

    def test_unknown_local_user_still_refused(self) -> None:
        """Authentication does not make up local users: 550 5.1.1."""
        self.client.send("MAIL FROM:<alice@example.org>\r\n")

        self.assertEqual(["550 5.1.1"], self.client.codes("RCPT TO:<nobody@example.org>\r\n"))

    def test_spool_failure_is_temporary(self) -> None:
        """If the queue write fails the client gets 451 4.3.0, even if a local copy landed."""
        self.harness.spool.failure = TemporaryFailure("queue disk full")

        codes = send_mail(
            self.client, "alice@example.org", ["alice@example.org", "bob@elsewhere.example"]
        )

        self.assertEqual("451 4.3.0", codes[-1])
        self.assertEqual(1, len(self.harness.store.delivered))
        self.flushLoggedErrors(TemporaryFailure)


class LoopbackTests(unittest.TestCase):
    def test_plaintext_on_loopback_when_allowed(self) -> None:
        """auth.plaintext_on_loopback: a 127.x peer may AUTH without TLS."""
        harness = make_harness("submission", plaintext_on_loopback=True)
        client = harness.connect(IPv4Address("TCP", "127.0.0.1", 40000))

        self.assertIn("AUTH PLAIN LOGIN", client.send("EHLO c\r\n"))
        client.login()

    def test_never_for_other_peers(self) -> None:
        """The setting does not open plaintext AUTH to anyone off the machine."""
        harness = make_harness("submission", plaintext_on_loopback=True)
        client = harness.connect()

        self.assertNotIn("AUTH", client.send("EHLO c\r\n"))
        self.assertEqual(["538 5.7.11"], client.codes(f"AUTH PLAIN {PLAIN}\r\n"))

    def test_off_by_default(self) -> None:
        """Without the setting, loopback is treated like any network."""
        client = make_harness("submission").connect(IPv4Address("TCP", "127.0.0.1", 40000))
        client.send("EHLO c\r\n")

        self.assertEqual(["538 5.7.11"], client.codes(f"AUTH PLAIN {PLAIN}\r\n"))


class ImplicitTLSTests(unittest.TestCase):
    def test_submissions_is_secure_from_the_start(self) -> None:
        """Port 465: AUTH offered at once, STARTTLS not offered and refused."""
        harness = make_harness("submissions")
        client = harness.connect()

        ehlo = client.send("EHLO c\r\n")

        self.assertIn("AUTH PLAIN LOGIN", ehlo)
        self.assertNotIn("STARTTLS", ehlo)
        self.assertEqual(["503 5.5.1"], client.codes("STARTTLS\r\n"))
        client.login()
        send_mail(client, "alice@example.org", ["bob@elsewhere.example"])
        self.assertIn(b"with ESMTPSA id", harness.spool.queued[0][2])


class FactoryTests(unittest.TestCase):
    def test_unknown_kind(self) -> None:
        """A typo in the listener kind fails at start-up, not on the first client."""
        harness = make_harness()

        self.assertRaises(ValueError, type(harness.factory), harness.factory.ctx, "smtps")
