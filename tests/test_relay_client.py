"""Our ESMTP client over a StringTransport: commands, replies, TLS, AUTH, DATA."""

from __future__ import annotations

import base64
import io
import random
from typing import Any

from twisted.internet import defer, task
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from mailsuite.queue.client import (
    DataEncoder,
    Envelope,
    HostFailure,
    Login,
    ReplyReader,
    Security,
    Session,
    Transaction,
    TransactionResult,
    parse_extensions,
)

MESSAGE = b"Subject: hi\r\n\r\nHello.\r\n"


class TLSTransport(StringTransport):
    """Records startTLS instead of doing a handshake."""

    def __init__(self) -> None:
        super().__init__()
        self.tls_creators: list[Any] = []
        self.aborted = False

    def startTLS(self, creator: Any) -> None:
        self.tls_creators.append(creator)

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Conversation:
    """One transaction driven by hand: ``server()`` answers, ``client()`` reads."""

    def __init__(
        self,
        recipients: list[str] | None = None,
        message: bytes = MESSAGE,
        security: Security | None = None,
        login: Login | None = None,
        sender: str = "alice@example.com",
        hook: Any = None,
        keep_open: bool = False,
        session: Session | None = None,
    ) -> None:
        self.clock = task.Clock()
        self.transport = TLSTransport()
        self.reader = session.reader if session is not None else ReplyReader(self.clock)
        if session is not None:
            self.transport = session.reader.transport
        else:
            self.reader.makeConnection(self.transport)
        self.results: list[TransactionResult] = []
        envelope = Envelope(
            sender=sender,
            recipients=recipients or ["bob@remote.test"],
            open_message=lambda: io.BytesIO(message),
            size=len(message),
        )

        async def record(result: TransactionResult) -> None:
            self.results.append(result)
            if hook is not None:
                await hook

        self.transaction = Transaction(
            self.reader,
            host="mx.remote.test",
            helo_name="mail.example.com",
            envelope=envelope,
            security=security or Security(opportunistic=False),
            login=login,
            on_result=record,
            keep_open=keep_open,
            session=session,
        )
        self.done = defer.ensureDeferred(self.transaction.run())
        self.outcome: list[Any] = []
        self.done.addBoth(self.outcome.append)

    def server(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.reader.dataReceived(data)

    def client(self) -> bytes:
        sent = self.transport.value()
        self.transport.clear()
        return sent

    def pump(self) -> None:
        """Let the message producer write everything."""
        while self.transport.producer is not None:
            self.transport.producer.resumeProducing()

    def result(self) -> TransactionResult:
        assert self.outcome, "the transaction has not finished"
        value = self.outcome[0]
        if isinstance(value, Failure):
            value.raiseException()
        assert isinstance(value, TransactionResult)
        return value

    def failure(self) -> HostFailure:
        assert self.outcome, "the transaction has not finished"
        value = self.outcome[0]
        assert isinstance(value, Failure), f"expected a failure, got {value!r}"
        assert isinstance(value.value, HostFailure), value
        return value.value

    def greet(self, extensions: list[str] | None = None) -> None:
        """Greeting and EHLO with ``extensions``."""
        self.server("220 mx.remote.test ESMTP\r\n")
        assert self.client() == b"EHLO mail.example.com\r\n"
        lines = ["mx.remote.test", *(extensions or [])]
        text = "".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}\r\n"
        self.server(text)


