"""The SMTP session over a StringTransport: sequence, limits, DATA, delivery.

The harness at the top (fakes for the store, spool and checker, and a
``Client`` that drives one session) is shared with ``test_smtp_auth``.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from twisted.cred import error as cred_error
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.trial import unittest

from mailsuite.config import AuthConfig, Limits, default_config
from mailsuite.context import ServiceContext
from mailsuite.maillog import MailLog
from mailsuite.smtp import SMTPFactory
from mailsuite.smtp.server import MAX_RECIPIENTS
from mailsuite.store.errors import OverQuota, TemporaryFailure

# -- the harness ---------------------------------------------------------------

TLS_OPTIONS = object()
LIMIT = 2000
PEER = IPv4Address("TCP", "192.0.2.7", 40000)
QUEUE_ID = "20261204120000.0badc0de"


class FakeStore:
    """Records deliveries; can fail, raise, or hold them until told."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, bytes]] = []
        self.failure: Exception | None = None
        self.hold = False
        self.held: list[defer.Deferred[str]] = []

    def deliver(self, address: str, data: bytes) -> defer.Deferred[str]:
        if self.failure is not None:
            return defer.fail(self.failure)
        self.delivered.append((address, data))
        if self.hold:
            d: defer.Deferred[str] = defer.Deferred()
            self.held.append(d)
            return d
        return defer.succeed(f"key{len(self.delivered)}")


class FakeSpool:
    """Records what was queued; can fail."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, list[str], bytes]] = []
        self.failure: Exception | None = None

    def enqueue(self, sender: str, recipients: list[str], data: bytes) -> defer.Deferred[str]:
        if self.failure is not None:
            return defer.fail(self.failure)
        self.queued.append((sender, recipients, data))
        return defer.succeed(QUEUE_ID)


class FakeUsers:
    """``UserDatabase.canonical``: case-insensitive lookup of stored spellings."""

    def __init__(self, *addresses: str) -> None:
        self.by_key = {a.lower(): a for a in addresses}

    def canonical(self, address: str) -> str | None:
        return self.by_key.get(address.lower())

    def addresses(self) -> list[str]:
        return list(self.by_key.values())


class FakeChecker:
    """Like ``PasswordChecker``: the canonical address, or a refusal after a delay."""

    def __init__(self, clock: task.Clock, passwords: dict[str, str], delay: float = 2.0) -> None:
        self.clock = clock
        self.passwords = passwords
        self.delay = delay
        self.seen: list[Any] = []
        self.broken = False
        self.db = FakeUsers(*passwords)

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[str]:
        self.seen.append(credentials)
        if self.broken:
            return defer.fail(OSError("password file unreadable"))
        user = credentials.username.decode()
        if self.passwords.get(user) == credentials.password.decode():
            return defer.succeed(user)
        return task.deferLater(self.clock, self.delay, _refuse)


def _refuse() -> str:
    raise cred_error.UnauthorizedLogin()


class RecordingTransport(StringTransportWithDisconnection):
    """A loopback-less transport that records STARTTLS."""

    def __init__(self, peer: IPv4Address = PEER) -> None:
        super().__init__(peerAddress=peer)
        self.tls_started: list[Any] = []

    def startTLS(self, context: Any) -> None:
        self.tls_started.append(context)


@dataclasses.dataclass
class Harness:
    """One factory with its fakes and the mail-log events it produced."""

    clock: task.Clock
    store: FakeStore
    spool: FakeSpool
    checker: FakeChecker
    events: list[dict[str, Any]]
    factory: SMTPFactory

    def connect(self, peer: IPv4Address = PEER) -> Client:
        return Client(self.factory, peer)

    def mail_events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("mail_event") == name]


def make_harness(
    kind: str = "smtp",
    tls: bool = True,
    users: tuple[str, ...] = ("alice@example.org",),
    plaintext_on_loopback: bool = False,
) -> Harness:
    clock = task.Clock()
    limits = Limits(message_size=LIMIT, bad_commands=5, idle_timeout=300)
    config = dataclasses.replace(
        default_config("/nonexistent"),
        hostname="mx.example.org",
        domains=("example.org",),
        limits=limits,
        auth=AuthConfig(failure_delay=2.0, plaintext_on_loopback=plaintext_on_loopback),
    )
    events: list[dict[str, Any]] = []
    store, spool = FakeStore(), FakeSpool()
    checker = FakeChecker(clock, {u: "secret" for u in users})
    ctx = ServiceContext(
        config=config,
        reactor=clock,
        store=store,  # type: ignore[arg-type]
        checker=checker,
        tls=TLS_OPTIONS if tls else None,
        spool=spool,
        maillog=MailLog(Logger(observer=events.append)),
    )
    return Harness(clock, store, spool, checker, events, SMTPFactory(ctx, kind))


class Client:
    """Drives one session: ``send`` feeds bytes and returns what came back."""

    def __init__(self, factory: SMTPFactory, peer: IPv4Address = PEER) -> None:
        self.transport = RecordingTransport(peer)
        self.session = factory.buildProtocol(peer)
        self.transport.protocol = self.session
        self.session.makeConnection(self.transport)
        self.greeting = self.take()

    def take(self) -> str:
        value = self.transport.value().decode("utf-8")
        self.transport.clear()
        return value

    def send(self, data: bytes | str) -> str:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.session.dataReceived(data)
        return self.take()

    def codes(self, data: bytes | str) -> list[str]:
        """The final line's "code status" of each reply to ``data``."""
        return reply_codes(self.send(data))

    @property
    def closed(self) -> bool:
        return not self.transport.connected

    def start_tls(self) -> None:
        """STARTTLS, as a client that waits for 220 before its handshake."""
        assert self.codes("STARTTLS\r\n") == ["220 2.0.0"]

    def login(self, user: str = "alice@example.org", password: str = "secret") -> None:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        assert self.codes(f"AUTH PLAIN {token}\r\n") == ["235 2.7.0"], "login failed"


