"""Tests for MULTIAPPEND (RFC 3502) and APPEND of a literal8 (RFC 3516 4.4)."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from mailsuite.store import TemporaryFailure
from tests.test_imap_harness import ALICE, Harness, message


class MultiAppendTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        self.client = self.harness.login()
        self.folder = self.harness.store.account(ALICE).folder("Drafts")

    def append(self, *messages: bytes) -> bytes:
        parts = [b"{%d+}\r\n%s" % (len(m), m) for m in messages]
        return self.client.send(b"t APPEND Drafts (\\Seen) " + b" ".join(parts) + b"\r\n")

    def test_several_messages_in_one_append(self) -> None:
        """All messages are stored in order; APPENDUID names them all."""
        out = self.append(message(1), message(2), message(3))

        uidvalidity = self.folder.uidvalidity
        self.assertEqual(b"t OK [APPENDUID %d 1:3] APPEND completed\r\n" % uidvalidity, out)
        self.assertEqual(3, len(self.folder.messages))
        self.assertEqual(["S", "", ""], [m.letters for m in self.folder.messages])

    def test_failure_stores_nothing(self) -> None:
        """When one message cannot be stored, the ones already stored are removed."""
        real = self.folder.append
        calls: list[int] = []

        def flaky(*args: Any, **kw: Any) -> Any:
            calls.append(1)
            if len(calls) == 2:
                raise TemporaryFailure("disk full")
            return real(*args, **kw)

        self.folder.append = flaky  # type: ignore[method-assign]

        out = self.append(message(1), message(2))

        self.assertIn(b"t NO [UNAVAILABLE]", out)
        self.assertEqual([], self.folder.messages)

    def test_empty_message_in_the_list_is_refused(self) -> None:
        """An empty literal anywhere refuses the whole command before storing any."""
        out = self.append(message(1), b"")

        self.assertIn(b"t NO [CANNOT]", out)
        self.assertEqual([], self.folder.messages)

    def test_literal8(self) -> None:
        """APPEND takes ``~{n}`` and keeps the octets, NUL included."""
        data = b"Subject: bin\r\n\r\nA\x00B\r\n"

        out = self.client.send(b"t APPEND Drafts ~{%d+}\r\n%s\r\n" % (len(data), data))

        self.assertIn(b"t OK [APPENDUID", out)
        self.assertEqual(data, self.folder.read(self.folder.messages[0]))
