"""Parsing SMTP commands: verbs, HELO names, paths and MAIL/RCPT parameters."""

from __future__ import annotations

from twisted.trial import unittest

from mailsuite.smtp import replies
from mailsuite.smtp.parse import (
    Address,
    parse_helo,
    parse_mail,
    parse_rcpt,
    split_command,
    unquote_local,
)
from mailsuite.smtp.replies import Reply, SMTPReplyError


class ParseTestCase(unittest.TestCase):
    def assertRefused(self, expected: Reply, call: object, *args: object) -> None:
        """``call(*args)`` raises SMTPReplyError with ``expected``'s code and status."""
        error = self.assertRaises(SMTPReplyError, call, *args)
        self.assertEqual((expected.code, expected.status), (error.reply.code, error.reply.status))


class CommandTests(ParseTestCase):
    def test_verb_is_case_insensitive(self) -> None:
        """Commands are case-insensitive (RFC 5321 2.4); the argument is kept."""
        self.assertEqual(("MAIL", "FROM:<a@b>"), split_command(b"mail FROM:<a@b>"))
        self.assertEqual(("QUIT", ""), split_command(b"Quit"))

    def test_trailing_spaces_are_ignored(self) -> None:
        """Clients that pad with spaces still work."""
        self.assertEqual(("NOOP", ""), split_command(b"NOOP   "))

    def test_garbage_verbs_are_unknown(self) -> None:
        """Binary junk or an empty line is an unknown command, not a crash."""
        for line in (b"", b"\x16\x03\x01\x02", b"M@IL", b"X" * 40):
            self.assertRefused(replies.UNKNOWN_COMMAND, split_command, line)

    def test_control_characters_and_bad_utf8_are_syntax_errors(self) -> None:
        """A bare CR or NUL inside a line, or invalid UTF-8, never reaches a handler."""
        for line in (b"EHLO a\rb", b"EHLO a\x00", b"MAIL FROM:<\xff@x>"):
            self.assertRefused(replies.SYNTAX_ERROR, split_command, line)


class HeloTests(ParseTestCase):
    def test_names_and_literals(self) -> None:
        """A host name or an address literal is taken as is."""
        for name in ("client.example.org", "[127.0.0.1]", "[IPv6:::1]", "MYPC"):
            self.assertEqual(name, parse_helo(name))

    def test_empty_or_spaced_names_are_refused(self) -> None:
        """EHLO needs exactly one printable word (it goes into Received:)."""
        for name in ("", "a b", "ünï", "x" * 256):
            self.assertRefused(replies.SYNTAX_ERROR, parse_helo, name)


