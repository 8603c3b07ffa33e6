"""The IMAP message model on the tricky cases, one behaviour per test.

The corpus test (test_imap_corpus) checks agreement with Dovecot on real
mail; these tests pin down the rules themselves on small messages.
"""

from __future__ import annotations

import datetime

from twisted.trial import unittest

from mailsuite.imap.message import ParsedMessage, UnknownTransferEncoding, imap_list, imap_string


def message(*lines: str | bytes) -> bytes:
    """Join lines with CRLF, as the store serves messages."""
    return b"".join(
        (line.encode("utf-8") if isinstance(line, str) else line) + b"\r\n" for line in lines
    )


NESTED = message(
    "From: a@example.com",
    "Subject: outer",
    "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="outer"',
    "",
    "preamble",
    "--outer",
    "Content-Type: text/plain",
    "",
    "first part",
    "--outer",
    "Content-Type: message/rfc822",
    "Content-Description: forwarded",
    "",
    "From: b@example.com",
    "Subject: inner",
    "MIME-Version: 1.0",
    'Content-Type: multipart/alternative; boundary="inner"',
    "",
    "--inner",
    "Content-Type: text/plain; charset=utf-8",
    "",
    "inner plain",
    "--inner",
    "Content-Type: text/html",
    "",
    "<p>inner html</p>",
    "--inner--",
    "--outer--",
    "epilogue",
)


class EnvelopeTests(unittest.TestCase):
    def test_field_order_and_defaults(self) -> None:
        """Fields come in RFC 3501 order; Sender and Reply-To default to From."""
        parsed = ParsedMessage(
            message(
                "Message-ID: <id@example.com>",
                "Date: Mon, 1 Jan 2024 10:00:00 +0000",
                "To: to@example.com",
                "From: Alice <alice@example.com>",
                "Subject: hi",
                "In-Reply-To: <parent@example.com>",
                "",
                "body",
            )
        )

        alice = b'(("Alice" NIL "alice" "example.com"))'
        expected = (
            b'("Mon, 1 Jan 2024 10:00:00 +0000" "hi" %s %s %s ((NIL NIL "to" "example.com"))'
            b' NIL NIL "<parent@example.com>" "<id@example.com>")'
        ) % (alice, alice, alice)
        self.assertEqual(expected, parsed.envelope())

    def test_missing_header_is_all_nil(self) -> None:
        """A message without any envelope header has ten NILs."""
        self.assertEqual(
            b"(" + b" ".join([b"NIL"] * 10) + b")", ParsedMessage(b"\r\nx").envelope()
        )

    def test_groups(self) -> None:
        """A group is a name entry, its members, then an all-NIL end marker."""
        parsed = ParsedMessage(
            message('To: Team: a@example.com, "Bee" <b@example.com>;, c@example.com', "", "")
        )

        expected = (
            b'((NIL NIL "Team" NIL)(NIL NIL "a" "example.com")("Bee" NIL "b" "example.com")'
            b'(NIL NIL NIL NIL)(NIL NIL "c" "example.com"))'
        )
        self.assertIn(expected, parsed.envelope())

    def test_empty_group(self) -> None:
        """undisclosed-recipients:; is a group with no members."""
        parsed = ParsedMessage(message("Cc: undisclosed-recipients:;", "", ""))

        self.assertIn(
            b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))', parsed.envelope()
        )

    def test_route_address(self) -> None:
        """An obsolete source route is reported in the address's route field."""
        parsed = ParsedMessage(message("From: Old <@relay1,@relay2:user@example.com>", "", ""))

        self.assertIn(b'(("Old" "@relay1,@relay2" "user" "example.com"))', parsed.envelope())

    def test_missing_parts_are_filled(self) -> None:
        """A bare local part gets Dovecot's MISSING_DOMAIN, a bad angle address SYNTAX_ERROR."""
        parsed = ParsedMessage(message("From: postmaster", "To: <broken:@x;>", "", ""))

        envelope = parsed.envelope()
        self.assertIn(b'((NIL NIL "postmaster" "MISSING_DOMAIN"))', envelope)
        self.assertIn(b'((NIL NIL "broken" "SYNTAX_ERROR"))', envelope)

    def test_comment_becomes_name(self) -> None:
        """user@domain (Name) reports the comment as the display name."""
        parsed = ParsedMessage(message("From: bob@example.com (Bob Smith)", "", ""))

        self.assertIn(b'(("Bob Smith" NIL "bob" "example.com"))', parsed.envelope())

    def test_repeated_headers(self) -> None:
        """Repeated address headers add up; a repeated Subject replaces the first."""
        parsed = ParsedMessage(
            message(
                "Subject: one", "To: a@example.com", "Subject: two", "To: b@example.com", "", ""
            )
        )

        envelope = parsed.envelope()
        self.assertIn(b'"two"', envelope)
        self.assertIn(b'((NIL NIL "a" "example.com")(NIL NIL "b" "example.com"))', envelope)

    def test_encoded_words_are_not_decoded(self) -> None:
        """ENVELOPE carries RFC 2047 words as written; clients decode them."""
        parsed = ParsedMessage(message("Subject: =?UTF-8?B?w7xiZXI=?=", "", ""))

        self.assertIn(b'"=?UTF-8?B?w7xiZXI=?="', parsed.envelope())

    def test_subject_is_tidied_into_a_literal(self) -> None:
        """A folded or 8-bit subject is unfolded, squeezed and sent as a literal."""
        parsed = ParsedMessage(message("Subject: café  au", "\tlait", "", ""))

        self.assertIn(b"{13}\r\ncaf\xc3\xa9 au lait ", parsed.envelope())


