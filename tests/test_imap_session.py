"""Tests for mailsuite.imap.server: greeting, TLS, login, states, limits and errors."""

from __future__ import annotations

import base64
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.trial import unittest

from mailsuite.config import Limits
from mailsuite.imap import commands
from mailsuite.imap.commands.base import State
from mailsuite.imap.server import MAX_LINE
from tests.test_imap_harness import ALICE, PASSWORD, TLS_CONTEXT, Harness


def plain(user: str, password: str) -> bytes:
    return base64.b64encode(f"\0{user}\0{password}".encode())


class GreetingTests(unittest.TestCase):
    def test_plain_port_offers_starttls_and_no_login(self) -> None:
        """Before TLS: STARTTLS and LOGINDISABLED, no AUTH= (RFC 3501 6.2.3, 7.1)."""
        client = Harness(self).connect(secure=False)

        self.assertEqual(
            b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE STARTTLS "
            b"LOGINDISABLED] mailsuite IMAP4rev1 ready\r\n",
            client.greeting,
        )

    def test_implicit_tls_port_offers_plain(self) -> None:
        """On imaps the session is secure from the start and offers AUTH=PLAIN."""
        client = Harness(self).connect(secure=True)

        self.assertIn(b" AUTH=PLAIN]", client.greeting)
        self.assertNotIn(b"STARTTLS", client.greeting)
        self.assertNotIn(b"LOGINDISABLED", client.greeting)

    def test_capabilities_after_login(self) -> None:
        """After login the capability list names the extensions that work."""
        client = Harness(self).login()

        self.assertEqual(
            b"* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UNSELECT "
            b"CHILDREN SPECIAL-USE UIDPLUS MOVE CONDSTORE QRESYNC LIST-EXTENDED LIST-STATUS "
            b"CREATE-SPECIAL-USE STATUS=SIZE MULTIAPPEND BINARY ESEARCH APPENDLIMIT=%d"
            % Limits().message_size,
            client.lines("CAPABILITY")[0],
        )


class StartTLSTests(unittest.TestCase):
    def test_starttls(self) -> None:
        """STARTTLS answers OK, then hands the transport the server's TLS options."""
        client = Harness(self).connect(secure=False)

        self.assertEqual(b"a1 OK Begin TLS negotiation now\r\n", client.command("STARTTLS"))
        self.assertIs(TLS_CONTEXT, client.transport.tls_context)
        self.assertTrue(client.session.secure)
        self.assertIn(b"AUTH=PLAIN", client.command("CAPABILITY"))

    def test_pipelined_command_after_starttls_is_discarded(self) -> None:
        """A command sent in the same packet as STARTTLS is never run (the injection fix)."""
        client = Harness(self).connect(secure=False)

        out = client.send(b"a STARTTLS\r\nb LOGIN alice@example.com secret\r\nc NOOP\r\n")

        self.assertEqual(b"a OK Begin TLS negotiation now\r\n", out)
        self.assertEqual(State.NOT_AUTHENTICATED, client.session.state)
        self.assertEqual(b"a OK Begin TLS negotiation now\r\n", client.transport.tls_started_with)

    def test_starttls_twice_is_refused(self) -> None:
        """STARTTLS inside TLS is a client error."""
        client = Harness(self).connect(secure=True)

        self.assertEqual(b"a1 BAD TLS is already active", client.tagged("STARTTLS"))

    def test_starttls_after_login_is_not_valid(self) -> None:
        """STARTTLS belongs to the not-authenticated state only."""
        client = Harness(self).login()

        self.assertTrue(client.tagged("STARTTLS").startswith(b"a2 BAD [CLIENTBUG]"))