class MailTests(ParseTestCase):
    def test_plain_sender(self) -> None:
        """The usual form, and the lenient ones: a space after the colon, no brackets."""
        for argument in ("FROM:<a@b.org>", "from: <a@b.org>", "FROM:a@b.org"):
            mail = parse_mail(argument, True, False)
            self.assertEqual(Address("a@b.org", "a", "b.org"), mail.sender)

    def test_null_sender(self) -> None:
        """<> is the bounce sender."""
        mail = parse_mail("FROM:<>", True, False)

        self.assertTrue(mail.sender.null)

    def test_quoted_local_part_and_literal_domain(self) -> None:
        """Quoted strings may hold spaces; domains may be address literals."""
        mail = parse_mail('FROM:<"john doe"@[192.0.2.1]> SIZE=10', True, False)

        self.assertEqual('"john doe"@[192.0.2.1]', mail.sender.text)
        self.assertEqual(10, mail.size)

    def test_source_route_is_dropped(self) -> None:
        """RFC 5321 4.1.2: a source route is accepted and ignored."""
        mail = parse_mail("FROM:<@relay.example,@other.example:a@b.org>", True, False)

        self.assertEqual("a@b.org", mail.sender.text)

    def test_parameters(self) -> None:
        """SIZE, BODY and SMTPUTF8, keywords in any case."""
        mail = parse_mail("FROM:<a@b.org> size=123 BODY=8bitmime SMTPUTF8", True, False)

        self.assertEqual((123, "8BITMIME", True), (mail.size, mail.body, mail.smtputf8))

    def test_utf8_sender_parses_and_is_marked_non_ascii(self) -> None:
        """RFC 6531: UTF-8 addresses parse; the session checks SMTPUTF8 was given."""
        mail = parse_mail("FROM:<jösé@exämple.org> SMTPUTF8", True, False)

        self.assertFalse(mail.sender.ascii)
        self.assertTrue(mail.smtputf8)

    def test_unknown_parameter(self) -> None:
        """Parameters we do not offer are 555 (RFC 5321 4.1.1.11)."""
        for argument in (
            "FROM:<a@b.org> RET=FULL",
            "FROM:<a@b.org> BODY=BINARYMIME",
            "FROM:<a@b.org> AUTH=<>",
        ):
            error = self.assertRaises(SMTPReplyError, parse_mail, argument, True, False)
            self.assertIn(error.reply.code, (501, 555))

    def test_auth_parameter_where_auth_is_offered(self) -> None:
        """RFC 4954 5: MAIL FROM takes AUTH= where AUTH is advertised."""
        mail = parse_mail("FROM:<a@b.org> AUTH=<>", True, True)

        self.assertEqual("a@b.org", mail.sender.text)

    def test_parameters_need_ehlo(self) -> None:
        """After HELO no extension was negotiated, so any parameter is 555."""
        self.assertRefused(
            replies.UNKNOWN_PARAMETER, parse_mail, "FROM:<a@b.org> SIZE=1", False, False
        )

    def test_malformed(self) -> None:
        """Broken paths and parameters are 501, never an exception."""
        for argument in (
            "",
            "FROM",
            "TO:<a@b.org>",
            "FROM:<a@b.org",
            "FROM:<a@@b.org>",
            "FROM:<a@b..org>",
            "FROM:<a@-b.org>",
            "FROM:<a b@c.org>",
            "FROM:<a@b.org>SIZE=1",
            "FROM:<a@b.org> SIZE=x",
            "FROM:<a@b.org> SIZE=1 SIZE=2",
            "FROM:<a@b.org> SIZE=",
            "FROM:<a@b.org> =x",
            "FROM:<a@b.org> SMTPUTF8=yes",
            "FROM:<a@b.org> SIZE=" + "9" * 30,
        ):
            self.assertRefused(replies.SYNTAX_ERROR, parse_mail, argument, True, False)


class RcptTests(ParseTestCase):
    def test_recipient(self) -> None:
        """The usual form."""
        self.assertEqual(Address("u@x.org", "u", "x.org"), parse_rcpt("TO:<u@x.org>", True))

    def test_bare_postmaster(self) -> None:
        """RFC 5321 4.1.1.3: <postmaster> without a domain, in any case."""
        address = parse_rcpt("TO:<PostMaster>", True)

        self.assertEqual(("postmaster", ""), (address.local, address.domain))

    def test_no_rcpt_parameters_are_offered(self) -> None:
        """Without DSN, NOTIFY and ORCPT are 555."""
        self.assertRefused(
            replies.UNKNOWN_PARAMETER, parse_rcpt, "TO:<u@x.org> NOTIFY=NEVER", True
        )

    def test_null_recipient_is_refused(self) -> None:
        """<> is only a sender."""
        self.assertRefused(replies.SYNTAX_ERROR, parse_rcpt, "TO:<>", True)


class UnquoteTests(unittest.TestCase):
    def test_unquote(self) -> None:
        """Quoted local parts compare like their plain form for user lookup."""
        self.assertEqual("alice", unquote_local('"alice"'))
        self.assertEqual('a"b', unquote_local('"a\\"b"'))
        self.assertEqual("plain", unquote_local("plain"))
