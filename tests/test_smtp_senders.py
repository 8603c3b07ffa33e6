"""Aliases in the SMTP session: who submission lets a user send as, and delivery to aliases.

Sessions run over a StringTransport (the harness of ``test_smtp_server``)
with a real ``AliasTable`` on a temporary file.
"""

from __future__ import annotations

import dataclasses
import os

from twisted.trial import unittest

from mailsuite.aliases import AliasTable
from mailsuite.config import ConfigError
from mailsuite.smtp import SMTPFactory, headers
from mailsuite.smtp.headers import HeaderTooLong, UnreadableFrom
from mailsuite.smtp.policy import SenderPolicy
from mailsuite.smtp.replies import SMTPReplyError
from tests.test_smtp_server import QUEUE_ID, Client, Harness, make_harness, send_mail

ALICE = "alice@example.org"
BOB = "bob@example.org"
STRANGER = "x@remote.example"

ALIASES = (
    "family@example.org: alice@example.org, bob@example.org\n"
    "kids@example.org: bob@example.org\n"
    "mum@example.org: alice@example.org\n"
    "everyone@example.org: family@example.org, kids@example.org, grandma@remote.example\n"
    "ghosts@example.org: gone@example.org\n"
    "parents@example.org: mum@example.org\n"
)


def message(sender_header: str | None = ALICE, body: str = "Hello.\r\n") -> bytes:
    """A small message with the given From: line (none if None)."""
    lines = [f"From: {sender_header}\r\n"] if sender_header is not None else []
    lines += ["Subject: hi\r\n", "\r\n", body]
    return "".join(lines).encode("utf-8")


def with_aliases(testcase: unittest.TestCase, kind: str, text: str = ALIASES) -> Harness:
    """A harness whose factory reads ``text`` as its aliases file."""
    folder = testcase.mktemp()
    os.makedirs(folder)
    path = os.path.join(folder, "aliases")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)

    harness = make_harness(kind, users=(ALICE, BOB))
    ctx = harness.factory.ctx
    table = AliasTable(path, ctx.config.domains)
    return dataclasses.replace(harness, factory=SMTPFactory(ctx, kind, aliases=table))


def logged_in(harness: Harness, user: str = ALICE) -> Client:
    """A submission client after EHLO, STARTTLS, EHLO and AUTH."""
    client = harness.connect()
    client.send("EHLO c\r\n")
    client.start_tls()
    client.send("EHLO c\r\n")
    client.login(user)
    return client