class LoginTests(unittest.TestCase):
    def test_login_before_tls_is_refused(self) -> None:
        """No password over plaintext: LOGIN before STARTTLS is NO [PRIVACYREQUIRED]."""
        harness = Harness(self)
        client = harness.connect(secure=False)

        reply = client.tagged(f"LOGIN {ALICE} {PASSWORD}")

        self.assertTrue(reply.startswith(b"a1 NO [PRIVACYREQUIRED]"))
        self.assertEqual([], harness.checker.requests)

    def test_authenticate_before_tls_is_refused(self) -> None:
        """AUTHENTICATE PLAIN is refused before TLS, with or without an initial response."""
        client = Harness(self).connect(secure=False)

        self.assertTrue(client.tagged("AUTHENTICATE PLAIN").startswith(b"a1 NO [PRIVACYREQUIRED]"))
        reply = client.tagged(b"AUTHENTICATE PLAIN " + plain(ALICE, PASSWORD))
        self.assertTrue(reply.startswith(b"a2 NO [PRIVACYREQUIRED]"))

    def test_plaintext_on_loopback(self) -> None:
        """With auth.plaintext_on_loopback, a loopback peer may log in without TLS."""
        harness = Harness(self, plaintext_on_loopback=True)
        client = harness.connect(secure=False)

        self.assertIn(b" STARTTLS AUTH=PLAIN]", client.greeting)
        self.assertNotIn(b"LOGINDISABLED", client.greeting)
        self.assertTrue(client.tagged(f"LOGIN {ALICE} {PASSWORD}").startswith(b"a1 OK"))

    def test_plaintext_on_loopback_refuses_other_peers(self) -> None:
        """The loopback exception never covers a peer elsewhere on the network."""
        client = Harness(self, plaintext_on_loopback=True).connect(secure=False, peer="192.0.2.7")

        self.assertIn(b"LOGINDISABLED", client.greeting)
        self.assertIn(b"NO [PRIVACYREQUIRED]", client.tagged(f"LOGIN {ALICE} {PASSWORD}"))

    def test_login_succeeds_and_creates_default_folders(self) -> None:
        """LOGIN answers with the new capabilities and makes Sent, Drafts, Trash, Junk."""
        harness = Harness(self)
        client = harness.connect()

        reply = client.tagged(f'LOGIN {ALICE} "{PASSWORD}"')

        self.assertTrue(reply.startswith(b"a1 OK [CAPABILITY IMAP4rev1 "))
        self.assertEqual(State.AUTHENTICATED, client.session.state)
        account = harness.store.account(ALICE)
        self.assertEqual(["INBOX", "Drafts", "Junk", "Sent", "Trash"], account.folder_names())
        self.assertEqual("imap", harness.checker.requests[0].protocol)

    def test_login_with_literals(self) -> None:
        """User and password may be literals (a password with spaces or quotes)."""
        harness = Harness(self)
        harness.checker.users["bob@example.com"] = 'p "w'
        client = harness.connect()

        self.assertEqual(b"+ Ready for literal data\r\n", client.command("LOGIN {15}"))
        client.send(b"bob@example.com {4+}\r\n")
        self.assertIn(b"a1 OK [CAPABILITY", client.send(b'p "w\r\n'))

    def test_failed_login_waits_for_the_checker(self) -> None:
        """A wrong password is answered NO [AUTHENTICATIONFAILED] only after the delay."""
        harness = Harness(self)
        client = harness.connect()

        self.assertEqual(b"", client.command(f"LOGIN {ALICE} wrong"))
        harness.reactor.advance(2)

        self.assertEqual(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n", client.take())
        self.assertEqual(State.NOT_AUTHENTICATED, client.session.state)

    def test_input_waits_while_login_is_checked(self) -> None:
        """A command pipelined behind LOGIN runs after the login answer, in order."""
        harness = Harness(self)
        client = harness.connect()

        client.send(b"a LOGIN alice@example.com wrong\r\nb NOOP\r\n")
        harness.reactor.advance(2)

        self.assertEqual(
            b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\nb OK NOOP completed\r\n",
            client.take(),
        )

    def test_checker_failure_is_temporary(self) -> None:
        """If passwords cannot be checked, the answer is NO [UNAVAILABLE], not a refusal."""
        harness = Harness(self)

        def broken(credentials: Any) -> defer.Deferred[str]:
            return defer.fail(OSError("users file unreadable"))

        harness.checker.requestAvatarId = broken  # type: ignore[method-assign]
        client = harness.connect()

        self.assertTrue(client.tagged(f"LOGIN {ALICE} x").startswith(b"a1 NO [UNAVAILABLE]"))
        self.flushLoggedErrors(OSError)

    def test_authenticate_plain_with_initial_response(self) -> None:
        """SASL-IR: the PLAIN response on the AUTHENTICATE line (RFC 4959)."""
        client = Harness(self).connect()

        reply = client.tagged(b"AUTHENTICATE PLAIN " + plain(ALICE, PASSWORD))

        self.assertTrue(reply.startswith(b"a1 OK [CAPABILITY"))

    def test_authenticate_plain_with_continuation(self) -> None:
        """Without an initial response the server sends ``+`` and reads one line."""
        client = Harness(self).connect()

        self.assertEqual(b"+ \r\n", client.command("AUTHENTICATE PLAIN"))
        self.assertIn(b"a1 OK [CAPABILITY", client.send(plain(ALICE, PASSWORD) + b"\r\n"))
        self.assertEqual(State.AUTHENTICATED, client.session.state)

    def test_authenticate_cancelled(self) -> None:
        """A ``*`` line cancels the exchange: tagged BAD (RFC 3501 6.2.2)."""
        client = Harness(self).connect()
        client.command("AUTHENTICATE PLAIN")

        self.assertEqual(b"a1 BAD Authentication cancelled\r\n", client.send(b"*\r\n"))

    def test_authenticate_garbage(self) -> None:
        """Undecodable responses and other mechanisms are refused cleanly."""
        client = Harness(self).connect()

        self.assertTrue(client.tagged("AUTHENTICATE PLAIN !!!").startswith(b"a1 BAD"))
        self.assertTrue(client.tagged("AUTHENTICATE CRAM-MD5").startswith(b"a2 NO"))
        self.assertTrue(
            client.tagged(b"AUTHENTICATE PLAIN " + base64.b64encode(b"x")).startswith(b"a3 BAD")
        )

    def test_unauthorized_checker_error_type(self) -> None:
        """The fake checker refuses like the real one, with UnauthorizedLogin."""
        harness = Harness(self)
        d = harness.checker.requestAvatarId(type("C", (), {"username": b"x", "password": b"y"}))
        harness.reactor.advance(2)

        self.failureResultOf(d, UnauthorizedLogin)


class StateTests(unittest.TestCase):
    def test_commands_need_their_state(self) -> None:
        """Selected-state commands before login or SELECT are BAD, naming the state."""
        harness = Harness(self)
        client = harness.connect()

        self.assertEqual(
            b"a1 BAD [CLIENTBUG] FETCH is not valid in the not authenticated state",
            client.tagged("FETCH 1 FLAGS"),
        )
        client = harness.login()
        self.assertEqual(
            b"a2 BAD [CLIENTBUG] EXPUNGE is not valid in the authenticated state",
            client.tagged("EXPUNGE"),
        )

    def test_unknown_command(self) -> None:
        """A command no state knows is BAD Unknown command."""
        client = Harness(self).connect()

        self.assertEqual(b"a1 BAD [CLIENTBUG] Unknown command", client.tagged("FROB"))

    def test_missing_tag(self) -> None:
        """A line with no usable tag gets an untagged BAD."""
        client = Harness(self).connect()

        self.assertEqual(b"* BAD Missing tag or command name\r\n", client.send(b"\r\n"))
        self.assertEqual(b"* BAD Missing tag or command name\r\n", client.send(b"+x NOOP\r\n"))

    def test_every_table_entry_is_a_known_command(self) -> None:
        """The selected state includes everything the authenticated state allows."""
        for name in commands.AUTHENTICATED:
            self.assertIn(name, commands.SELECTED)
        self.assertFalse(commands.allows_expunge("FETCH"))
        self.assertTrue(commands.allows_expunge("UID FETCH"))

    def test_logout(self) -> None:
        """LOGOUT says BYE, completes, and closes the connection."""
        client = Harness(self).login()

        self.assertEqual(
            b"* BYE Logging out\r\na2 OK LOGOUT completed\r\n", client.command("LOGOUT")
        )
        self.assertTrue(client.transport.disconnecting)

    def test_id_and_enable(self) -> None:
        """ID answers with our name; ENABLE names only what it turned on."""
        client = Harness(self).login()

        self.assertEqual(
            b'* ID ("name" "mailsuite" "vendor" "mailsuite")\r\na2 OK ID completed\r\n',
            client.command('ID ("name" "Thunderbird" "version" "153.8.0")'),
        )
        self.assertEqual(
            b"* ENABLED CONDSTORE\r\na3 OK ENABLE completed\r\n",
            client.command("ENABLE CONDSTORE UTF8=ACCEPT"),
        )
        self.assertEqual(
            b"* ENABLED\r\na4 OK ENABLE completed\r\n", client.command("ENABLE CONDSTORE")
        )
        self.assertTrue(client.tagged("ID NIL").startswith(b"a5 OK"))
        too_many = "ID (" + " ".join(f'"k{i}" "v"' for i in range(31)) + ")"
        self.assertTrue(client.tagged(too_many).startswith(b"a6 BAD"))


class LimitTests(unittest.TestCase):
    def test_overlong_line_is_bad_and_the_session_goes_on(self) -> None:
        """A line over the limit gets BAD [TOOBIG]; the next command works."""
        client = Harness(self).connect()

        out = client.send(b"a1 NOOP " + b"x" * (MAX_LINE + 10) + b"\r\na2 NOOP\r\n")

        self.assertEqual(b"* BAD [TOOBIG] Command line too long\r\na2 OK NOOP completed\r\n", out)

    def test_overlong_line_after_a_literal_names_the_tag(self) -> None:
        """When the first line was read, the refusal carries the command's tag."""
        client = Harness(self).login()
        client.send(b"t1 SEARCH TEXT {2+}\r\nab")

        out = client.send(b" " + b"x" * (MAX_LINE + 10) + b"\r\nt2 NOOP\r\n")

        self.assertEqual(b"t1 BAD [TOOBIG] Command line too long\r\nt2 OK NOOP completed\r\n", out)

    def test_preauth_literal_limit(self) -> None:
        """Before login a literal over 8 KiB is refused without a continuation."""
        client = Harness(self).connect()

        self.assertEqual(b"a1 NO [TOOBIG] Literal too large\r\n", client.command("LOGIN {9000}"))

    def test_preauth_non_synchronizing_literal_over_limit_hangs_up(self) -> None:
        """A ``{n+}`` over the pre-login limit closes the connection with BYE."""
        client = Harness(self).connect()

        out = client.command("LOGIN {9000+}")

        self.assertEqual(b"* BYE [TOOBIG] Literal too large before login\r\n", out)
        self.assertTrue(client.transport.disconnecting)

    def test_authenticated_non_synchronizing_literal_is_discarded(self) -> None:
        """After login an oversized ``{n+}`` is read, dropped, and refused; the session goes on."""
        client = Harness(self).login()

        client.send(b"t SEARCH TEXT {70000+}\r\n")
        for _ in range(7):
            self.assertEqual(b"", client.send(b"y" * 10000))
        out = client.send(b"\r\nu NOOP\r\n")

        self.assertEqual(b"t NO [TOOBIG] Literal too large\r\nu OK NOOP completed\r\n", out)
        self.assertIsNone(client.session._literal)

    def test_append_over_message_size(self) -> None:
        """An APPEND larger than the message size limit is refused before it is sent."""
        client = Harness(self, message_size=1000).login()

        self.assertEqual(
            b"a2 NO [TOOBIG] Literal too large\r\n", client.command("APPEND INBOX {1001}")
        )
        self.assertEqual(b"a3 OK NOOP completed\r\n", client.command("NOOP"))

    def test_too_many_bad_commands(self) -> None:
        """After ``bad_commands`` BAD answers the server says BYE and closes."""
        client = Harness(self, bad_commands=3).connect()
        for _ in range(3):
            client.command("FROB")

        out = client.command("FROB")

        self.assertTrue(out.endswith(b"* BYE Too many invalid commands\r\n"))
        self.assertTrue(client.transport.disconnecting)

    def test_idle_timeout(self) -> None:
        """A silent client is logged out after ``imap_idle_timeout`` (RFC 3501 5.4)."""
        harness = Harness(self, imap_idle_timeout=1800)
        client = harness.login()

        harness.reactor.advance(1799)
        self.assertEqual(b"", client.take())
        harness.reactor.advance(1)

        self.assertEqual(b"* BYE Autologout; idle for too long\r\n", client.take())
        self.assertTrue(client.transport.disconnecting)

    def test_unexpected_error_is_serverbug(self) -> None:
        """A bug in a command is logged and answered NO [SERVERBUG], never a traceback."""
        harness = Harness(self)
        client = harness.login()

        def broken(*args: Any) -> None:
            raise RuntimeError("boom")

        self.patch(harness.store.account(ALICE), "subscriptions", broken)
        reply = client.tagged('LIST "" "*"')

        self.assertEqual(b"a2 NO [SERVERBUG] Internal error; it has been logged", reply)
        self.assertEqual(1, len(self.flushLoggedErrors(RuntimeError)))
        self.assertEqual(b"a3 OK NOOP completed", client.tagged("NOOP"))

    def test_many_pipelined_commands(self) -> None:
        """Thousands of pipelined commands run in order without deep recursion."""
        client = Harness(self).login()

        out = client.send(b"".join(b"p%d NOOP\r\n" % i for i in range(3000)))

        self.assertEqual(3000, out.count(b" OK NOOP completed\r\n"))
        self.assertTrue(out.endswith(b"p2999 OK NOOP completed\r\n"))


class FailedLoginTests(unittest.TestCase):
    def test_password_guessing_ends_in_bye(self) -> None:
        """Failed logins count like bad commands; the last NO is followed by BYE."""
        harness = Harness(self, bad_commands=2)
        client = harness.connect()
        out = b""
        for n in range(1, 4):
            out += client.command(f"LOGIN {ALICE} wrong{n}")
            harness.reactor.advance(2)
        out += client.take()

        self.assertEqual(3, out.count(b"NO [AUTHENTICATIONFAILED]"))
        self.assertTrue(
            out.endswith(
                b"a3 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
                b"* BYE Too many invalid commands\r\n"
            )
        )
        self.assertTrue(client.transport.disconnecting)