class BodyStructureTests(unittest.TestCase):
    def test_no_content_type(self) -> None:
        """Without Content-Type a message is text/plain; charset=us-ascii, 7bit."""
        parsed = ParsedMessage(message("Subject: plain", "", "line one", "line two"))

        expected = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 20 2 NIL NIL NIL NIL)'
        self.assertEqual(expected, parsed.bodystructure())

    def test_content_headers_ignored_without_mime(self) -> None:
        """Content-Transfer-Encoding without MIME-Version or Content-Type counts for nothing."""
        parsed = ParsedMessage(message("Content-Transfer-Encoding: base64", "", "aGk="))

        self.assertIn(b'NIL NIL "7bit" 6 1', parsed.bodystructure())

    def test_broken_content_type(self) -> None:
        """An unparsable Content-Type is reported as "" "", not guessed at."""
        for value in ("application-x-gzip; name=a.gz", "multipart/mixed boundary=b", ""):
            parsed = ParsedMessage(message("Content-Type: " + value, "", "data"))

            self.assertEqual(
                b'("" "" NIL NIL NIL "7bit" 6 NIL NIL NIL NIL)', parsed.bodystructure()
            )

    def test_case_is_kept(self) -> None:
        """Type, subtype and parameter names keep the case they were written in."""
        parsed = ParsedMessage(message("Content-Type: Text/HTML; Charset=UTF-8", "", "x"))

        self.assertTrue(parsed.bodystructure().startswith(b'("Text" "HTML" ("Charset" "UTF-8")'))

    def test_nested_structure(self) -> None:
        """multipart, message/rfc822 with envelope, body and lines, and nested multipart.

        The line break before a delimiter belongs to the delimiter, so a
        one-line part has 0 lines (RFC 2046 section 5.1.1).
        """
        parsed = ParsedMessage(NESTED)

        inner_envelope = (
            b'(NIL "inner" ((NIL NIL "b" "example.com")) ((NIL NIL "b" "example.com"))'
            b' ((NIL NIL "b" "example.com")) NIL NIL NIL NIL NIL)'
        )
        expected = (
            b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0 NIL NIL NIL NIL)'
            b'("message" "rfc822" NIL NIL "forwarded" "7bit" 244 ' + inner_envelope + b" "
            b'(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 11 0 NIL NIL NIL NIL)'
            b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 17 0 NIL NIL NIL NIL)'
            b' "alternative" ("boundary" "inner") NIL NIL NIL) 14 NIL NIL NIL NIL)'
            b' "mixed" ("boundary" "outer") NIL NIL NIL)'
        )
        self.assertEqual(expected, parsed.bodystructure())

    def test_body_form_has_no_extension_data(self) -> None:
        """BODY is BODYSTRUCTURE without md5, disposition, language and location."""
        parsed = ParsedMessage(NESTED)

        body = parsed.bodystructure(extensible=False)
        self.assertTrue(
            body.startswith(b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0)')
        )
        self.assertTrue(body.endswith(b' "alternative") 14) "mixed")'))

    def test_extension_data(self) -> None:
        """MD5, disposition with parameters, languages and location are reported."""
        parsed = ParsedMessage(
            message(
                "Content-Type: application/pdf",
                "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==",
                "Content-Disposition: attachment; filename=report.pdf",
                "Content-Language: en, de",
                "Content-Location: http://example.com/r.pdf",
                "",
                "%PDF",
            )
        )

        expected = (
            b'("application" "pdf" NIL NIL NIL "7bit" 6 "Q2hlY2sgSW50ZWdyaXR5IQ=="'
            b' ("attachment" ("filename" "report.pdf")) ("en" "de") "http://example.com/r.pdf")'
        )
        self.assertEqual(expected, parsed.bodystructure())

    def test_rfc2231_continuations_are_joined(self) -> None:
        """name*0*, name*1 are joined into name*, still percent-encoded (as Dovecot does)."""
        parsed = ParsedMessage(
            message(
                "Content-Type: application/octet-stream;",
                " filename*1=.txt; filename*0*=utf-8''caf%C3%A9",
                "",
                "x",
            )
        )

        self.assertIn(b'("filename*" "utf-8\'\'caf%C3%A9.txt")', parsed.bodystructure())

    def test_multipart_without_boundary(self) -> None:
        """A multipart with no boundary gets one empty text/plain part."""
        parsed = ParsedMessage(message("Content-Type: multipart/mixed", "", "text"))

        expected = (
            b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
            b' "mixed" NIL NIL NIL NIL)'
        )
        self.assertEqual(expected, parsed.bodystructure())

    def test_digest_parts_default_to_message(self) -> None:
        """Inside multipart/digest a part without Content-Type is message/rfc822."""
        parsed = ParsedMessage(
            message(
                'Content-Type: multipart/digest; boundary="d"',
                "",
                "--d",
                "",
                "Subject: digested",
                "",
                "hello",
                "--d--",
            )
        )

        self.assertTrue(
            parsed.bodystructure().startswith(b'(("message" "rfc822" NIL NIL NIL "7bit"')
        )
        self.assertEqual(b"hello", parsed.section((1, 1)))


