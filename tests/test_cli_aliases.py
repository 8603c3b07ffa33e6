"""``mailsuite alias add``, ``del`` and ``list``, run through ``main([...])``."""

from __future__ import annotations

import os

from mailsuite.aliases import AliasTable
from tests.test_cli import CommandTestCase


class AliasCommandTests(CommandTestCase):
    def setUp(self) -> None:
        super().setUp()
        folder = os.path.dirname(self.config_path)
        self.aliases_path = os.path.join(folder, "maildirs", ".aliases")

    def table(self) -> AliasTable:
        return AliasTable(self.aliases_path)

    def test_add(self) -> None:
        """add writes the alias to the configured file and prints what it now holds."""
        status = self.run_command(
            "alias", "add", "family@Example.com", "alice@example.com", "grandma@elsewhere.org"
        )

        self.assertEqual(0, status)
        self.assertEqual(
            "family@Example.com: alice@example.com, grandma@elsewhere.org\n",
            self.stdout.getvalue(),
        )
        self.assertEqual(
            ["alice@example.com", "grandma@elsewhere.org"],
            self.table().expand("family@example.com"),
        )

    def test_add_to_an_existing_alias(self) -> None:
        """A second add puts more targets on the same alias, each once."""
        self.run_command("alias", "add", "family@example.com", "alice@example.com")

        status = self.run_command(
            "alias", "add", "family@example.com", "bob@example.com", "alice@example.com"
        )

        self.assertEqual(0, status)
        self.assertEqual(
            ["alice@example.com", "bob@example.com"], self.table().targets("family@example.com")
        )

    def test_alias_in_a_foreign_domain_refused(self) -> None:
        """An alias must be in one of our domains; the file is not touched."""
        status = self.run_command("alias", "add", "boss@bank.example", "alice@example.com")

        self.assertFailed(status, "bank.example is not one of this server's domains")
        self.assertFalse(os.path.exists(self.aliases_path))

    def test_bad_addresses_refused(self) -> None:
        """A catch-all or a malformed target fails with one line and exit 1."""
        self.assertFailed(
            self.run_command("alias", "add", "@example.com", "alice@example.com"),
            "catch-all aliases (@domain) are not supported",
        )
        self.stderr.truncate(0)
        self.stderr.seek(0)
        self.assertFailed(
            self.run_command("alias", "add", "family@example.com", "alice"),
            "'alice' is not an address",
        )

    def test_add_needs_a_target(self) -> None:
        """``alias add ALIAS`` alone is a usage error."""
        self.assertEqual(2, self.run_command("alias", "add", "family@example.com"))

    def test_alias_over_a_user_says_what_happens(self) -> None:
        """Aliasing a user's own address warns that the mailbox stops getting mail."""
        self.run_command("user", "add", "alice@example.com")
        self.stdout.truncate(0)
        self.stdout.seek(0)

        self.run_command("alias", "add", "alice@example.com", "alice@phone.example")
        self.assertIn("note: alice@example.com is also a user", self.stdout.getvalue())

        self.stdout.truncate(0)
        self.stdout.seek(0)
        self.run_command("alias", "add", "bob@example.com", "bob@example.com", "b@phone.example")
        self.assertNotIn("note:", self.stdout.getvalue())

    def test_del(self) -> None:
        """del removes the alias and nothing else."""
        self.run_command("alias", "add", "family@example.com", "alice@example.com")
        self.run_command("alias", "add", "kids@example.com", "bob@example.com")

        status = self.run_command("alias", "del", "FAMILY@example.com")

        self.assertEqual(0, status)
        self.assertIn("deleted family@example.com", self.stdout.getvalue())
        self.assertEqual(["kids@example.com"], list(self.table().aliases()))

    def test_del_unknown(self) -> None:
        """del of an alias that is not there fails with exit 1."""
        status = self.run_command("alias", "del", "family@example.com")

        self.assertFailed(status, "there is no alias family@example.com")

    def test_list(self) -> None:
        """list prints each alias with its targets, sorted without regard to case."""
        self.run_command("alias", "add", "kids@example.com", "bob@example.com")
        self.run_command(
            "alias", "add", "Family@example.net", "alice@example.com", "bob@example.com"
        )
        self.stdout.truncate(0)
        self.stdout.seek(0)

        status = self.run_command("alias", "list")

        self.assertEqual(0, status)
        self.assertEqual(
            "Family@example.net: alice@example.com, bob@example.com\n"
            "kids@example.com: bob@example.com\n",
            self.stdout.getvalue(),
        )