class EnvelopeSenderTests(unittest.TestCase):
    """MAIL FROM on submission: only the user's own addresses."""

    def setUp(self) -> None:
        self.harness = with_aliases(self, "submission")
        self.client = logged_in(self.harness)

    def test_own_address(self) -> None:
        """The user's address, in any letter case, is accepted."""
        self.assertEqual(["250 2.1.0"], self.client.codes("MAIL FROM:<Alice@Example.org>\r\n"))

    def test_subaddress(self) -> None:
        """alice+lists@ is alice's (RFC 5233)."""
        self.assertEqual(["250 2.1.0"], self.client.codes("MAIL FROM:<alice+x@example.org>\r\n"))

    def test_another_user_is_refused(self) -> None:
        """553 5.7.1 for bob's address; the refusal is in the mail log; the session goes on."""
        self.assertEqual(["553 5.7.1"], self.client.codes(f"MAIL FROM:<{BOB}>\r\n"))

        [event] = self.harness.mail_events("rejected")
        self.assertEqual(("MAIL", BOB, ALICE), (event["stage"], event["sender"], event["user"]))
        self.assertEqual(["503 5.5.1"], self.client.codes(f"RCPT TO:<{BOB}>\r\n"))
        self.assertEqual(["250 2.1.0"], self.client.codes(f"MAIL FROM:<{ALICE}>\r\n"))

    def test_remote_address_is_refused(self) -> None:
        """Nobody here owns a stranger's address: no sending as the bank."""
        self.assertEqual(["553 5.7.1"], self.client.codes("MAIL FROM:<ceo@bank.example>\r\n"))

    def test_null_sender_is_refused(self) -> None:
        """MAIL FROM:<> is for bounces, which a person's mail program never sends."""
        self.assertEqual(["553 5.7.1"], self.client.codes("MAIL FROM:<>\r\n"))

        [event] = self.harness.mail_events("rejected")
        self.assertEqual("<>", event["sender"])

    def test_alias_delivering_to_the_user(self) -> None:
        """An alias that reaches the user, directly or through others, is theirs."""
        for alias in ("family@example.org", "mum@example.org", "parents@example.org"):
            self.assertEqual(["250 2.1.0"], self.client.codes(f"MAIL FROM:<{alias}>\r\n"))
            self.client.send("RSET\r\n")

    def test_alias_of_someone_else(self) -> None:
        """kids@ delivers to bob only, so alice may not send as it."""
        self.assertEqual(["553 5.7.1"], self.client.codes("MAIL FROM:<kids@example.org>\r\n"))

    def test_refusals_count_as_bad_commands(self) -> None:
        """A client trying sender after sender is cut off like any other bad client."""
        output = self.client.send(f"MAIL FROM:<{BOB}>\r\n" * 6)

        self.assertIn("421 4.7.0", output)
        self.assertTrue(self.client.closed)

    def test_alias_added_while_connected(self) -> None:
        """A new alias is usable at once: the file is reread when it changes."""
        table = self.harness.factory.senders.aliases
        assert isinstance(table, AliasTable)
        path = table.path
        self.assertEqual(["553 5.7.1"], self.client.codes("MAIL FROM:<new@example.org>\r\n"))

        with open(path, "a", encoding="utf-8") as f:
            f.write("new@example.org: alice@example.org\n")

        self.assertEqual(["250 2.1.0"], self.client.codes("MAIL FROM:<new@example.org>\r\n"))

    def test_mx_does_not_check_senders(self) -> None:
        """Port 25 takes mail from anyone, as anyone: the check is for our users."""
        client = with_aliases(self, "smtp").connect()
        client.send("EHLO c\r\n")

        codes = send_mail(client, BOB, [ALICE], message("Bob <bob@example.org>"))

        self.assertEqual(["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"], codes)