class SectionTests(unittest.TestCase):
    def test_whole_header_and_text(self) -> None:
        """BODY[], BODY[HEADER] and BODY[TEXT] are exact slices; HEADER keeps the blank line."""
        data = message("Subject: s", "", "body")
        parsed = ParsedMessage(data)

        self.assertEqual(data, parsed.section(()))
        self.assertEqual(b"Subject: s\r\n\r\n", parsed.section((), "HEADER"))
        self.assertEqual(b"body\r\n", parsed.section((), "TEXT"))
        self.assertEqual(len(data), parsed.size)

    def test_part_one_of_single_part(self) -> None:
        """Part 1 of a non-multipart message is its body; its MIME header is the top header."""
        parsed = ParsedMessage(message("Subject: s", "Content-Type: text/plain", "", "body"))

        self.assertEqual(b"body\r\n", parsed.section((1,)))
        self.assertEqual(
            b"Subject: s\r\nContent-Type: text/plain\r\n\r\n", parsed.section((1,), "MIME")
        )
        self.assertIsNone(parsed.section((2,)))
        self.assertIsNone(parsed.section((), "MIME"))

    def test_nested_numbering(self) -> None:
        """Numbers after a message/rfc822 part continue inside the encapsulated message."""
        parsed = ParsedMessage(NESTED)

        self.assertEqual(b"first part", parsed.section((1,)))
        self.assertTrue(parsed.section((2,), "") is not None)
        self.assertTrue((parsed.section((2,)) or b"").startswith(b"From: b@example.com\r\n"))
        self.assertEqual(
            b"Content-Type: message/rfc822\r\nContent-Description: forwarded\r\n\r\n",
            parsed.section((2,), "MIME"),
        )
        self.assertTrue((parsed.section((2,), "HEADER") or b"").startswith(b"From: b@example.com"))
        self.assertTrue((parsed.section((2,), "TEXT") or b"").startswith(b"--inner\r\n"))
        self.assertEqual(b"inner plain", parsed.section((2, 1)))
        self.assertEqual(b"<p>inner html</p>", parsed.section((2, 2)))
        self.assertEqual(b"Content-Type: text/html\r\n\r\n", parsed.section((2, 2), "MIME"))
        self.assertIsNone(parsed.section((2, 3)))
        self.assertIsNone(parsed.section((3,)))

    def test_leaf_has_no_subparts(self) -> None:
        """Only a message (top level or encapsulated) has a part 1 without being multipart."""
        parsed = ParsedMessage(NESTED)

        self.assertIsNone(parsed.section((1, 1)))
        self.assertIsNone(parsed.section((2, 1, 1)))
        self.assertIsNone(ParsedMessage(message("Subject: s", "", "body")).section((1, 1)))

    def test_header_kinds_need_a_message(self) -> None:
        """HEADER, TEXT and HEADER.FIELDS of a part that is not message/rfc822 are None."""
        parsed = ParsedMessage(NESTED)

        self.assertIsNone(parsed.section((1,), "HEADER"))
        self.assertIsNone(parsed.section((1,), "TEXT"))
        self.assertIsNone(parsed.section((1,), "HEADER.FIELDS", ("Subject",)))
        self.assertRaises(ValueError, parsed.section, (), "BOGUS")

    def test_header_fields(self) -> None:
        """HEADER.FIELDS picks fields by name in any case, folded lines and all, then CRLF."""
        parsed = ParsedMessage(
            message("From: a@b", "Subject: one", " two", "X-Other: x", "", "body")
        )

        self.assertEqual(
            b"Subject: one\r\n two\r\n\r\n", parsed.section((), "HEADER.FIELDS", ("subject",))
        )
        self.assertEqual(b"\r\n", parsed.section((), "HEADER.FIELDS", ("Nothing",)))

    def test_header_fields_not(self) -> None:
        """HEADER.FIELDS.NOT keeps every other field, in order, lines without a colon too."""
        parsed = ParsedMessage(
            message("From: a@b", "no colon here", "Subject: s", "To: c@d", "", "")
        )

        self.assertEqual(
            b"no colon here\r\nSubject: s\r\n\r\n",
            parsed.section((), "HEADER.FIELDS.NOT", ("FROM", "to")),
        )

    def test_nested_header_fields(self) -> None:
        """n.HEADER.FIELDS selects from the encapsulated message's header."""
        parsed = ParsedMessage(NESTED)

        self.assertEqual(
            b"Subject: inner\r\n\r\n", parsed.section((2,), "HEADER.FIELDS", ("SUBJECT",))
        )

    def test_nul_is_served_as_0x80(self) -> None:
        """NUL cannot be sent in a literal; like Dovecot we serve 0x80, keeping every size."""
        parsed = ParsedMessage(message("Subject: s", "", "a\0b"))

        self.assertEqual(b"a\x80b\r\n", parsed.section((), "TEXT"))
        self.assertEqual(19, parsed.size)