class KeptConnectionTests(unittest.TestCase):
    """RFC 5321 3.3: a finished transaction can leave the session open for the next."""

    def finish(self, c: Conversation) -> None:
        c.greet(["PIPELINING"])
        c.client()
        c.server("250 ok\r\n250 ok\r\n354 go\r\n")
        c.pump()
        c.client()

    def test_kept_open_after_the_final_reply(self) -> None:
        """With keep_open the answered transaction sends no QUIT and hands back its session."""
        c = Conversation(keep_open=True)
        self.finish(c)
        c.server("250 2.0.0 ok\r\n")

        self.assertEqual(["bob@remote.test"], c.result().accepted)
        self.assertEqual(b"", c.client())
        assert c.transaction.kept is not None
        self.assertEqual({"PIPELINING": ""}, c.transaction.kept.extensions)

    def test_421_to_the_final_dot_is_not_kept(self) -> None:
        """A server closing the channel (421) gets QUIT; its connection is not reused."""
        c = Conversation(keep_open=True)
        self.finish(c)
        c.server("421 4.3.0 closing\r\n")

        self.assertEqual(b"QUIT\r\n", c.client())
        self.assertIsNone(c.transaction.kept)

    def test_reused_session_starts_at_mail(self) -> None:
        """On a kept session the next transaction sends no greeting wait and no EHLO."""
        first = Conversation(keep_open=True)
        self.finish(first)
        first.server("250 2.0.0 ok\r\n")
        assert first.transaction.kept is not None

        c = Conversation(["carol@remote.test"], session=first.transaction.kept)

        expected = b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<carol@remote.test>\r\nDATA\r\n"
        self.assertEqual(expected, c.client())

    def test_reply_while_idle_makes_the_session_unfit(self) -> None:
        """A "421 timeout" that arrived while idle would be read as MAIL's answer: unfit."""
        c = Conversation(keep_open=True)
        self.finish(c)
        c.server("250 2.0.0 ok\r\n")
        self.assertTrue(c.reader.idle_clean)

        c.server("421 4.4.2 idle too long\r\n")

        self.assertFalse(c.reader.idle_clean)