class FromHeaderTests(unittest.TestCase):
    """The From: header at the end of DATA on submission."""

    def setUp(self) -> None:
        self.harness = with_aliases(self, "submission")
        self.client = logged_in(self.harness)

    def submit(self, data: bytes, sender: str = ALICE) -> list[str]:
        return send_mail(self.client, sender, [ALICE, "friend@remote.example"], data)

    def assertRefused(self, code: str, data: bytes, sender: str = ALICE) -> None:
        """Refused at the final dot with ``code``; nothing stored, nothing queued."""
        self.assertEqual(["250 2.1.0", "250 2.1.5", "250 2.1.5", "354", code], self.submit(data))
        self.assertEqual([], self.harness.store.delivered)
        self.assertEqual([], self.harness.spool.queued)

    def assertSent(self, data: bytes, sender: str = ALICE) -> None:
        self.assertEqual("250 2.0.0", self.submit(data, sender)[-1])
        self.assertEqual(1, len(self.harness.store.delivered))
        self.assertEqual(1, len(self.harness.spool.queued))

    def test_own_from(self) -> None:
        """The user's own From:, with a display name, goes through."""
        self.assertSent(message('"Alice A." <Alice@example.org>'))

    def test_forged_from(self) -> None:
        """From: bob while logged in as alice: 553 5.7.1, logged, nothing delivered."""
        self.assertRefused("553 5.7.1", message("Bob <bob@example.org>"))

        [event] = self.harness.mail_events("rejected")
        self.assertEqual(("DATA", ALICE, ALICE), (event["stage"], event["sender"], event["user"]))

    def test_session_goes_on_after_a_refusal(self) -> None:
        """The refused message ends its transaction only; the next one is fine."""
        self.submit(message(BOB))

        self.assertSent(message(ALICE))

    def test_alias_from_with_alias_sender(self) -> None:
        """Sending as an alias of the user works in the envelope and the header."""
        self.assertSent(message("The Family <family@example.org>"), sender="family@example.org")

    def test_every_from_address_is_checked(self) -> None:
        """A second address in the field, or a second From: field, cannot hide bob."""
        self.assertRefused("553 5.7.1", message(f"{ALICE}, {BOB}"))
        self.assertRefused(
            "553 5.7.1", b"From: alice@example.org\r\nFrom: bob@example.org\r\n\r\nHi\r\n"
        )

    def test_folded_and_oddly_spelt_fields(self) -> None:
        """Folded values, any letter case, and a space before the colon are all From:."""
        self.assertRefused("553 5.7.1", b"Subject: x\r\nFROM: Bob\r\n <bob@example.org>\r\n\r\n")
        self.assertRefused("553 5.7.1", b"from : bob@example.org\r\n\r\nHi\r\n")

    def test_from_after_a_malformed_line(self) -> None:
        """A broken header line does not end the header for us."""
        self.assertRefused(
            "553 5.7.1", b"Subject: x\r\nbroken line\r\nFrom: bob@example.org\r\n\r\n"
        )

    def test_from_in_the_body_is_not_a_header(self) -> None:
        """After the empty line, "From:" is text."""
        self.assertSent(message(ALICE, body="From: bob@example.org\r\n"))

    def test_missing_from_passes(self) -> None:
        """No From: at all is let through (RFC 6409 8.1 lets the server add the user's)."""
        self.assertSent(message(None))

    def test_no_header_at_all_passes(self) -> None:
        """A message that starts with its body has no From:, whatever the body says."""
        self.assertSent(b"\r\nFrom: bob@example.org\r\n")

    def test_unreadable_from_is_refused(self) -> None:
        """An empty From:, a group or a stray <> is refused, never taken as no From:."""
        for value in ("", "undisclosed-recipients:;", f"{ALICE} <>"):
            self.assertRefused("553 5.7.1", message(value))

    def test_encoded_address_is_refused(self) -> None:
        """An encoded word where the address belongs is not an address of the user's."""
        self.assertRefused("553 5.7.1", message("=?utf-8?q?bob=40example.org?="))

    def test_header_too_long(self) -> None:
        """A header section past the limit is refused (552), not checked in part."""
        self.harness.factory.senders.header_limit = 200
        padding = "".join(f"X-Pad-{i}: {'x' * 40}\r\n" for i in range(5))

        self.assertRefused("552 5.3.4", (padding + f"From: {BOB}\r\n\r\nHi\r\n").encode())
        self.assertSent(f"From: {ALICE}\r\n\r\n{padding}".encode())

    def test_queued_with_the_users_envelope(self) -> None:
        """What passes is queued under the checked sender, unchanged."""
        self.submit(message(ALICE))

        [(sender, recipients, _)] = self.harness.spool.queued
        self.assertEqual((ALICE, ["friend@remote.example"]), (sender, recipients))