class BoundaryTests(unittest.TestCase):
    def test_unterminated_multipart(self) -> None:
        """Without a closing delimiter the last part runs to the end of the message."""
        parsed = ParsedMessage(
            message(
                "Content-Type: multipart/mixed; boundary=b", "", "--b", "", "one", "--b", "", "two"
            )
        )

        self.assertEqual(b"one", parsed.section((1,)))
        self.assertEqual(b"two\r\n", parsed.section((2,)))

    def test_delimiter_is_a_prefix(self) -> None:
        """A line that merely starts with --boundary is a delimiter (RFC 2046 5.1.1)."""
        parsed = ParsedMessage(
            message(
                "Content-Type: multipart/mixed; boundary=b",
                "",
                "--b",
                "",
                "one",
                "--bogus",
                "",
                "two",
            )
        )

        self.assertEqual(b"one", parsed.section((1,)))
        self.assertEqual(b"two\r\n", parsed.section((2,)))

    def test_longest_boundary_wins(self) -> None:
        """With nested boundaries sharing a prefix, the longest that matches is used."""
        parsed = ParsedMessage(
            message(
                "Content-Type: multipart/mixed; boundary=x",
                "",
                "--x",
                "Content-Type: multipart/alternative; boundary=xx",
                "",
                "--xx",
                "",
                "inner",
                "--xx--",
                "--x",
                "",
                "outer two",
                "--x--",
            )
        )

        self.assertEqual(b"inner", parsed.section((1, 1)))
        self.assertEqual(b"outer two", parsed.section((2,)))

    def test_delimiter_cuts_a_header_short(self) -> None:
        """An outer delimiter inside a part's header ends that part there."""
        parsed = ParsedMessage(
            message(
                "Content-Type: multipart/mixed; boundary=b",
                "",
                "--b",
                "Content-Type: text/plain",
                "--b",
                "",
                "second",
                "--b--",
            )
        )

        self.assertEqual(b"Content-Type: text/plain", parsed.section((1,), "MIME"))
        self.assertEqual(b"", parsed.section((1,)))
        self.assertEqual(b"second", parsed.section((2,)))


