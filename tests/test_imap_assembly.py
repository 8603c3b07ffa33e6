"""Tests for mailsuite.imap.assembly: commands gathered from lines and literals, within limits."""

from __future__ import annotations

from twisted.trial import unittest

from mailsuite.imap.assembly import (
    COMMAND_TOO_BIG,
    TOO_BIG,
    AssemblyLimits,
    CommandAssembler,
    Complete,
    HangUp,
    ReadLiteral,
    Refuse,
)

LIMITS = AssemblyLimits(preauth_literal=10, literal=100, command=300, message=1000)


class AssemblerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.assembler = CommandAssembler(LIMITS)

    def test_single_line(self) -> None:
        """A line without a literal marker is a whole command."""
        self.assertEqual(Complete([b"a NOOP"]), self.assembler.line(b"a NOOP", False))
        self.assertFalse(self.assembler.in_progress)

    def test_literals_between_lines(self) -> None:
        """Parts alternate: line, literal, line, literal, line."""
        a = self.assembler

        self.assertEqual(ReadLiteral(3, True), a.line(b"a LOGIN {3}", True))
        a.literal(b"bob")
        self.assertEqual(ReadLiteral(2, False), a.line(b" {2+}", True))
        a.literal(b"pw")

        self.assertEqual(
            Complete([b"a LOGIN {3}", b"bob", b" {2+}", b"pw", b""]), a.line(b"", True)
        )

    def test_preauth_literal_limit_synchronizing(self) -> None:
        """Before login a large ``{n}`` is refused at once; the client sends nothing more."""
        step = self.assembler.line(b"a LOGIN {11}", False)

        self.assertEqual(Refuse(b"a", TOO_BIG), step)
        self.assertFalse(self.assembler.in_progress)

    def test_preauth_literal_limit_non_synchronizing(self) -> None:
        """Before login a large ``{n+}`` is already on its way: hang up."""
        step = self.assembler.line(b"a LOGIN {11+}", False)

        self.assertIsInstance(step, HangUp)

    def test_authenticated_non_synchronizing_over_limit_is_discarded(self) -> None:
        """After login a large ``{n+}`` is read without keeping it, then refused."""
        a = self.assembler

        self.assertEqual(
            ReadLiteral(101, False, keep=False), a.line(b"a SEARCH TEXT {101+}", True)
        )
        a.literal(None)

        self.assertEqual(Refuse(b"a", TOO_BIG), a.line(b"", True))

    def test_append_may_carry_a_message(self) -> None:
        """APPEND's literal may reach the message size limit, others only ``literal``."""
        self.assertEqual(ReadLiteral(1000, True), self.assembler.line(b"a APPEND x {1000}", True))
        self.assembler.reset()

        self.assertEqual(Refuse(b"a", TOO_BIG), self.assembler.line(b"a APPEND x {1001}", True))
        self.assertEqual(Refuse(b"b", TOO_BIG), self.assembler.line(b"b SEARCH {101}", True))

    def test_append_message_larger_than_a_command(self) -> None:
        """An APPEND whose message passes ``command`` (but not ``message``) completes."""
        a = self.assembler
        a.line(b"a APPEND x {900}", True)
        a.literal(b"m" * 900)

        self.assertEqual(Complete([b"a APPEND x {900}", b"m" * 900, b""]), a.line(b"", True))

    def test_total_command_size(self) -> None:
        """Many literals that each fit still may not make a command over ``command``."""
        a = self.assembler
        for _ in range(2):
            step = a.line(b"a X {100}", True)
            self.assertIsInstance(step, ReadLiteral)
            a.literal(b"x" * 100)

        self.assertEqual(Refuse(b"a", COMMAND_TOO_BIG), a.line(b"a X {100}", True))

    def test_refusal_uses_star_for_a_bad_tag(self) -> None:
        """A refusal never echoes a tag that is not one."""
        step = self.assembler.line(b"a\x01b LOGIN {11}", False)

        self.assertEqual(Refuse(b"*", TOO_BIG), step)