def reply_codes(output: str) -> list[str]:
    codes = []
    for line in output.split("\r\n"):
        if len(line) >= 4 and line[3] == " ":
            parts = line.split(" ", 2)
            status = parts[1] if len(parts) > 1 and parts[1][:1] in "245" else ""
            codes.append(f"{parts[0]} {status}".strip())
    return codes


MESSAGE = b"From: <x@remote.example>\r\nSubject: hi\r\n\r\nHello.\r\n"


def send_mail(
    client: Client, sender: str, recipients: list[str], body: bytes = MESSAGE
) -> list[str]:
    """A whole transaction, one command at a time; the codes of every reply."""
    codes = client.codes(f"MAIL FROM:<{sender}>\r\n")
    for recipient in recipients:
        codes += client.codes(f"RCPT TO:<{recipient}>\r\n")
    codes += client.codes("DATA\r\n")
    if codes[-1] == "354":
        codes += client.codes(body + b".\r\n")
    return codes


def split_received(data: bytes) -> tuple[bytes, bytes]:
    """The Received header (with its folded lines) and the message after it."""
    assert data.startswith(b"Received: ")
    end = data.index(b"\r\n")
    while data[end + 2 : end + 3] == b"\t":
        end = data.index(b"\r\n", end + 2)
    return data[: end + 2], data[end + 2 :]


# -- the tests -----------------------------------------------------------------