class AliasDeliveryTests(unittest.TestCase):
    """Mail to an alias on the MX port: expanded, stored once per user, forwarded."""

    def setUp(self) -> None:
        self.harness = with_aliases(self, "smtp")
        self.client = self.harness.connect()
        self.client.send("EHLO c\r\n")

    def test_alias_to_two_users(self) -> None:
        """Each target user gets one copy; the Received header names the alias."""
        codes = send_mail(
            self.client, "x@remote.example", ["family@example.org"], message(STRANGER)
        )

        self.assertEqual("250 2.0.0", codes[-1])
        self.assertEqual([ALICE, BOB], [m for m, _ in self.harness.store.delivered])
        self.assertIn(b"for <family@example.org>", self.harness.store.delivered[0][1])

    def test_one_copy_however_many_paths(self) -> None:
        """Two aliases and the address itself, all reaching bob: bob gets one copy."""
        recipients = ["family@example.org", "kids@example.org", BOB]

        send_mail(self.client, "x@remote.example", recipients, message(STRANGER))

        self.assertEqual([ALICE, BOB], [m for m, _ in self.harness.store.delivered])
        [event_alice, event_bob] = self.harness.mail_events("received")
        self.assertEqual([ALICE, BOB], [event_alice["recipient"], event_bob["recipient"]])

    def test_remote_target_is_forwarded_with_the_original_sender(self) -> None:
        """A remote target goes to the queue under the sender's own return path."""
        send_mail(self.client, "x@remote.example", ["everyone@example.org"], message(STRANGER))

        self.assertEqual([ALICE, BOB], [m for m, _ in self.harness.store.delivered])
        [(sender, recipients, _)] = self.harness.spool.queued
        self.assertEqual(("x@remote.example", ["grandma@remote.example"]), (sender, recipients))
        [event] = self.harness.mail_events("queued")
        self.assertEqual(QUEUE_ID, event["queue_id"])

    def test_forgery_of_our_domain_is_not_forwarded(self) -> None:
        """From: one of our users, from outside, to a forwarding alias: 550 5.7.1, nothing kept.

        The relayer would DKIM-sign the forwarded copy as ours.
        """
        for header in (ALICE, f"{STRANGER}, Alice <ALICE@EXAMPLE.ORG>", f"{ALICE} <>", ""):
            codes = send_mail(self.client, STRANGER, ["everyone@example.org"], message(header))

            self.assertEqual("550 5.7.1", codes[-1])
        self.assertEqual([], self.harness.store.delivered)
        self.assertEqual([], self.harness.spool.queued)
        self.assertEqual(4, len(self.harness.mail_events("rejected")))

    def test_our_domain_to_local_users_only_is_delivered(self) -> None:
        """Without a forward there is nothing to sign: such mail reaches local users as before."""
        codes = send_mail(self.client, STRANGER, ["family@example.org"], message(ALICE))

        self.assertEqual("250 2.0.0", codes[-1])

    def test_bounce_to_a_forwarding_alias(self) -> None:
        """A bounce (MAIL FROM:<>) is forwarded with the null sender, so it cannot loop."""
        send_mail(self.client, "", ["everyone@example.org"], message(STRANGER))

        [(sender, _, _)] = self.harness.spool.queued
        self.assertEqual("", sender)

    def test_alias_with_no_existing_target(self) -> None:
        """550 5.1.1 at RCPT when the alias leads nowhere."""
        self.client.send("MAIL FROM:<x@remote.example>\r\n")

        self.assertEqual(["550 5.1.1"], self.client.codes("RCPT TO:<ghosts@example.org>\r\n"))

    def test_postmaster_alias(self) -> None:
        """postmaster@ our domain may be an alias, as RFC 5321 4.5.1 needs it to exist."""
        harness = with_aliases(self, "smtp", "postmaster@example.org: alice@example.org\n")
        client = harness.connect()
        client.send("EHLO c\r\n")

        codes = send_mail(client, "x@remote.example", ["postmaster"], message(STRANGER))

        self.assertEqual("250 2.0.0", codes[-1])
        self.assertEqual([ALICE], [m for m, _ in harness.store.delivered])

    def test_submission_to_an_alias(self) -> None:
        """Our own users reach aliases the same way, through submission."""
        harness = with_aliases(self, "submission")
        client = logged_in(harness, BOB)

        send_mail(client, BOB, ["mum@example.org"], message(BOB))

        self.assertEqual([ALICE], [m for m, _ in harness.store.delivered])