class LimitTests(unittest.TestCase):
    def test_depth_bomb_multipart(self) -> None:
        """A thousand nested multiparts parse; nesting stops at 100 levels."""
        depth = 1000
        lines: list[str] = []
        for level in range(depth):
            lines += [f"Content-Type: multipart/mixed; boundary=b{level}", "", f"--b{level}"]
        lines += ["", "core"]
        parsed = ParsedMessage(message(*lines))

        nesting = max_nesting(parsed.bodystructure())
        self.assertTrue(90 <= nesting <= 101, nesting)
        self.assertIsNotNone(parsed.find_part((1,) * 98))
        self.assertIsNone(parsed.find_part((1,) * 101))

    def test_depth_bomb_message(self) -> None:
        """A thousand nested message/rfc822 parts parse; nesting stops at 100 levels."""
        data = message(*(["Content-Type: message/rfc822", ""] * 1000 + ["core"]))
        parsed = ParsedMessage(data)

        self.assertTrue(max_nesting(parsed.bodystructure()) <= 101)
        self.assertEqual(len(data), parsed.size)

    def test_huge_header_is_linear(self) -> None:
        """A 2 MB folded To: with 60 000 addresses parses in well under a second or two."""
        addresses = ",\r\n ".join(f"user{i}@example.com" for i in range(60000))
        parsed = ParsedMessage(b"To: " + addresses.encode() + b"\r\nSubject: big\r\n\r\nbody\r\n")

        envelope = parsed.envelope()
        parsed.bodystructure()

        # No clock is read: a quadratic parser would not finish in the suite's time.
        self.assertEqual(60000, envelope.count(b"example.com"))

    def test_many_comments_are_linear(self) -> None:
        """Deeply nested comments in a header cost linear time."""
        value = b"(" * 100000 + b")" * 100000 + b" user@example.com"
        parsed = ParsedMessage(b"From: " + value + b"\r\n\r\n")

        self.assertIn(b'"user" "example.com"', parsed.envelope())


def max_nesting(structure: bytes) -> int:
    """Return the deepest parenthesis nesting in a BODYSTRUCTURE."""
    depth = deepest = 0
    for octet in structure:
        if octet == ord("("):
            depth += 1
            deepest = max(deepest, depth)
        elif octet == ord(")"):
            depth -= 1
    return deepest


class QuotingTests(unittest.TestCase):
    def test_nil_and_quoted(self) -> None:
        """None is NIL; plain text is quoted, with up to four backslash escapes."""
        self.assertEqual(b"NIL", imap_string(None))
        self.assertEqual(b'"plain text"', imap_string(b"plain text"))
        self.assertEqual(b'"say \\"hi\\""', imap_string('say "hi"'))
        self.assertEqual(b'""', imap_string(""))

    def test_literals(self) -> None:
        """CR, LF, 8-bit, NUL or many quotes make a literal; str goes out as UTF-8."""
        self.assertEqual(b"{4}\r\na\r\nb", imap_string(b"a\r\nb"))
        self.assertEqual(b"{5}\r\ncaf\xc3\xa9", imap_string("café"))
        self.assertEqual(b"{3}\r\na\x80b", imap_string(b"a\0b"))
        self.assertEqual(b'{5}\r\n"""""', imap_string(b'"""""'))

    def test_lists(self) -> None:
        """imap_list writes encoded items, NIL for None, and nests iterables."""
        self.assertEqual(b'(\\Seen NIL ("a" 1))', imap_list([b"\\Seen", None, [b'"a"', b"1"]]))
        self.assertEqual(b"()", imap_list([]))


