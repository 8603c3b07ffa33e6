"""Folder names: modified UTF-7 and the Maildir++ directory mapping."""

from __future__ import annotations

from twisted.trial import unittest

from mailsuite.store import names
from mailsuite.store.errors import InvalidMailboxName


class ModifiedUtf7Tests(unittest.TestCase):
    def test_rfc3501_examples(self) -> None:
        """The RFC 3501 5.1.3 example and ampersands encode as specified."""
        self.assertEqual(
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-",
            names.encode_utf7("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e"),
        )
        self.assertEqual("A&-B", names.encode_utf7("A&B"))
        self.assertEqual("Entw&APw-rfe", names.encode_utf7("Entwürfe"))

    def test_round_trip(self) -> None:
        """Any text survives encode then decode, astral characters included."""
        for text in ["", "plain", "Entwürfe", "日本語", "a&b", "emoji \U0001f4e7 box"]:
            self.assertEqual(text, names.decode_utf7(names.encode_utf7(text)))

    def test_malformed_names_raise(self) -> None:
        """Unterminated runs, bad base64 and 8-bit bytes are refused."""
        for bad in ["&Jjo", "&!!!-", "caf\u00e9", "&AGE"]:
            self.assertRaises(ValueError, names.decode_utf7, bad)


class DirectoryNameTests(unittest.TestCase):
    def test_levels_and_dots(self) -> None:
        """Levels join with dots; a dot inside a level is a base64 run."""
        self.assertEqual(".Archive.2024", names.directory_name("Archive/2024"))
        self.assertEqual(".a&AC4-b", names.directory_name("a.b"))
        self.assertEqual("a.b", names.folder_name(".a&AC4-b"))
        self.assertEqual("Archive/2024", names.folder_name(".Archive.2024"))

    def test_inbox_is_case_insensitive(self) -> None:
        """inbox, Inbox and INBOX all name INBOX, also as a first level."""
        self.assertEqual("INBOX", names.canonical("inbox"))
        self.assertEqual("INBOX/x", names.canonical("Inbox/x"))
        self.assertEqual("inboxes", names.canonical("inboxes"))

    def test_unusable_names(self) -> None:
        """Empty levels, control characters and huge names are refused."""
        for bad in ["", "/", "a//b", "x/", "nul\x00", "x" * 300, "..", "a/./b", "../etc"]:
            self.assertRaises(InvalidMailboxName, names.directory_name, bad)

    def test_non_folder_directories_are_ignored(self) -> None:
        """cur, tmp, dot-dot and malformed entries are not folders."""
        for entry in ["cur", ".", "..", ".bad&", ".a..b"]:
            self.assertIsNone(names.folder_name(entry))