class PlainTransactionTests(unittest.TestCase):
    def test_one_by_one_without_pipelining(self) -> None:
        """Without PIPELINING each command waits for its reply; the dot ends DATA."""
        c = Conversation(["bob@remote.test", "carol@remote.test"])
        c.greet()

        self.assertEqual(b"MAIL FROM:<alice@example.com>\r\n", c.client())
        c.server("250 ok\r\n")
        self.assertEqual(b"RCPT TO:<bob@remote.test>\r\n", c.client())
        c.server("250 ok\r\n")
        self.assertEqual(b"RCPT TO:<carol@remote.test>\r\n", c.client())
        c.server("250 ok\r\n")
        self.assertEqual(b"DATA\r\n", c.client())
        c.server("354 go\r\n")
        c.pump()

        self.assertEqual(MESSAGE + b".\r\n", c.client())
        c.server("250 2.0.0 queued as X\r\n")
        self.assertEqual(b"QUIT\r\n", c.client())
        c.server("221 bye\r\n")

        result = c.result()
        self.assertEqual(["bob@remote.test", "carol@remote.test"], result.accepted)
        self.assertEqual("250 2.0.0 queued as X", result.replies["bob@remote.test"].text)
        self.assertFalse(result.tls)

    def test_pipelined_batch_with_mixed_recipient_replies(self) -> None:
        """RFC 2920: one write for MAIL, RCPTs and DATA; each recipient keeps its reply."""
        c = Conversation(["ok@remote.test", "later@remote.test", "never@remote.test"])
        c.greet(["PIPELINING", "SIZE 1000000"])

        expected = (
            f"MAIL FROM:<alice@example.com> SIZE={len(MESSAGE)}\r\n"
            "RCPT TO:<ok@remote.test>\r\n"
            "RCPT TO:<later@remote.test>\r\n"
            "RCPT TO:<never@remote.test>\r\n"
            "DATA\r\n"
        ).encode()
        self.assertEqual(expected, c.client())
        c.server("250 ok\r\n250 ok\r\n451 4.2.0 try later\r\n550 5.1.1 no such user\r\n354 go\r\n")
        c.pump()
        c.client()
        c.server("250 2.0.0 ok\r\n221 bye\r\n")

        result = c.result()
        self.assertEqual(["ok@remote.test"], result.accepted)
        self.assertEqual(451, result.replies["later@remote.test"].code)
        self.assertEqual("550 5.1.1 no such user", result.replies["never@remote.test"].text)

    def test_all_recipients_refused_sends_no_message(self) -> None:
        """No accepted recipient: DATA is not sent (one by one) and nothing is delivered."""
        c = Conversation(["never@remote.test"])
        c.greet()
        c.client()
        c.server("250 ok\r\n")
        c.client()
        c.server("550 5.1.1 unknown\r\n")

        self.assertEqual(b"QUIT\r\n", c.client())
        c.server("221 bye\r\n")
        self.assertEqual([], c.result().accepted)

    def test_pipelined_data_refused_after_all_recipients_refused(self) -> None:
        """With PIPELINING the DATA refusal is read and each RCPT reply kept."""
        c = Conversation(["never@remote.test"])
        c.greet(["PIPELINING"])
        c.client()
        c.server("250 ok\r\n550 5.1.1 unknown\r\n554 5.5.1 no valid recipients\r\n")

        self.assertEqual(b"QUIT\r\n", c.client())
        c.server("221 bye\r\n")
        self.assertEqual("550 5.1.1 unknown", c.result().replies["never@remote.test"].text)

    def test_result_is_reported_before_quit(self) -> None:
        """The relayer records the 250 durably before we do anything else, QUIT included."""
        hook: defer.Deferred[None] = defer.Deferred()
        c = Conversation(hook=hook)
        c.greet(["PIPELINING"])
        c.client()
        c.server("250 ok\r\n250 ok\r\n354 go\r\n")
        c.pump()
        c.client()
        c.server("250 2.0.0 ok\r\n")

        self.assertEqual(1, len(c.results))
        self.assertEqual(b"", c.client())

        hook.callback(None)
        self.assertEqual(b"QUIT\r\n", c.client())

    def test_mail_refused_for_good_fails_every_recipient(self) -> None:
        """550 to MAIL is an answer about this message, not this host: all recipients fail."""
        c = Conversation(["a@remote.test", "b@remote.test"])
        c.greet()
        c.client()
        c.server("550 5.7.1 sender rejected\r\n")
        c.server("221 bye\r\n")

        result = c.result()
        self.assertEqual({550}, {r.code for r in result.replies.values()})

    def test_temporary_mail_refusal_moves_to_the_next_host(self) -> None:
        """451 to MAIL (busy, greylisting) is a host failure, so the next MX is tried."""
        c = Conversation()
        c.greet()
        c.client()
        c.server("451 4.7.1 greylisted\r\n")

        failure = c.failure()
        self.assertTrue(failure.temporary)
        self.assertIn("greylisted", failure.reply)


class GreetingAndHelloTests(unittest.TestCase):
    def test_temporary_greeting_is_a_temporary_host_failure(self) -> None:
        """421 at the greeting: try the next host, keep the mail."""
        c = Conversation()
        c.server("421 too busy\r\n")

        self.assertTrue(c.failure().temporary)
        self.assertTrue(c.transport.aborted)

    def test_554_greeting_is_a_permanent_host_failure(self) -> None:
        """RFC 5321 3.1: 554 at the greeting means no service here."""
        c = Conversation()
        c.server("554 no mail here\r\n")

        self.assertFalse(c.failure().temporary)

    def test_helo_when_ehlo_is_unknown(self) -> None:
        """An old server refusing EHLO with 502 gets HELO (RFC 5321 3.2)."""
        c = Conversation()
        c.server("220 old\r\n")
        c.client()
        c.server("502 what\r\n")
        self.assertEqual(b"HELO mail.example.com\r\n", c.client())
        c.server("250 hello\r\n")

        self.assertEqual(b"MAIL FROM:<alice@example.com>\r\n", c.client())

    def test_temporary_ehlo_refusal_is_a_host_failure(self) -> None:
        """421 to EHLO is about the host: no HELO, the next host is tried."""
        c = Conversation()
        c.server("220 hi\r\n")
        c.client()
        c.server("421 4.3.2 shutting down\r\n")

        self.assertTrue(c.failure().temporary)


