"""Tests for LIST, LSUB, CREATE, DELETE, RENAME, SUBSCRIBE, STATUS and NAMESPACE."""

from __future__ import annotations

import os

from twisted.trial import unittest

from mailsuite.imap.commands.listing import Pattern
from tests.test_imap_harness import ALICE, Harness, message


class PatternTests(unittest.TestCase):
    def test_star_and_percent(self) -> None:
        """``*`` crosses the delimiter, ``%`` does not (RFC 3501 6.3.8)."""
        self.assertTrue(Pattern("*").matches("a/b/c"))
        self.assertTrue(Pattern("%").matches("abc"))
        self.assertFalse(Pattern("%").matches("a/b"))
        self.assertTrue(Pattern("a/%").matches("a/b"))
        self.assertFalse(Pattern("a/%").matches("a/b/c"))
        self.assertTrue(Pattern("a*c").matches("a/b/c"))
        self.assertTrue(Pattern("a%c").matches("abbc"))
        self.assertFalse(Pattern("a%c").matches("ab/c"))
        self.assertTrue(Pattern("Sent").matches("Sent"))
        self.assertFalse(Pattern("Sent").matches("Sent/2024"))
        self.assertTrue(Pattern("%*%").matches("x/y"))

    def test_pathological_pattern_is_fast(self) -> None:
        """A pattern with thousands of wildcards is matched without backtracking.

        No clock is read: a backtracking matcher would not finish this call
        (5,000 stars against 200 letters), so the test simply completing is
        the check, and the answer must still be right.
        """
        pattern = Pattern("*a" * 5000 + "b")

        self.assertFalse(pattern.matches("a" * 200))
        self.assertTrue(Pattern("*a" * 100 + "*b").matches("a" * 200 + "b"))


class ListTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        self.client = self.harness.login()

    def test_thunderbird_subscribed_special_use(self) -> None:
        """Thunderbird's first LIST gets the subscribed defaults with their special use."""
        self.assertEqual(
            b'* LIST (\\Subscribed \\Drafts) "/" Drafts\r\n'
            b'* LIST (\\Subscribed \\Junk) "/" Junk\r\n'
            b'* LIST (\\Subscribed \\Sent) "/" Sent\r\n'
            b'* LIST (\\Subscribed \\Trash) "/" Trash\r\n'
            b"a2 OK LIST completed\r\n",
            self.client.command('list (subscribed) "" "*" return (special-use)'),
        )

    def test_inbox(self) -> None:
        """LIST "" "INBOX" names INBOX with its children attribute; inbox matches too."""
        expected = b'* LIST (\\HasNoChildren) "/" INBOX\r\n'

        self.assertEqual(
            expected + b"a2 OK LIST completed\r\n", self.client.command('list "" "INBOX"')
        )
        self.assertEqual(
            expected + b"a3 OK LIST completed\r\n", self.client.command('LIST "" inbox')
        )

    def test_plain_list_has_children_and_special_use(self) -> None:
        """Plain LIST carries \\HasChildren/\\HasNoChildren and special-use attributes."""
        self.client.command("CREATE Archive/2024")

        self.assertEqual(
            [
                b'* LIST (\\HasNoChildren) "/" INBOX',
                b'* LIST (\\HasChildren) "/" Archive',
                b'* LIST (\\HasNoChildren) "/" Archive/2024',
                b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
                b'* LIST (\\HasNoChildren \\Junk) "/" Junk',
                b'* LIST (\\HasNoChildren \\Sent) "/" Sent',
                b'* LIST (\\HasNoChildren \\Trash) "/" Trash',
                b"a3 OK LIST completed",
            ],
            self.client.lines('LIST "" *'),
        )

    def test_percent_and_reference(self) -> None:
        """``%`` lists one level; the reference is prefixed to the pattern."""
        self.client.command("CREATE Archive/2024/Q1")

        self.assertEqual(
            [b'* LIST (\\HasChildren) "/" Archive/2024', b"a3 OK LIST completed"],
            self.client.lines('LIST "Archive/" %'),
        )

    def test_missing_parent_is_noselect(self) -> None:
        """A level with folders below it but no folder of its own is \\Noselect."""
        account = self.harness.store.account(ALICE)
        account.create_folder("a/b")
        account.delete_folder("a")

        lines = self.client.lines('LIST "" "a*"')

        self.assertEqual(
            [b'* LIST (\\Noselect \\HasChildren) "/" a', b'* LIST (\\HasNoChildren) "/" a/b'],
            lines[:-1],
        )

    def test_delimiter_query(self) -> None:
        """An empty pattern returns the delimiter and root (RFC 3501 6.3.8)."""
        self.assertEqual(
            b'* LIST (\\Noselect) "/" ""\r\na2 OK LIST completed\r\n',
            self.client.command('LIST "" ""'),
        )

    def test_unicode_names_in_modified_utf7(self) -> None:
        """Names go out in modified UTF-7 and come back in it (RFC 3501 5.1.3)."""
        self.assertTrue(self.client.tagged("CREATE Entw&APw-rfe").startswith(b"a2 OK"))

        self.assertIn(b'"/" Entw&APw-rfe\r\n', self.client.command('LIST "" Entw*'))
        self.assertIn("Entwürfe", self.harness.store.account(ALICE).folder_names())

    def test_malformed_utf7_is_refused(self) -> None:
        """A broken modified UTF-7 name is NO [CANNOT], raw 8-bit text BAD; never a crash."""
        for name in ("&Jjo", '"a&-&"', "&A-", "&2D3-"):
            with self.subTest(name=name):
                self.assertIn(b" NO [CANNOT]", self.client.tagged(f"CREATE {name}"))
        self.assertIn(b" NO [CANNOT]", self.client.tagged('LIST "" "&Jjo"'))
        self.assertIn(b" BAD ", self.client.tagged("CREATE f\xfcr".encode("latin-1")))
        self.assertIn(b" NO [CANNOT]", self.client.tagged('CREATE "f\xfcr"'.encode("latin-1")))

    def test_subscribed_selection_shows_nonexistent(self) -> None:
        """LIST (SUBSCRIBED) lists subscribed names that no longer exist as \\NonExistent."""
        self.client.command("SUBSCRIBE Gone")

        lines = self.client.lines('LIST (SUBSCRIBED) "" "G*"')

        self.assertEqual([b'* LIST (\\NonExistent \\Subscribed) "/" Gone'], lines[:-1])

    def test_return_options(self) -> None:
        """RETURN (CHILDREN SUBSCRIBED) adds what it asks for; RECURSIVEMATCH alone is BAD."""
        lines = self.client.lines('LIST "" "Sent" RETURN (CHILDREN SUBSCRIBED)')

        self.assertEqual([b'* LIST (\\Subscribed \\HasNoChildren) "/" Sent'], lines[:-1])
        self.assertIn(b"BAD", self.client.tagged('LIST (RECURSIVEMATCH) "" *'))
        self.assertIn(b"BAD", self.client.tagged('LIST (BOGUS) "" *'))

    def test_special_use_selection(self) -> None:
        """LIST (SPECIAL-USE) lists only folders with a special use."""
        lines = self.client.lines('LIST (SPECIAL-USE) "" *')

        self.assertEqual(4, len(lines) - 1)

    def test_lsub(self) -> None:
        """LSUB lists subscriptions; a parent reached through ``%`` is \\Noselect."""
        self.client.command("CREATE Lists/python")
        self.client.command("SUBSCRIBE Lists/python")

        self.assertEqual(
            [b'* LSUB () "/" Lists/python', b"a4 OK LSUB completed"],
            self.client.lines('LSUB "" "Lists/*"'),
        )
        self.assertIn(b'* LSUB (\\Noselect) "/" Lists\r\n', self.client.command('LSUB "" %'))


