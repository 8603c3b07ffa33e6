"""Tests for mailsuite.imap.parser: the IMAP command grammar, alone."""

from __future__ import annotations

import calendar

from twisted.trial import unittest

from mailsuite.imap.parser import (
    MAX_DEPTH,
    STAR,
    And,
    FetchItem,
    Key,
    Not,
    Or,
    ParseError,
    Reader,
    Section,
    SequenceSet,
    format_uid_set,
    literal_marker,
    parse_date_time,
    parse_fetch_items,
    parse_search,
    split_tag,
)


def reader(text: bytes, *more: bytes) -> Reader:
    return Reader([text, *more])


class TokenTests(unittest.TestCase):
    def test_tag_stops_at_space_and_rejects_plus(self) -> None:
        """A tag is astring characters without "+" (RFC 3501 9, ``tag``)."""
        r = reader(b"a1.x] NOOP")

        self.assertEqual(b"a1.x]", r.tag())
        self.assertRaises(ParseError, reader(b"+ NOOP").tag)
        self.assertRaises(ParseError, reader(b" NOOP").tag)

    def test_atom_excludes_specials(self) -> None:
        """Atoms end at atom-specials such as "(", "{", '"' and "]"."""
        self.assertEqual(b"abc", reader(b"abc(def").atom())
        self.assertEqual(b"x", reader(b'x"y').atom())
        self.assertEqual(b"a", reader(b"a]b").atom())

    def test_astring_forms(self) -> None:
        """An astring is an atom (with "]" allowed), a quoted string or a literal."""
        self.assertEqual(b"INBOX]x", reader(b"INBOX]x").astring())
        self.assertEqual(b'a "b" \\c', reader(b'"a \\"b\\" \\\\c"').astring())
        r = reader(b"{5}", b"hello", b" rest")
        self.assertEqual(b"hello", r.astring())
        r.space()
        self.assertEqual(b"rest", r.atom())
        self.assertTrue(r.at_end())

    def test_non_synchronizing_literal(self) -> None:
        """``{n+}`` (RFC 7888) is read like ``{n}``."""
        r = reader(b"{3+}", b"a\r\nb"[:3], b"")

        self.assertEqual(b"a\r\n", r.string())
        r.end()

    def test_quoted_string_errors(self) -> None:
        """Unterminated strings, bad escapes and NUL are syntax errors."""
        self.assertRaises(ParseError, reader(b'"abc').string)
        self.assertRaises(ParseError, reader(b'"a\\bc"').string)
        self.assertRaises(ParseError, reader(b'"a\x00c"').string)

    def test_quoted_string_allows_utf8(self) -> None:
        """8-bit text in quoted strings is taken as sent (clients send UTF-8 SEARCH strings)."""
        self.assertEqual("Grüße".encode(), reader('"Grüße"'.encode()).string())

    def test_literal_not_at_end_of_line_is_an_error(self) -> None:
        """A literal marker must end its line; otherwise it is not a literal."""
        self.assertRaises(ParseError, reader(b"{5} x").string)
        self.assertRaises(ParseError, reader(b"{5}x{5}", b"hello", b"").string)

    def test_number_bounds(self) -> None:
        """Numbers are 32-bit unsigned; nz-number excludes zero."""
        self.assertEqual(4294967295, reader(b"4294967295").number())
        self.assertRaises(ParseError, reader(b"4294967296").number)
        self.assertRaises(ParseError, reader(b"0").nz_number)
        self.assertRaises(ParseError, reader(b"99999999999999999999").number)

    def test_end_rejects_trailing_text(self) -> None:
        """Text after the last argument is a syntax error."""
        r = reader(b"NOOP x")
        r.atom()

        self.assertRaises(ParseError, r.end)

    def test_nesting_is_bounded(self) -> None:
        """Parenthesised lists deeper than MAX_DEPTH are refused, not recursed into."""
        r = reader(b"(" * (MAX_DEPTH + 1))

        with self.assertRaises(ParseError):
            for _ in range(MAX_DEPTH + 1):
                r.enter()

    def test_flags(self) -> None:
        """Flag lists hold system flags and keywords; STORE also takes bare flags."""
        self.assertEqual(["\\Seen", "$Label1"], reader(b"(\\Seen $Label1)").flag_list())
        self.assertEqual([], reader(b"()").flag_list())
        r = reader(b"\\Seen \\Deleted")
        self.assertEqual(["\\Seen", "\\Deleted"], r.flags_or_list())

    def test_split_tag(self) -> None:
        """The first line's tag and command name, UID commands included; bad tags become *."""
        self.assertEqual((b"a1", "APPEND"), split_tag(b"a1 append INBOX {10}"))
        self.assertEqual((b"a2", "UID FETCH"), split_tag(b"a2 uid fetch 1 FLAGS"))
        self.assertEqual((b"*", "X"), split_tag(b"a+b x"))
        self.assertEqual((b"a", ""), split_tag(b"a"))

    def test_literal_marker(self) -> None:
        """``{n}`` and ``{n+}`` at the very end of a line, with up to 10 digits."""
        self.assertEqual((5, True), literal_marker(b"a LOGIN {5}"))
        self.assertEqual((5, False), literal_marker(b"a LOGIN {5+}"))
        self.assertIsNone(literal_marker(b"a LOGIN {5} "))
        self.assertIsNone(literal_marker(b"a LOGIN {12345678901}"))