class TLSTests(unittest.TestCase):
    def opportunistic(self) -> Security:
        return Security(opportunistic=True, creator=lambda: "creator")

    def test_starttls_when_offered_then_ehlo_again(self) -> None:
        """STARTTLS is used whenever offered; EHLO is repeated inside TLS."""
        c = Conversation(security=self.opportunistic())
        c.greet(["STARTTLS"])
        self.assertEqual(b"STARTTLS\r\n", c.client())
        c.server("220 go ahead\r\n")

        self.assertEqual(["creator"], c.transport.tls_creators)
        self.assertEqual(b"EHLO mail.example.com\r\n", c.client())
        c.server("250 mx\r\n")
        self.assertEqual(b"MAIL FROM:<alice@example.com>\r\n", c.client())
        self.assertTrue(c.transaction.secure)

    def test_replies_sent_before_the_handshake_are_discarded(self) -> None:
        """A reply injected in the clear behind "220 go ahead" is never believed."""
        c = Conversation(security=self.opportunistic())
        c.greet(["STARTTLS"])
        c.client()
        c.server("220 go ahead\r\n250-fake\r\n250 AUTH PLAIN\r\n")

        self.assertEqual(b"EHLO mail.example.com\r\n", c.client())
        self.assertEqual([], c.outcome)
        c.server("250-mx\r\n250 SIZE 10\r\n")
        self.assertEqual({"SIZE": "10"}, c.transaction.extensions)

    def test_failed_handshake_is_a_tls_failure(self) -> None:
        """The connection dropping during the handshake is reported as a TLS failure."""
        c = Conversation(security=self.opportunistic())
        c.greet(["STARTTLS"])
        c.client()
        c.server("220 go ahead\r\n")
        c.reader.connectionLost(Failure(ConnectionLost("handshake failed")))

        failure = c.failure()
        self.assertTrue(failure.tls_failed)
        self.assertTrue(failure.temporary)

    def test_required_tls_not_offered_sends_no_mail(self) -> None:
        """With TLS required and no STARTTLS offered, no MAIL is sent."""
        c = Conversation(security=Security(required=True, creator=lambda: "creator"))
        c.greet(["PIPELINING"])

        self.assertIn("STARTTLS", c.failure().reply)
        self.assertEqual(b"", c.client())

    def test_refused_starttls_continues_in_the_clear_when_opportunistic(self) -> None:
        """RFC 3207 4: a 454 to STARTTLS leaves the plain session usable."""
        c = Conversation(security=self.opportunistic())
        c.greet(["STARTTLS"])
        c.client()
        c.server("454 4.7.0 TLS not available\r\n")

        self.assertEqual(b"MAIL FROM:<alice@example.com>\r\n", c.client())