class GreetingTests(unittest.TestCase):
    def test_greeting(self) -> None:
        """220 with our host name, no enhanced code (RFC 2034 3)."""
        client = make_harness().connect()

        self.assertEqual("220 mx.example.org ESMTP mailsuite\r\n", client.greeting)

    def test_mx_ehlo(self) -> None:
        """MX offers the extensions and STARTTLS, never AUTH."""
        client = make_harness().connect()

        lines = client.send("EHLO client.example\r\n").split("\r\n")

        self.assertEqual("250-mx.example.org Hello client.example [192.0.2.7]", lines[0])
        self.assertEqual(
            [
                "250-PIPELINING",
                f"250-SIZE {LIMIT}",
                "250-8BITMIME",
                "250-SMTPUTF8",
                "250-ENHANCEDSTATUSCODES",
                "250 STARTTLS",
                "",
            ],
            lines[1:],
        )

    def test_ehlo_is_one_write(self) -> None:
        """The multi-line EHLO reply leaves in one write (Nagle stays on in Twisted)."""
        client = make_harness().connect()
        writes: list[bytes] = []
        original = client.transport.write

        def record(data: bytes) -> None:
            writes.append(data)
            original(data)

        client.transport.write = record  # type: ignore[method-assign]
        client.send("EHLO client.example\r\n")

        self.assertEqual(1, len(writes))

    def test_no_starttls_without_tls_options(self) -> None:
        """Without a certificate STARTTLS is neither offered nor accepted."""
        client = make_harness(tls=False).connect()

        self.assertNotIn("STARTTLS", client.send("EHLO c\r\n"))
        self.assertEqual(["454 4.7.0"], client.codes("STARTTLS\r\n"))

    def test_helo(self) -> None:
        """HELO works, without extensions: MAIL parameters are then refused."""
        client = make_harness().connect()

        self.assertEqual("250 mx.example.org\r\n", client.send("HELO client.example\r\n"))
        self.assertEqual(["555 5.5.4"], client.codes("MAIL FROM:<a@b.example> SIZE=10\r\n"))
        self.assertEqual(["250 2.1.0"], client.codes("MAIL FROM:<a@b.example>\r\n"))

    def test_helo_needs_a_name(self) -> None:
        """EHLO without a name is a syntax error."""
        client = make_harness().connect()

        self.assertEqual(["501 5.5.4"], client.codes("EHLO\r\n"))

    def test_simple_commands(self) -> None:
        """NOOP, RSET, VRFY (252), HELP, EXPN (502), unknown (500), QUIT (221, closed)."""
        client = make_harness().connect()

        self.assertEqual(["250 2.0.0"], client.codes("NOOP\r\n"))
        self.assertEqual(["250 2.0.0"], client.codes("RSET\r\n"))
        self.assertEqual(["252 2.5.0"], client.codes("VRFY alice\r\n"))
        self.assertEqual(["214 2.0.0"], client.codes("HELP\r\n"))
        self.assertEqual(["502 5.5.1"], client.codes("EXPN list\r\n"))
        self.assertEqual(["500 5.5.2"], client.codes("FROB\r\n"))
        self.assertEqual(["221 2.0.0"], client.codes("QUIT\r\n"))
        self.assertTrue(client.closed)

    def test_http_request_closes_at_once(self) -> None:
        """A browser tricked into port 25 is cut off before it can say more."""
        client = make_harness().connect()

        self.assertEqual("", client.send("POST / HTTP/1.1\r\nHost: x\r\n"))
        self.assertTrue(client.closed)


class SequenceTests(unittest.TestCase):
    def test_mail_needs_ehlo(self) -> None:
        """RFC 5321 4.1.4: EHLO or HELO first, else 503 5.5.1."""
        client = make_harness().connect()

        self.assertEqual(["503 5.5.1"], client.codes("MAIL FROM:<a@b.example>\r\n"))

    def test_rcpt_and_data_need_mail(self) -> None:
        """RCPT before MAIL, DATA before RCPT: 503 5.5.1."""
        client = make_harness().connect()
        client.send("EHLO c\r\n")

        self.assertEqual(["503 5.5.1"], client.codes("RCPT TO:<alice@example.org>\r\n"))
        self.assertEqual(["503 5.5.1"], client.codes("DATA\r\n"))
        client.send("MAIL FROM:<a@b.example>\r\n")
        self.assertEqual(["503 5.5.1"], client.codes("DATA\r\n"))
        self.assertEqual(["503 5.5.1"], client.codes("MAIL FROM:<a@b.example>\r\n"))

    def test_data_after_every_recipient_was_refused(self) -> None:
        """RFC 2920 3.1: DATA with no valid recipient is 554, and no 354."""
        client = make_harness().connect()
        client.send("EHLO c\r\n")

        codes = client.codes("MAIL FROM:<a@b.example>\r\nRCPT TO:<nobody@example.org>\r\nDATA\r\n")

        self.assertEqual(["250 2.1.0", "550 5.1.1", "554 5.5.1"], codes)

    def test_rset_and_ehlo_end_the_transaction(self) -> None:
        """After RSET or EHLO a new MAIL is needed."""
        client = make_harness().connect()
        client.send("EHLO c\r\nMAIL FROM:<a@b.example>\r\n")

        self.assertEqual(
            ["250 2.0.0", "503 5.5.1"], client.codes("RSET\r\nRCPT TO:<alice@example.org>\r\n")
        )
        client.send("MAIL FROM:<a@b.example>\r\n")
        client.send("EHLO c\r\n")
        self.assertEqual(["503 5.5.1"], client.codes("RCPT TO:<alice@example.org>\r\n"))

    def test_pipelined_commands_answered_in_order(self) -> None:
        """RFC 2920: a whole transaction in one write gets every reply, in order."""
        harness = make_harness()
        client = harness.connect()

        codes = client.codes(
            b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.org>\r\n"
            b"RCPT TO:<x@elsewhere.example>\r\nDATA\r\n" + MESSAGE + b".\r\nQUIT\r\n"
        )

        self.assertEqual(
            ["250", "250 2.1.0", "250 2.1.5", "550 5.7.1", "354", "250 2.0.0", "221 2.0.0"],
            codes,
        )
        self.assertEqual(1, len(harness.store.delivered))


class MXTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = make_harness()
        self.client = self.harness.connect()
        self.client.send("EHLO client.example\r\n")

    def test_stranger_to_local_user(self) -> None:
        """Mail for our user is stored with a Received header, the text unchanged."""
        codes = send_mail(self.client, "x@remote.example", ["ALICE@example.org"])

        self.assertEqual(["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"], codes)
        [(mailbox, data)] = self.harness.store.delivered
        self.assertEqual("alice@example.org", mailbox)
        received, message = split_received(data)
        self.assertEqual(MESSAGE, message)
        self.assertIn(b"from client.example ([192.0.2.7])", received)
        self.assertIn(b"by mx.example.org (mailsuite) with ESMTP id ", received)
        self.assertIn(b"for <ALICE@example.org>;", received)
        [event] = self.harness.mail_events("received")
        self.assertEqual(
            ("x@remote.example", "alice@example.org", "key1"),
            (event["sender"], event["recipient"], event["key"]),
        )

    def test_queued_reply_names_the_received_id(self) -> None:
        """The 250 after DATA gives the id the Received header carries."""
        self.client.send("MAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")

        reply = self.client.send(MESSAGE + b".\r\n")

        transaction_id = reply.split()[-1]
        self.assertIn(f"id {transaction_id}".encode(), self.harness.store.delivered[0][1])

    def test_unknown_user(self) -> None:
        """550 5.1.1 and a "rejected" mail-log event."""
        self.client.send("MAIL FROM:<x@remote.example>\r\n")

        self.assertEqual(["550 5.1.1"], self.client.codes("RCPT TO:<bob@example.org>\r\n"))
        [event] = self.harness.mail_events("rejected")
        self.assertEqual(("RCPT", "bob@example.org"), (event["stage"], event["recipient"]))

    def test_no_relay(self) -> None:
        """A remote recipient on the MX port is 550 5.7.1; nothing is queued."""
        codes = send_mail(self.client, "x@remote.example", ["victim@elsewhere.example"])

        self.assertEqual(["250 2.1.0", "550 5.7.1", "554 5.5.1"], codes)
        self.assertEqual([], self.harness.spool.queued)

    def test_mx_refuses_auth(self) -> None:
        """AUTH is not offered on the MX port, even after STARTTLS."""
        self.client.start_tls()
        self.client.send("EHLO c\r\n")

        self.assertEqual(["502 5.5.1"], self.client.codes("AUTH PLAIN AGFAYgBj\r\n"))

    def test_duplicate_recipients_get_one_copy(self) -> None:
        """The same user twice in one transaction gets the message once."""
        send_mail(self.client, "x@remote.example", ["alice@example.org", "Alice@Example.org"])

        self.assertEqual(1, len(self.harness.store.delivered))

    def test_too_many_recipients(self) -> None:
        """RFC 5321 4.5.3.1.10: past the limit 452 4.5.3; those accepted still get it."""
        self.client.send("MAIL FROM:<x@remote.example>\r\n")
        for _ in range(MAX_RECIPIENTS):
            self.client.send("RCPT TO:<alice@example.org>\r\n")

        self.assertEqual(["452 4.5.3"], self.client.codes("RCPT TO:<alice@example.org>\r\n"))
        self.assertEqual(["354"], self.client.codes("DATA\r\n"))
        self.assertEqual(["250 2.0.0"], self.client.codes(MESSAGE + b".\r\n"))

    def test_utf8_address_needs_smtputf8(self) -> None:
        """553 5.6.7 without SMTPUTF8; with it, accepted and named UTF8SMTP."""
        self.assertEqual(["553 5.6.7"], self.client.codes("MAIL FROM:<jö@remote.example>\r\n"))
        self.client.send("MAIL FROM:<x@remote.example>\r\n")
        self.assertEqual(["553 5.6.7"], self.client.codes("RCPT TO:<jö@example.org>\r\n"))
        self.client.send("RSET\r\n")

        codes = self.client.codes("MAIL FROM:<jö@remote.example> SMTPUTF8\r\n")
        codes += self.client.codes("RCPT TO:<alice@example.org>\r\nDATA\r\n")
        codes += self.client.codes(MESSAGE + b".\r\n")

        self.assertEqual(["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"], codes)
        self.assertIn(b"with UTF8SMTP id", self.harness.store.delivered[0][1])

    def test_dots_and_eight_bit_text_arrive_unchanged(self) -> None:
        """Dot-stuffed lines are unstuffed; 8-bit octets are stored as sent."""
        text = "Subject: Grüße\r\n\r\n.\r\n..leading\r\nñ\xff\r\n".encode("latin-1")
        stuffed = text.replace(b"\r\n.", b"\r\n..")

        send_mail(self.client, "x@remote.example", ["alice@example.org"], stuffed)

        self.assertEqual(text, split_received(self.harness.store.delivered[0][1])[1])

    def test_smuggled_message_stays_inside(self) -> None:
        """LF.LF inside DATA does not end it: one message, one 250, no second MAIL."""
        smuggled = (
            b"Subject: one\r\n\r\nhi\n.\nMAIL FROM:<ceo@example.org>\r\n"
            b"RCPT TO:<alice@example.org>\r\nDATA\r\nSubject: forged\r\n"
        )
        codes = send_mail(self.client, "x@remote.example", ["alice@example.org"], smuggled)

        self.assertEqual(["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"], codes)
        [(_, data)] = self.harness.store.delivered
        # Like Postfix's "normalize": the bare LF is a line end, so "." is an
        # unstuffed empty line; the "second message" is text of the first.
        self.assertIn(b"hi\r\n\r\nMAIL FROM:<ceo@example.org>\r\n", data)

    def test_bare_lf_before_the_dot_does_not_end(self) -> None:
        """LF.CRLF is not the end marker: the client is still in DATA."""
        codes = send_mail(self.client, "x@remote.example", ["alice@example.org"], b"A: b\n")

        self.assertEqual(["250 2.1.0", "250 2.1.5", "354"], codes)
        self.assertEqual(["250 2.0.0"], self.client.codes(b"\r\n.\r\n"))
        # The "." after the bare LF is a dot-led line once normalised: unstuffed.
        self.assertEqual(
            b"A: b\r\n\r\n\r\n", split_received(self.harness.store.delivered[0][1])[1]
        )

    def test_bare_lf_message_is_normalised(self) -> None:
        """A message with bare LF line ends is stored with CRLF ones."""
        send_mail(self.client, "x@remote.example", ["alice@example.org"], b"A: b\n\nline\r\n")

        self.assertEqual(
            b"A: b\r\n\r\nline\r\n", split_received(self.harness.store.delivered[0][1])[1]
        )


class SizeTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = make_harness()
        self.client = self.harness.connect()
        self.client.send("EHLO c\r\n")

    def test_declared_size_over_the_limit(self) -> None:
        """RFC 1870: MAIL FROM with SIZE= over the limit is 552 5.3.4."""
        codes = self.client.codes(f"MAIL FROM:<x@remote.example> SIZE={LIMIT + 1}\r\n")

        self.assertEqual(["552 5.3.4"], codes)
        self.assertEqual(1, len(self.harness.mail_events("rejected")))

    def test_actual_size_over_the_limit(self) -> None:
        """The text is read to its end and dropped; 552, and the session goes on."""
        self.client.send("MAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.org>\r\n")
        self.client.send("DATA\r\n")

        for _ in range(10):
            self.assertEqual("", self.client.send(b"y" * 998 + b"\r\n"))
        codes = self.client.codes(b".\r\nNOOP\r\n")

        self.assertEqual(["552 5.3.4", "250 2.0.0"], codes)
        self.assertEqual([], self.harness.store.delivered)


class LimitTests(unittest.TestCase):
    def test_overlong_command_line(self) -> None:
        """500 5.5.6 for a command over 2048 octets, and the session goes on."""
        client = make_harness().connect()

        self.assertEqual(["500 5.5.6"], client.codes(b"NOOP " + b"x" * 3000 + b"\r\n"))
        self.assertEqual(["500 5.5.6"], client.codes(b"NOOP " + b"x" * 20000 + b"\r\n"))
        self.assertEqual(["250 2.0.0"], client.codes("NOOP\r\n"))
        self.assertFalse(client.closed)

    def test_overlong_line_without_end_is_not_buffered(self) -> None:
        """A client sending an endless line gets one 500; we hold a bounded buffer."""
        client = make_harness().connect()

        replies = [client.send(b"x" * 8000) for _ in range(10)]

        self.assertEqual(1, sum(r.count("500 5.5.6") for r in replies))
        self.assertLess(len(client.session._buffer), 20000)
        self.assertEqual(["250 2.0.0"], client.codes(b"\r\nNOOP\r\n"))

    def test_too_many_bad_commands(self) -> None:
        """Past limits.bad_commands: 421 4.7.0 and the connection is closed."""
        client = make_harness().connect()

        output = client.send(b"BAD\r\n" * 6)

        self.assertEqual(["500 5.5.2"] * 6 + ["421 4.7.0"], reply_codes(output))
        self.assertTrue(client.closed)

    def test_refused_recipients_count_as_errors(self) -> None:
        """Guessing addresses (a dictionary attack) ends the session like bad commands do."""
        client = make_harness().connect()
        client.send("EHLO c\r\nMAIL FROM:<x@remote.example>\r\n")

        output = client.send("".join(f"RCPT TO:<guess{i}@example.org>\r\n" for i in range(6)))

        self.assertEqual(["550 5.1.1"] * 6 + ["421 4.7.0"], reply_codes(output))
        self.assertTrue(client.closed)

    def test_unexpected_error_in_a_command(self) -> None:
        """A bug while handling a command is logged and answered 451 4.3.0; the session lives."""
        harness = make_harness()
        client = harness.connect()
        client.send("EHLO c\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.org>\r\n")
        client.send("DATA\r\n")

        def broken(*args: object) -> None:
            raise RuntimeError("bug")

        harness.factory.intake.accept = broken  # type: ignore[method-assign, assignment]

        self.assertEqual(["451 4.3.0"], client.codes(MESSAGE + b".\r\n"))
        self.assertEqual(["250 2.0.0"], client.codes("NOOP\r\n"))
        self.assertEqual(1, len(self.flushLoggedErrors(RuntimeError)))

    def test_idle_timeout(self) -> None:
        """No input for limits.idle_timeout: 421 4.4.2 and closed."""
        harness = make_harness()
        client = harness.connect()
        client.send("EHLO c\r\n")

        harness.clock.advance(299)
        self.assertFalse(client.closed)
        harness.clock.advance(2)

        self.assertEqual(["421 4.4.2"], reply_codes(client.take()))
        self.assertTrue(client.closed)

    def test_idle_timeout_in_data(self) -> None:
        """A client that stalls mid-DATA is timed out too, and nothing is stored."""
        harness = make_harness()
        client = harness.connect()
        client.send("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\npart")

        harness.clock.advance(301)

        self.assertTrue(client.closed)
        self.assertEqual([], harness.store.delivered)

    def test_connection_lost_mid_data(self) -> None:
        """A client that vanishes before the end marker: nothing delivered, no error."""
        harness = make_harness()
        client = harness.connect()
        client.send("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
        client.send(MESSAGE)

        client.transport.loseConnection()

        self.assertEqual([], harness.store.delivered)
        self.assertEqual([], self.flushLoggedErrors())


class StartTLSTests(unittest.TestCase):
    def test_pipelined_command_after_starttls_is_dropped(self) -> None:
        """Bytes sent in the same packet as STARTTLS are never executed (RFC 3207 4.2)."""
        harness = make_harness()
        client = harness.connect()
        client.send("EHLO c\r\n")

        output = client.send("STARTTLS\r\nMAIL FROM:<a@b.example>\r\n")

        self.assertEqual("220 2.0.0 Ready to start TLS\r\n", output)
        self.assertEqual([TLS_OPTIONS], client.transport.tls_started)

    def test_session_resets_after_starttls(self) -> None:
        """After TLS, the client must EHLO again; STARTTLS is no longer offered."""
        client = make_harness().connect()
        client.send("EHLO c\r\n")
        client.start_tls()

        self.assertEqual(["503 5.5.1"], client.codes("MAIL FROM:<a@b.example>\r\n"))
        ehlo = client.send("EHLO c\r\n")
        self.assertNotIn("STARTTLS", ehlo)
        self.assertEqual(["503 5.5.1"], client.codes("STARTTLS\r\n"))

    def test_received_says_esmtps(self) -> None:
        """Mail over TLS is marked ESMTPS (RFC 3848)."""
        harness = make_harness()
        client = harness.connect()
        client.start_tls()
        client.send("EHLO c\r\n")

        send_mail(client, "x@remote.example", ["alice@example.org"])

        self.assertIn(b"with ESMTPS id", harness.store.delivered[0][1])

    def test_starttls_takes_no_argument(self) -> None:
        """STARTTLS with an argument is 501 and starts nothing."""
        client = make_harness().connect()

        self.assertEqual(["501 5.5.4"], client.codes("STARTTLS now\r\n"))
        self.assertEqual([], client.transport.tls_started)


class DurabilityTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = make_harness()
        self.client = self.harness.connect()
        self.client.send("EHLO c\r\nMAIL FROM:<x@remote.example>\r\n")
        self.client.send("RCPT TO:<alice@example.org>\r\nDATA\r\n")

    def test_250_waits_for_the_store(self) -> None:
        """No 250 until the delivery fired; commands pipelined behind it wait too."""
        self.harness.store.hold = True

        self.assertEqual("", self.client.send(MESSAGE + b".\r\nNOOP\r\n"))
        self.harness.store.held[0].callback("key")

        self.assertEqual(["250 2.0.0", "250 2.0.0"], reply_codes(self.client.take()))

    def test_store_failure_is_temporary(self) -> None:
        """A disk failure is 451 4.3.0, never 250, never 5xx; the session goes on."""
        self.harness.store.failure = TemporaryFailure("disk full")

        self.assertEqual(["451 4.3.0"], self.client.codes(MESSAGE + b".\r\n"))
        self.assertEqual(["250 2.0.0"], self.client.codes("NOOP\r\n"))
        self.assertEqual([], self.harness.mail_events("received"))
        self.flushLoggedErrors(TemporaryFailure)

    def test_over_quota_is_temporary(self) -> None:
        """OverQuota is 452 4.2.2, so a shared message is not bounced."""
        self.harness.store.failure = OverQuota("full")

        self.assertEqual(["452 4.2.2"], self.client.codes(MESSAGE + b".\r\n"))
        self.flushLoggedErrors(OverQuota)

    def test_unexpected_error_is_logged_and_temporary(self) -> None:
        """A bug in delivery is logged and answered 451 4.3.0, not a traceback to the client."""

        def broken(address: str, data: bytes) -> None:
            raise RuntimeError("bug")

        self.harness.store.deliver = broken  # type: ignore[method-assign, assignment]

        self.assertEqual(["451 4.3.0"], self.client.codes(MESSAGE + b".\r\n"))
        self.assertEqual(1, len(self.flushLoggedErrors(RuntimeError)))

    def test_lost_client_during_delivery(self) -> None:
        """A client gone before the store fired: the message still lands, quietly."""
        self.harness.store.hold = True
        self.client.send(MESSAGE + b".\r\n")
        self.client.transport.loseConnection()

        self.harness.store.held[0].callback("key")

        self.assertEqual(1, len(self.harness.mail_events("received")))
        self.assertEqual([], self.flushLoggedErrors())


class LoggingTests(unittest.TestCase):
    def test_nothing_above_info_in_a_normal_session(self) -> None:
        """A clean transaction logs no warnings or errors."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        harness = make_harness()
        client = harness.connect()
        client.send("EHLO c\r\n")

        send_mail(client, "x@remote.example", ["alice@example.org"])

        self.assertEqual([], [e for e in events if e["log_level"] > LogLevel.info])