class SearchTextTests(unittest.TestCase):
    def test_header_text_decodes(self) -> None:
        """header_text unfolds and decodes RFC 2047 words, joining adjacent ones."""
        parsed = ParsedMessage(
            message("Subject: =?UTF-8?Q?Gr=C3=BC?= =?UTF-8?Q?=C3=9Fe?= aus", "\tBerlin", "", "")
        )

        self.assertEqual(["Grüße aus Berlin"], parsed.header_text("subject"))
        self.assertEqual([], parsed.header_text("X-Missing"))

    def test_address_keys(self) -> None:
        """FROM matches display names and addresses, whatever their case."""
        parsed = ParsedMessage(message('From: "Alice Liddell" <alice@example.com>', "", ""))

        self.assertTrue(parsed.matches_text("FROM", "alice liddell"))
        self.assertTrue(parsed.matches_text("FROM", "ALICE@EXAMPLE"))
        self.assertFalse(parsed.matches_text("TO", "alice"))

    def test_body_is_decoded(self) -> None:
        """BODY sees decoded text parts and skips the others and the headers."""
        parsed = ParsedMessage(
            message(
                "Subject: greeting",
                'Content-Type: multipart/mixed; boundary="b"',
                "",
                "--b",
                "Content-Type: text/plain; charset=iso-8859-1",
                "Content-Transfer-Encoding: quoted-printable",
                "",
                "Gr=FC=DFe",
                "--b",
                "Content-Type: application/octet-stream",
                "",
                "secret",
                "--b--",
            )
        )

        self.assertTrue(parsed.matches_text("BODY", "grüße"))
        self.assertFalse(parsed.matches_text("BODY", "secret"))
        self.assertFalse(parsed.matches_text("BODY", "greeting"))
        self.assertTrue(parsed.matches_text("TEXT", "greeting"))
        self.assertIn("Grüße", parsed.body_text())

    def test_hostile_charset_labels(self) -> None:
        """Charset labels naming Python codecs that are not charsets decode as UTF-8."""
        for charset in ("base64", "rot13", "unicode_escape", "undefined", "idna", "x-nonsense"):
            parsed = ParsedMessage(
                message(
                    f"Subject: =?{charset}?Q?caf=C3=A9?=",
                    f"Content-Type: text/plain; charset={charset}",
                    "",
                    b"caf\xc3\xa9 \\N{BULLET}",
                )
            )

            self.assertEqual(["café"], parsed.header_text("Subject"))
            self.assertTrue(parsed.matches_text("BODY", "café \\N{BULLET}"))

    def test_header_key(self) -> None:
        """HEADER with an empty string asks only whether the field exists."""
        parsed = ParsedMessage(message("X-Flag: ", "", ""))

        self.assertTrue(parsed.matches_text("HEADER", "", "x-flag"))
        self.assertFalse(parsed.matches_text("HEADER", "", "X-Other"))
        self.assertFalse(parsed.matches_text("HEADER", "yes", "X-Flag"))


class DateAndBinaryTests(unittest.TestCase):
    def test_sent_date(self) -> None:
        """The date as written in Date:, weekday and seconds optional, time zone ignored."""
        cases = {
            "Mon, 1 Jan 2024 23:30:00 -0800": datetime.date(2024, 1, 1),
            "2 Feb 99 10:00 GMT": datetime.date(1999, 2, 2),
            "Fri, 13 Feb 2026 22:38:16 +0100 (CET)": datetime.date(2026, 2, 13),
        }
        for value, expected in cases.items():
            self.assertEqual(
                expected, ParsedMessage(message("Date: " + value, "", "")).sent_date()
            )

    def test_no_sent_date(self) -> None:
        """A missing or unreadable Date: gives None (Dovecot then uses 1 Jan 1970)."""
        self.assertIsNone(ParsedMessage(message("Subject: x", "", "")).sent_date())
        self.assertIsNone(ParsedMessage(message("Date: yesterday", "", "")).sent_date())

    def test_binary_section(self) -> None:
        """BINARY undoes base64; an unknown encoding is refused, a missing part is None."""
        parsed = ParsedMessage(
            message(
                'Content-Type: multipart/mixed; boundary="b"',
                "",
                "--b",
                "Content-Transfer-Encoding: base64",
                "",
                "AAEC",
                "--b",
                "Content-Transfer-Encoding: x-uuencode",
                "",
                "begin 644 x",
                "--b--",
            )
        )

        self.assertEqual(b"\x00\x01\x02", parsed.binary_section((1,)))
        self.assertRaises(UnknownTransferEncoding, parsed.binary_section, (2,))
        self.assertIsNone(parsed.binary_section((3,)))