class AuthTests(unittest.TestCase):
    def test_auth_plain_after_starttls(self) -> None:
        """The password goes only inside TLS, as AUTH PLAIN when offered."""
        security = Security(required=True, creator=lambda: "creator")
        c = Conversation(security=security, login=Login("me", "secret"))
        c.greet(["STARTTLS", "AUTH LOGIN PLAIN"])
        c.client()
        c.server("220 go\r\n")
        c.client()
        c.server("250-mx\r\n250 AUTH LOGIN PLAIN\r\n")

        token = base64.b64encode(b"\0me\0secret")
        self.assertEqual(b"AUTH PLAIN " + token + b"\r\n", c.client())
        c.server("235 ok\r\n")
        self.assertTrue(c.client().startswith(b"MAIL FROM:"))

    def test_no_password_without_tls(self) -> None:
        """A server that does not offer STARTTLS never sees AUTH."""
        security = Security(required=True, creator=lambda: "creator")
        c = Conversation(security=security, login=Login("me", "secret"))
        c.greet(["AUTH PLAIN"])

        self.assertEqual(b"", c.client())
        self.assertTrue(c.failure().temporary)

    def test_auth_login(self) -> None:
        """AUTH LOGIN answers the two challenges with base64 user and password."""
        c = Conversation(security=Security(implicit=True), login=Login("me", "pw"))
        c.greet(["AUTH LOGIN"])
        self.assertEqual(b"AUTH LOGIN\r\n", c.client())
        c.server("334 VXNlcm5hbWU6\r\n")
        self.assertEqual(base64.b64encode(b"me") + b"\r\n", c.client())
        c.server("334 UGFzc3dvcmQ6\r\n")
        self.assertEqual(base64.b64encode(b"pw") + b"\r\n", c.client())
        c.server("235 ok\r\n")

        self.assertTrue(c.client().startswith(b"MAIL FROM:"))

    def test_wrong_password_keeps_the_mail(self) -> None:
        """535 is an operator problem: a temporary host failure, the mail waits."""
        c = Conversation(security=Security(implicit=True), login=Login("me", "bad"))
        c.greet(["AUTH PLAIN"])
        c.client()
        c.server("535 5.7.8 bad credentials\r\n")

        failure = c.failure()
        self.assertTrue(failure.temporary)
        self.assertNotIn("bad\x00", failure.reply)


class DataTests(unittest.TestCase):
    def send(self, message: bytes) -> bytes:
        c = Conversation(message=message)
        c.greet(["PIPELINING"])
        c.client()
        c.server("250 ok\r\n250 ok\r\n354 go\r\n")
        c.pump()
        return c.client()

    def test_bare_line_ends_never_reach_the_wire(self) -> None:
        """Bare LF and CR become CRLF, so ``\\n.\\n`` cannot end DATA early (smuggling)."""
        sent = self.send(b"Subject: x\n\nline\n.\nMAIL FROM:<evil>\r.\rend\r\n")

        self.assertEqual(
            b"Subject: x\r\n\r\nline\r\n..\r\nMAIL FROM:<evil>\r\n..\r\nend\r\n.\r\n", sent
        )
        self.assertEqual(sent.count(b"\n"), sent.count(b"\r\n"))
        self.assertEqual(sent.count(b"\r"), sent.count(b"\r\n"))

    def test_leading_dots_are_doubled(self) -> None:
        """RFC 5321 4.5.2: a line starting with "." gets another one."""
        sent = self.send(b".first\r\nmid\r\n..second\r\n.")

        self.assertEqual(b"..first\r\nmid\r\n...second\r\n..\r\n.\r\n", sent)

    def test_message_without_final_line_end(self) -> None:
        """A message not ending in CRLF gets one before the dot."""
        self.assertEqual(b"body\r\n.\r\n", self.send(b"body"))

    def test_encoder_is_independent_of_chunk_boundaries(self) -> None:
        """CR at the end of one chunk and LF at the start of the next make one CRLF."""
        message = b".a\r\n.\rb\n\r\n..c\r\r\n\n.d\r" * 20
        whole = DataEncoder()
        expected = whole.feed(message) + whole.finish()

        rng = random.Random(7)
        for _ in range(200):
            encoder = DataEncoder()
            cuts = sorted(rng.sample(range(1, len(message)), 5))
            pieces = [message[a:b] for a, b in zip([0, *cuts], [*cuts, len(message)], strict=True)]
            out = b"".join(encoder.feed(p) for p in pieces) + encoder.finish()
            self.assertEqual(expected, out)

    def test_prefix_goes_before_the_message(self) -> None:
        """A DKIM-Signature prefix is sent first, through the same encoder."""
        c = Conversation()
        c.transaction.envelope.prefix = b"DKIM-Signature: v=1\r\n"
        c.greet(["PIPELINING"])
        c.client()
        c.server("250 ok\r\n250 ok\r\n354 go\r\n")
        c.pump()

        self.assertEqual(b"DKIM-Signature: v=1\r\n" + MESSAGE + b".\r\n", c.client())

    def test_over_the_size_limit_is_refused_without_sending(self) -> None:
        """RFC 1870 6.2: a message over the announced SIZE is not offered at all."""
        c = Conversation()
        c.greet(["SIZE 10"])

        self.assertEqual(b"QUIT\r\n", c.client())
        c.server("221 bye\r\n")
        self.assertEqual(552, c.result().replies["bob@remote.test"].code)

    def test_eight_bit_message_announced(self) -> None:
        """BODY=8BITMIME is given when the server offers it and the message needs it."""
        c = Conversation()
        c.transaction.envelope.eight_bit = True
        c.greet(["8BITMIME"])

        self.assertEqual(b"MAIL FROM:<alice@example.com> BODY=8BITMIME\r\n", c.client())

    def test_non_ascii_address_needs_smtputf8(self) -> None:
        """RFC 6531 3.2: without SMTPUTF8 a UTF-8 address fails for good, unsent."""
        c = Conversation(["jörg@remote.test"])
        c.greet()
        c.client()
        c.server("221 bye\r\n")

        self.assertEqual("5.6.7", c.result().replies["jörg@remote.test"].lines[0][:5])

    def test_address_with_line_break_is_not_sent(self) -> None:
        """An address that would split a command line is refused locally."""
        c = Conversation(["bob@remote.test>\r\nRCPT TO:<x@y"])
        c.greet()
        self.assertEqual(b"QUIT\r\n", c.client())
        c.server("221 bye\r\n")

        reply = c.result().replies["bob@remote.test>\r\nRCPT TO:<x@y"]
        self.assertEqual(553, reply.code)

    def test_connection_lost_before_the_final_reply(self) -> None:
        """No reply to the dot: the outcome is unknown, so the host failed temporarily."""
        c = Conversation()
        c.greet(["PIPELINING"])
        c.client()
        c.server("250 ok\r\n250 ok\r\n354 go\r\n")
        c.pump()
        c.reader.connectionLost(Failure(ConnectionLost()))

        self.assertTrue(c.failure().temporary)
        self.assertEqual([], c.results)