class SequenceSetTests(unittest.TestCase):
    def test_parse(self) -> None:
        """Numbers, ranges and ``*`` separated by commas."""
        self.assertEqual(
            SequenceSet(((1, 1), (3, 5), (7, STAR), (STAR, STAR))),
            reader(b"1,3:5,7:*,*").sequence_set(),
        )

    def test_resolve_orders_and_merges(self) -> None:
        """Ranges in either order are the same range; overlaps merge (RFC 3501 6.4.8)."""
        numbers = reader(b"5:3,4,9:8,10").sequence_set()

        self.assertEqual([(3, 5), (8, 10)], numbers.resolve(20))

    def test_star_above_largest(self) -> None:
        """``n:*`` with n above the largest number means ``largest:n``."""
        self.assertEqual([(44, 45)], reader(b"45:*").sequence_set().resolve(44))

    def test_huge_range_stays_a_range(self) -> None:
        """``1:4294967295`` is one pair, not four billion numbers."""
        numbers = reader(b"1:4294967295").sequence_set()

        self.assertEqual([(1, 4294967295)], numbers.resolve(3))

    def test_zero_is_invalid(self) -> None:
        """Message numbers and UIDs start at 1."""
        self.assertRaises(ParseError, reader(b"0:5").sequence_set)

    def test_format_uid_set(self) -> None:
        """COPYUID sets keep the order given and compress runs."""
        self.assertEqual("4:6,9,2", format_uid_set([4, 5, 6, 9, 2]))
        self.assertEqual("", format_uid_set([]))


class DateTests(unittest.TestCase):
    def test_date(self) -> None:
        """SEARCH dates, quoted or not, month names in any case."""
        self.assertEqual((2024, 2, 1), reader(b"1-feb-2024").date())
        self.assertEqual((2024, 2, 29), reader(b'"29-Feb-2024"').date())
        self.assertRaises(ParseError, reader(b"30-Feb-2024").date)
        self.assertRaises(ParseError, reader(b"1-Foo-2024").date)

    def test_date_time(self) -> None:
        """APPEND's date-time with its zone, to epoch seconds."""
        expected = calendar.timegm((2024, 7, 17, 9, 44, 25)) * 1.0

        self.assertEqual(expected, parse_date_time("17-Jul-2024 02:44:25 -0700"))
        self.assertEqual(expected, parse_date_time(" 9-Jul-2024 09:44:25 +0000") + 8 * 86400)
        self.assertRaises(ParseError, parse_date_time, "17-Jul-2024 25:44:25 -0700")
        self.assertRaises(ParseError, parse_date_time, "17-Jul-2024")


