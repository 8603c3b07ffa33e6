"""The folder index: sizes, dates, modseqs and keywords that survive restarts."""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from mailsuite.store import Store
from mailsuite.store.index import FILENAME

ADDRESS = "bob@example.test"


class IndexTests(unittest.TestCase):
    def setUp(self) -> None:
        self.root = self.mktemp()

    def inbox(self):  # type: ignore[no-untyped-def]
        return Store(self.root, reactor).account(ADDRESS).folder("INBOX", create_inbox=True)

    def test_modseq_grows_with_every_change_and_survives_restart(self) -> defer.Deferred:
        """New mail, flag changes and expunges each raise HIGHESTMODSEQ, kept on restart."""

        async def check() -> None:
            inbox = self.inbox()
            start = inbox.highest_modseq
            first = await inbox.append(b"Subject: 1\r\n\r\n")
            second = await inbox.append(b"Subject: 2\r\n\r\n")
            self.assertLess(start, first.modseq)
            self.assertLess(first.modseq, second.modseq)

            inbox.set_flags(first, ["\\Seen"])
            self.assertEqual(inbox.highest_modseq, first.modseq)
            inbox.expunge([second.uid])
            after_expunge = inbox.highest_modseq

            reopened = self.inbox()

            self.assertEqual(after_expunge, reopened.highest_modseq)
            self.assertEqual(first.modseq, reopened.get(first.uid).modseq)  # type: ignore[union-attr]
            self.assertEqual([second.uid], reopened.vanished_since(first.modseq))
            self.assertEqual([], reopened.vanished_since(after_expunge))

        return defer.ensureDeferred(check())

    def test_flag_change_by_another_program_gets_a_modseq(self) -> defer.Deferred:
        """A rename done by mutt is a change too, with a new modseq."""

        async def check() -> None:
            inbox = self.inbox()
            message = await inbox.append(b"Subject: 1\r\n\r\n")
            before = message.modseq
            os.rename(
                os.path.join(inbox.path, message.filename),
                os.path.join(inbox.path, "cur", message.key + ":2,F"),
            )

            inbox.refresh(force=True)

            self.assertLess(before, message.modseq)
            self.assertEqual(["\\Flagged"], inbox.flags_of(message))

        return defer.ensureDeferred(check())

    def test_lost_index_is_rebuilt_with_larger_modseqs(self) -> defer.Deferred:
        """A deleted index comes back from the files; modseqs never go backwards."""

        async def check() -> None:
            inbox = self.inbox()
            message = await inbox.append(b"Subject: 1\r\n\r\n", "S")
            highest = inbox.highest_modseq
            os.unlink(os.path.join(inbox.path, FILENAME))

            reopened = self.inbox()

            self.assertLess(highest, reopened.highest_modseq)
            self.assertEqual(message.uid, reopened.messages[0].uid)
            self.assertEqual("S", reopened.messages[0].letters)

        return defer.ensureDeferred(check())

    def test_damaged_index_is_rebuilt(self) -> defer.Deferred:
        """Garbage in place of the index is replaced, not fatal."""

        async def check() -> None:
            inbox = self.inbox()
            await inbox.append(b"Subject: 1\r\n\r\n")
            for suffix in ("-wal", "-shm"):
                path = os.path.join(inbox.path, FILENAME + suffix)
                if os.path.exists(path):
                    os.unlink(path)
            with open(os.path.join(inbox.path, FILENAME), "wb") as f:
                f.write(b"this is not sqlite" * 100)

            reopened = self.inbox()

            self.assertEqual(1, len(reopened.messages))

        return defer.ensureDeferred(check())

    def test_foreign_sizes_are_computed_once_and_kept(self) -> None:
        """A file without a size in its name is read once; the size is then indexed."""
        inbox = self.inbox()
        with open(os.path.join(inbox.path, "new", "1.M1P1.other"), "wb") as f:
            f.write(b"Subject: x\n\nbody\n")
        inbox.refresh(force=True)
        self.assertEqual(20, inbox.wire_size(inbox.messages[0]))

        reopened = self.inbox()

        # Known from the index before anything asks for it or reads the file.
        self.assertEqual(20, reopened.messages[0]._wire_size)

    def test_blobs_are_kept_and_dropped_with_the_message(self) -> defer.Deferred:
        """Cached derived data (ENVELOPE) persists and goes away on expunge."""

        async def check() -> None:
            inbox = self.inbox()
            message = await inbox.append(b"Subject: 1\r\n\r\n")
            inbox.keep(message, "envelope", b"(NIL)")

            self.assertEqual(b"(NIL)", self.inbox().cached(message, "envelope"))
            inbox.expunge([message.uid])
            self.assertIsNone(self.inbox().cached(message, "envelope"))

        return defer.ensureDeferred(check())


class KeywordTests(unittest.TestCase):
    def test_keywords_are_letters_with_a_dovecot_keywords_map(self) -> defer.Deferred:
        """$Junk and $label1 become lowercase letters named in dovecot-keywords."""
        root = self.mktemp()

        async def check() -> None:
            inbox = Store(root, reactor).account(ADDRESS).folder("INBOX", create_inbox=True)
            message = await inbox.append(b"Subject: 1\r\n\r\n")

            inbox.set_flags(message, ["\\Seen", "$Junk", "$label1"])

            self.assertEqual("Sab", message.letters)
            with open(os.path.join(inbox.path, "dovecot-keywords")) as f:
                self.assertEqual("0 $Junk\n1 $label1\n", f.read())
            reopened = Store(root, reactor).account(ADDRESS).folder("INBOX")
            flags = reopened.flags_of(reopened.messages[0])
            self.assertEqual(["\\Seen", "$Junk", "$label1"], flags)
            reopened.set_flags(reopened.messages[0], ["$junk"])
            self.assertEqual("a", reopened.messages[0].letters)

        return defer.ensureDeferred(check())

    def test_unmapped_letters_survive_and_room_runs_out(self) -> defer.Deferred:
        """Letters with no keyword name stay; a 27th keyword is not stored."""
        root = self.mktemp()

        async def check() -> None:
            inbox = Store(root, reactor).account(ADDRESS).folder("INBOX", create_inbox=True)
            message = await inbox.append(b"Subject: 1\r\n\r\n", "z")
            names = [f"k{n}" for n in range(26)]

            inbox.set_flags(message, names)

            self.assertFalse(inbox.keywords.has_room())
            self.assertIn("z", message.letters)
            self.assertEqual(26, len(message.letters))

        return defer.ensureDeferred(check())