class MailboxCommandTests(unittest.TestCase):
    def setUp(self) -> None:
        self.harness = Harness(self)
        self.client = self.harness.login()
        self.account = self.harness.store.account(ALICE)

    def test_create(self) -> None:
        """CREATE makes the folder and its parents; a trailing delimiter is dropped."""
        self.assertEqual(b"a2 OK CREATE completed", self.client.tagged("CREATE Work/Projects/"))

        self.assertIn("Work/Projects", self.account.folder_names())
        self.assertEqual(
            b"a3 NO [ALREADYEXISTS] Mailbox already exists", self.client.tagged("CREATE Work")
        )
        self.assertIn(b"NO [ALREADYEXISTS]", self.client.tagged("CREATE inbox"))

    def test_create_invalid_names(self) -> None:
        """Empty, "." and ".." levels are NO [CANNOT]; nothing lands outside the account.

        mbsync refuses to sync an account whose LIST shows a ".." level.
        """
        for name in ('"a//b"', '"/x"', '""', '"a/../../b"', '"../x"', '"."', '"x/./y"'):
            with self.subTest(name=name):
                self.assertIn(b" NO [CANNOT]", self.client.tagged(f"CREATE {name}"))
        for name in ('"x\\\\y"',):
            with self.subTest(name=name):
                self.client.tagged(f"CREATE {name}")

        root = self.harness.store.root
        self.assertEqual(["example.com"], os.listdir(root))
        self.assertEqual(["alice"], os.listdir(os.path.join(root, "example.com")))

    def test_delete(self) -> None:
        """DELETE removes a folder; INBOX and missing folders are refused."""
        self.client.command("CREATE Old")

        self.assertEqual(b"a3 OK DELETE completed", self.client.tagged("DELETE Old"))
        self.assertIn(b"NO [NONEXISTENT]", self.client.tagged("DELETE Old"))
        self.assertIn(b"NO [CANNOT]", self.client.tagged("DELETE INBOX"))

    def test_rename(self) -> None:
        """RENAME moves a folder with its children and subscriptions."""
        self.client.command("CREATE A/B")
        self.client.command("SUBSCRIBE A/B")

        self.assertEqual(b"a4 OK RENAME completed", self.client.tagged("RENAME A C"))
        self.assertIn("C/B", self.account.folder_names())
        self.assertIn("C/B", self.account.subscriptions())
        self.assertIn(b"NO [NONEXISTENT]", self.client.tagged("RENAME A D"))
        self.assertIn(b"NO [ALREADYEXISTS]", self.client.tagged("RENAME C Sent"))

    def test_rename_inbox_moves_messages(self) -> None:
        """RENAME INBOX moves its messages to the new folder and leaves INBOX empty."""
        self.harness.deliver(message(1))

        self.assertIn(b"OK", self.client.tagged("RENAME INBOX Old"))
        self.assertIn(b"(MESSAGES 0)", self.client.command("STATUS INBOX (MESSAGES)"))
        self.assertIn(b"(MESSAGES 1)", self.client.command("STATUS Old (MESSAGES)"))

    def test_subscribe_unsubscribe(self) -> None:
        """SUBSCRIBE and UNSUBSCRIBE edit the subscription list."""
        self.client.command("SUBSCRIBE Foo")
        self.assertIn("Foo", self.account.subscriptions())

        self.client.command("UNSUBSCRIBE Foo")
        self.assertNotIn("Foo", self.account.subscriptions())

    def test_status(self) -> None:
        """STATUS reports counts from folder metadata, in the order asked.

        The flagged message left ``new/`` before any IMAP session looked, so
        it is not \\Recent (see ``RecentTracker``).
        """
        self.harness.deliver(message(1))
        self.harness.deliver(message(2))
        folder = self.account.folder("INBOX")
        folder.set_flags(folder.messages[0], ["\\Seen"])

        line = self.client.lines("STATUS inbox (UIDNEXT MESSAGES UNSEEN RECENT UIDVALIDITY)")[0]

        self.assertEqual(
            b"* STATUS INBOX (UIDNEXT 3 MESSAGES 2 UNSEEN 1 RECENT 1 UIDVALIDITY %d)"
            % folder.uidvalidity,
            line,
        )

    def test_status_errors(self) -> None:
        """STATUS of a missing folder is NO [NONEXISTENT]; unknown items are BAD."""
        self.assertIn(b"NO [NONEXISTENT]", self.client.tagged("STATUS Nope (MESSAGES)"))
        self.assertIn(b"BAD", self.client.tagged("STATUS INBOX (BOGUS)"))
        self.assertIn(b"BAD", self.client.tagged("STATUS INBOX ()"))

    def test_namespace(self) -> None:
        """One personal namespace, no prefix, ``/`` delimiter (RFC 2342)."""
        self.assertEqual(
            b'* NAMESPACE (("" "/")) NIL NIL\r\na2 OK NAMESPACE completed\r\n',
            self.client.command("NAMESPACE"),
        )
