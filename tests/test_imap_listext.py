"""Tests for LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819)."""

from __future__ import annotations

from twisted.trial import unittest

from tests.test_imap_harness import ALICE, Harness, message


class ListExtendedTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        self.client = self.harness.login()
        for name in ("Foo/Bar", "Foo/Baz", "Lists/Twisted", "Tofu"):
            self.client.command(f"CREATE {name}")
        self.client.command("SUBSCRIBE Foo/Bar")
        self.client.command("SUBSCRIBE Gone")
        self.harness.deliver(message(1), folder="Tofu")

    def test_recursivematch_gives_childinfo(self) -> None:
        """A parent not subscribed but with a subscribed child gets CHILDINFO (RFC 5258 3.5)."""
        lines = self.client.lines('LIST (SUBSCRIBED RECURSIVEMATCH) "" %')

        self.assertIn(b'* LIST () "/" Foo ("CHILDINFO" ("SUBSCRIBED"))', lines)
        self.assertIn(b'* LIST (\\NonExistent \\Subscribed) "/" Gone', lines)
        self.assertFalse(any(b"Foo/Bar" in line for line in lines))

    def test_recursivematch_with_star_lists_child_and_parent(self) -> None:
        """With ``*`` the subscribed child is listed as well as the parent's CHILDINFO."""
        lines = self.client.lines('LIST (SUBSCRIBED RECURSIVEMATCH) "" "Foo*"')

        self.assertEqual(
            [
                b'* LIST () "/" Foo ("CHILDINFO" ("SUBSCRIBED"))',
                b'* LIST (\\Subscribed) "/" Foo/Bar',
                lines[-1],
            ],
            lines,
        )

    def test_several_patterns(self) -> None:
        """LIST takes a list of patterns; each name is listed once."""
        lines = self.client.lines('LIST "" (INBOX "Foo/%" "Foo/B*")')

        listed = [line.rsplit(b" ", 1)[-1] for line in lines[:-1]]
        self.assertEqual([b"INBOX", b"Foo/Bar", b"Foo/Baz"], listed)

    def test_return_status(self) -> None:
        """RETURN (STATUS ...) follows each selectable mailbox with its STATUS (RFC 5819)."""
        lines = self.client.lines('LIST "" "To*" RETURN (CHILDREN STATUS (MESSAGES UNSEEN))')

        self.assertEqual(
            [
                b'* LIST (\\HasNoChildren) "/" Tofu',
                b"* STATUS Tofu (MESSAGES 1 UNSEEN 1)",
                b"a8 OK LIST completed",
            ],
            lines,
        )

    def test_no_status_for_nonexistent(self) -> None:
        """A \\NonExistent name gets no STATUS response."""
        lines = self.client.lines('LIST (SUBSCRIBED) "" "Gone" RETURN (STATUS (MESSAGES))')

        self.assertEqual([b'* LIST (\\NonExistent \\Subscribed) "/" Gone', lines[-1]], lines)

    def test_bad_options(self) -> None:
        """Unknown options, RECURSIVEMATCH alone, and bad STATUS items are BAD."""
        for command in (
            'LIST (FOO) "" *',
            'LIST (RECURSIVEMATCH REMOTE) "" *',
            'LIST "" * RETURN (STATUS (BOGUS))',
            'LIST "" * RETURN (STATUS ())',
            'LIST "" * RETURN (FOO)',
        ):
            self.assertIn(b" BAD ", self.client.tagged(command), command)

    def test_thunderbird_subscribed_special_use(self) -> None:
        """Thunderbird's ``list (subscribed) "" "*" return (special-use)`` still works."""
        lines = self.client.lines('list (subscribed) "" "*" return (special-use)')

        self.assertIn(b'* LIST (\\Subscribed \\Drafts) "/" Drafts', lines)
        self.assertIn(b'* LIST (\\Subscribed) "/" Foo/Bar', lines)
        self.assertTrue(lines[-1].endswith(b"OK LIST completed"))

    def test_special_use_recursive(self) -> None:
        """SPECIAL-USE with RECURSIVEMATCH gives a special-use folder's parent CHILDINFO."""
        account = self.harness.store.account(ALICE)
        account.set_special_use("Lists/Twisted", "\\Archive")

        lines = self.client.lines('LIST (SPECIAL-USE RECURSIVEMATCH) "" "L*"')

        self.assertEqual(b'* LIST () "/" Lists ("CHILDINFO" ("SPECIAL-USE"))', lines[0])
        self.assertEqual(b'* LIST (\\Archive) "/" Lists/Twisted', lines[1])
