"""The submission sender policy: who may use which MAIL FROM and From: addresses."""

from __future__ import annotations

from twisted.trial import unittest

from mailsuite.senders import from_addresses, may_send_as

USER = "alice@example.com"


class MaySendAsTests(unittest.TestCase):
    def test_own_address(self) -> None:
        """A user sends as themself, in any letter case."""
        self.assertTrue(may_send_as(USER, "Alice@Example.com", ["alice@example.com"]))

    def test_someone_else(self) -> None:
        """Neither the envelope nor the From: may name another user."""
        self.assertFalse(may_send_as(USER, "bob@example.com", [USER]))
        self.assertFalse(may_send_as(USER, USER, ["bob@example.com"]))
        self.assertFalse(may_send_as(USER, USER, [USER, "bob@example.com"]))

    def test_subaddress(self) -> None:
        """user+tag@domain belongs to user@domain (RFC 5233)."""
        self.assertTrue(may_send_as(USER, "alice+lists@example.com", ["alice+lists@example.com"]))
        self.assertFalse(may_send_as(USER, "bob+alice@example.com", []))

    def test_alias_delivering_to_the_user(self) -> None:
        """An alias that delivers to the user may be used by them, and only by them."""
        aliases = {"family@example.com": ["alice@example.com", "bob@example.com"]}

        self.assertTrue(may_send_as(USER, "family@example.com", ["family@example.com"], aliases))
        self.assertFalse(may_send_as("carol@example.com", "family@example.com", [], aliases))

    def test_null_sender_refused(self) -> None:
        """A person's mail needs a return path: <> is refused at submission."""
        self.assertFalse(may_send_as(USER, "", [USER]))
        self.assertFalse(may_send_as(USER, "<>", [USER]))

    def test_missing_from_header_passes(self) -> None:
        """No From: at all is left to the server, which adds the user's (RFC 6409 8.1)."""
        self.assertTrue(may_send_as(USER, USER, []))

    def test_same_local_part_other_domain(self) -> None:
        """alice@ another domain is someone else."""
        self.assertFalse(may_send_as(USER, "alice@example.org", []))

    def test_from_header_parsing(self) -> None:
        """Display names, groups of addresses and several fields are understood."""
        values = ['"Alice, A." <alice@example.com>, bob@example.com', "carol@example.com"]
        self.assertEqual(
            ["alice@example.com", "bob@example.com", "carol@example.com"], from_addresses(values)
        )