class BrokenAliasFileTests(unittest.TestCase):
    """The aliases file cannot be read: our fault, so never a permanent refusal."""

    def test_unreadable_at_start_up(self) -> None:
        """A factory over an unreadable aliases file stops start-up with one line."""
        harness = make_harness("smtp")
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        config = dataclasses.replace(harness.factory.ctx.config, aliases=folder)
        ctx = dataclasses.replace(harness.factory.ctx, config=config)

        error = self.assertRaises(ConfigError, SMTPFactory, ctx, "smtp")

        self.assertIn(f"key 'aliases': {folder}: cannot read", str(error))

    def test_unreadable_while_running(self) -> None:
        """RCPT gets 451 4.3.0 and the failure is logged; the session goes on."""
        harness = with_aliases(self, "smtp")
        client = harness.connect()
        client.send("EHLO c\r\nMAIL FROM:<x@remote.example>\r\n")
        table = harness.factory.policy.aliases
        assert isinstance(table, AliasTable)
        os.unlink(table.path)
        os.mkdir(table.path)

        self.assertEqual(["451 4.3.0"], client.codes("RCPT TO:<family@example.org>\r\n"))
        self.assertEqual(1, len(self.flushLoggedErrors(IsADirectoryError)))
        self.assertEqual(["250 2.0.0"], client.codes("NOOP\r\n"))


class HeaderParsingTests(unittest.TestCase):
    """``mailsuite.smtp.headers`` alone."""

    def test_header_section_ends_at_the_first_empty_line(self) -> None:
        """Everything after the first empty line is body."""
        data = b"A: 1\r\nB: 2\r\n\r\nFrom: x@y\r\n\r\n"

        self.assertEqual(b"A: 1\r\nB: 2\r\n", headers.header_section(data))

    def test_no_header_and_no_body(self) -> None:
        """Starting with the empty line: no header; without an empty line: all header."""
        self.assertEqual(b"", headers.header_section(b"\r\nFrom: x@y\r\n"))
        self.assertEqual(b"From: x@y\r\n", headers.header_section(b"From: x@y\r\n"))

    def test_limit(self) -> None:
        """A header section longer than the limit raises; one at the limit is read."""
        header = b"X: " + b"x" * 95 + b"\r\n"  # 100 octets with its CRLF

        self.assertEqual(header, headers.header_section(header + b"\r\nbody", limit=100))
        self.assertRaises(HeaderTooLong, headers.header_section, header + b"\r\nbody", limit=99)
        self.assertRaises(HeaderTooLong, headers.header_section, header * 2, limit=150)

    def test_field_values_unfolded(self) -> None:
        """Folded values come back joined, trimmed; other fields are left out."""
        header = b"from: A\r\n\t<a@x>\r\nTo: b@y\r\n continued\r\nFrom:c@z\r\n"

        self.assertEqual(["A\t<a@x>", "c@z"], headers.field_values(header, "From"))

    def test_eight_bit_header_does_not_crash(self) -> None:
        """Raw UTF-8 (RFC 6532) and stray bytes in a header are read, not fatal."""
        header = "From: Jürgen <jürgen@example.org>\r\n".encode() + b"X: \xff\r\n"

        self.assertEqual(["jürgen@example.org"], headers.from_addresses(header))

    def test_unreadable(self) -> None:
        """A From: that names nobody we can check raises ``UnreadableFrom``."""
        for value in (b"", b"   ", b"group:;", b"a@x <>"):
            self.assertRaises(UnreadableFrom, headers.from_addresses, b"From: " + value + b"\r\n")


class SenderPolicyTests(unittest.TestCase):
    """``SenderPolicy`` without a session."""

    def test_envelope_and_header(self) -> None:
        """Both checks refuse with their own reply; a plain message passes."""
        decider = SenderPolicy()

        decider.envelope(ALICE, ALICE)
        decider.message(ALICE, ALICE, message(ALICE))
        envelope = self.assertRaises(SMTPReplyError, decider.envelope, ALICE, BOB)
        header = self.assertRaises(SMTPReplyError, decider.message, ALICE, ALICE, message(BOB))

        self.assertEqual("Sender address not owned by you", envelope.reply.text)
        self.assertIn("From: header", header.reply.text)