class FetchItemTests(unittest.TestCase):
    def test_macros(self) -> None:
        """ALL, FAST and FULL expand as RFC 3501 6.4.5 says."""
        self.assertEqual(
            ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
            [i.name for i in parse_fetch_items(reader(b"ALL"))],
        )
        self.assertEqual(
            ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
            [i.name for i in parse_fetch_items(reader(b"full"))],
        )

    def test_thunderbird_header_fetch(self) -> None:
        """Thunderbird's header-field fetch parses into one BODY.PEEK section."""
        items = parse_fetch_items(
            reader(b"(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject)])")
        )

        self.assertEqual(
            [
                FetchItem("UID"),
                FetchItem("RFC822.SIZE"),
                FetchItem("FLAGS"),
                FetchItem(
                    "BODY[]",
                    Section((), "HEADER.FIELDS", ("FROM", "TO", "SUBJECT")),
                    peek=True,
                ),
            ],
            items,
        )

    def test_sections(self) -> None:
        """Part numbers, part texts and MIME, with partial ranges."""
        items = parse_fetch_items(
            reader(b"(BODY[] BODY[1.2] BODY[2.MIME] BODY[1.HEADER] BODY.PEEK[TEXT]<0.2048>)")
        )

        self.assertEqual(
            [
                FetchItem("BODY[]", Section()),
                FetchItem("BODY[]", Section((1, 2))),
                FetchItem("BODY[]", Section((2,), "MIME")),
                FetchItem("BODY[]", Section((1,), "HEADER")),
                FetchItem("BODY[]", Section((), "TEXT"), peek=True, partial=(0, 2048)),
            ],
            items,
        )

    def test_seen_rules(self) -> None:
        """BODY[...], RFC822 and RFC822.TEXT set \\Seen; PEEK and RFC822.HEADER do not."""
        items = parse_fetch_items(
            reader(b"(BODY[] BODY.PEEK[] RFC822 RFC822.HEADER RFC822.TEXT BODY)")
        )

        self.assertEqual([True, False, True, False, True, False], [i.sets_seen for i in items])

    def test_bad_items(self) -> None:
        """Unknown items, MIME without a part and empty field lists are syntax errors."""
        for text in (
            b"BOGUS",
            b"BODY[MIME]",
            b"BODY[HEADER.FIELDS ()]",
            b"BODY[1.]",
            b"BODY[0]",
            b"BODY.PEEK",
            b"BODY[]<5>",
            b"BODY[]<1.0>",
            b"(FLAGS",
        ):
            with self.subTest(text=text):
                self.assertRaises(ParseError, parse_fetch_items, reader(text))


class SearchTests(unittest.TestCase):
    def test_keys_and_implicit_and(self) -> None:
        """Several keys are an AND; arguments are parsed by key."""
        program = parse_search(reader(b'SEEN LARGER 5000 SUBJECT "x y" UID 1:* 2,4'))

        self.assertIsNone(program.charset)
        self.assertEqual(
            And(
                (
                    Key("SEEN"),
                    Key("LARGER", 5000),
                    Key("SUBJECT", b"x y"),
                    Key("UID", SequenceSet(((1, STAR),))),
                    Key("SEQUENCE", SequenceSet(((2, 2), (4, 4)))),
                )
            ),
            program.key,
        )

    def test_not_or_and_parentheses(self) -> None:
        """NOT, OR and parenthesised groups nest."""
        program = parse_search(reader(b"OR (FROM a TO b) NOT DELETED"))

        self.assertEqual(
            Or(And((Key("FROM", b"a"), Key("TO", b"b"))), Not(Key("DELETED"))),
            program.key,
        )

    def test_charset_and_literal(self) -> None:
        """CHARSET comes first; strings may be literals."""
        program = parse_search(reader(b"CHARSET UTF-8 SUBJECT {6}", "Grüß".encode(), b""))

        self.assertEqual("UTF-8", program.charset)
        self.assertEqual(Key("SUBJECT", "Grüß".encode()), program.key)

    def test_header_and_dates(self) -> None:
        """HEADER takes a field and a string; date keys take dates."""
        program = parse_search(reader(b'HEADER Message-ID "" SENTSINCE 1-Jan-2010'))

        self.assertEqual(
            And((Key("HEADER", ("Message-ID", b"")), Key("SENTSINCE", (2010, 1, 1)))),
            program.key,
        )

    def test_deep_nesting_is_refused(self) -> None:
        """NOT NOT NOT ... beyond MAX_DEPTH is a syntax error, not a stack overflow."""
        self.assertRaises(ParseError, parse_search, reader(b"NOT " * 10000 + b"ALL"))
        self.assertRaises(ParseError, parse_search, reader(b"(" * 10000 + b"ALL"))

    def test_bad_keys(self) -> None:
        """Unknown keys, missing arguments and trailing junk are syntax errors."""
        for text in (b"BOGUS", b"SUBJECT", b"LARGER x", b"OR SEEN", b"SEEN )", b"()"):
            with self.subTest(text=text):
                self.assertRaises(ParseError, parse_search, reader(text))