class ReplyParsingTests(unittest.TestCase):
    def test_overlong_reply_line_is_a_protocol_error(self) -> None:
        """A reply line beyond 4 KiB ends the session with a clear error, no traceback."""
        c = Conversation()
        c.server(b"220" + b"x" * 10_000)

        self.assertIn("protocol error", c.failure().reply)
        self.assertTrue(c.transport.aborted)

    def test_garbage_reply_is_a_protocol_error(self) -> None:
        """A line that is not "NNN text" fails the host temporarily."""
        c = Conversation()
        c.server("hello there\r\n")

        self.assertIn("malformed", c.failure().reply)

    def test_multiline_reply_with_changing_code_is_refused(self) -> None:
        """All lines of one reply carry the same code (RFC 5321 4.2.1)."""
        c = Conversation()
        c.server("220-hi\r\n250 there\r\n")

        self.assertIn("protocol error", c.failure().reply)

    def test_silent_server_times_out(self) -> None:
        """No greeting within 5 minutes: the connection is cut and the host failed."""
        c = Conversation()
        c.clock.advance(299)
        self.assertEqual([], c.outcome)
        c.clock.advance(2)

        self.assertIn("timed out", c.failure().reply)
        self.assertTrue(c.transport.aborted)

    def test_extensions_parsed_from_ehlo(self) -> None:
        """EHLO lines after the first become keyword -> parameters."""
        from mailsuite.queue.client import Reply

        reply = Reply(250, ("mx", "PIPELINING", "size 100", "AUTH PLAIN LOGIN", "!bad keyword"))
        self.assertEqual(
            {"PIPELINING": "", "SIZE": "100", "AUTH": "PLAIN LOGIN"}, parse_extensions(reply)
        )
