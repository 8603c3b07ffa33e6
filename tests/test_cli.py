"""Tests for the ``mailsuite`` command, run through ``main([...])``."""

from __future__ import annotations

import argparse
import getpass
import io
import os
import sys

from twisted.trial.unittest import TestCase

from mailsuite import cli
from mailsuite.config import Config
from mailsuite.users import PASSWORDS, UserDatabase


class TerminalInput(io.StringIO):
    """A stdin that claims to be a terminal, so the command prompts instead."""

    def isatty(self) -> bool:
        return True


class CommandTestCase(TestCase):
    def setUp(self) -> None:
        folder = self.mktemp()
        os.makedirs(folder)
        self.config_path = os.path.join(folder, "mailsuite.toml")
        with open(self.config_path, "w") as f:
            f.write('domains = ["example.com", "example.net"]\nusers = "users"\n')
        self.users_path = os.path.join(folder, "users")
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)
        self.stdin_text("secret\n")

    def stdin_text(self, text: str) -> io.StringIO:
        stdin = io.StringIO(text)
        self.patch(sys, "stdin", stdin)
        return stdin

    def run_command(self, *argv: str) -> int:
        return cli.main(["--config", self.config_path, *argv])

    def password_of(self, address: str) -> str:
        entry = UserDatabase(self.users_path).lookup(address)
        assert entry is not None
        return entry[1]

    def assertFailed(self, status: int, *phrases: str) -> None:
        self.assertEqual(1, status)
        message = self.stderr.getvalue()
        self.assertTrue(message.startswith("mailsuite: "), message)
        self.assertEqual(1, message.count("\n"))
        for phrase in phrases:
            self.assertIn(phrase, message)


class UserAddTests(CommandTestCase):
    """``mailsuite user add``."""

    def test_add_from_piped_stdin(self) -> None:
        """A piped password (first line, newline stripped) becomes the user's password."""
        self.stdin_text("s3cret pass\r\nignored second line\n")

        status = self.run_command("user", "add", "alice@Example.com")

        self.assertEqual(0, status)
        self.assertEqual("added alice@example.com\n", self.stdout.getvalue())
        self.assertTrue(PASSWORDS.verify("s3cret pass", self.password_of("alice@example.com")))

    def test_add_prompts_twice_on_terminal(self) -> None:
        """At a terminal the password is asked twice, without echo."""
        self.patch(sys, "stdin", TerminalInput())
        answers = iter(["typed", "typed"])
        self.patch(getpass, "getpass", lambda prompt="": next(answers))

        status = self.run_command("user", "add", "alice@example.com")

        self.assertEqual(0, status)
        self.assertTrue(PASSWORDS.verify("typed", self.password_of("alice@example.com")))

    def test_prompt_mismatch(self) -> None:
        """Two different answers change nothing and say why."""
        self.patch(sys, "stdin", TerminalInput())
        answers = iter(["one", "two"])
        self.patch(getpass, "getpass", lambda prompt="": next(answers))

        status = self.run_command("user", "add", "alice@example.com")

        self.assertFailed(status, "differ")
        self.assertEqual([], UserDatabase(self.users_path).addresses())

    def test_empty_password_refused(self) -> None:
        """An empty password (an empty pipe, say) is refused rather than stored."""
        self.stdin_text("")

        status = self.run_command("user", "add", "alice@example.com")

        self.assertFailed(status, "empty")
        self.assertEqual([], UserDatabase(self.users_path).addresses())

    def test_foreign_domain_refused(self) -> None:
        """An address in a domain we do not serve is refused, naming the domain."""
        status = self.run_command("user", "add", "alice@elsewhere.org")

        self.assertFailed(status, "elsewhere.org", "domains")
        self.assertFalse(os.path.exists(self.users_path))

    def test_existing_refused_before_prompt(self) -> None:
        """An existing user (any case) is refused before any password is read."""
        self.run_command("user", "add", "alice@example.com")
        stdin = self.stdin_text("other\n")

        status = self.run_command("user", "add", "ALICE@example.com")

        self.assertFailed(status, "alice@example.com", "already exists")
        self.assertEqual(0, stdin.tell())

    def test_invalid_address_refused(self) -> None:
        """Something that is not user@domain is an error with exit status 1."""
        status = self.run_command("user", "add", "alice")

        self.assertFailed(status, "alice")


class UserChangeTests(CommandTestCase):
    """``mailsuite user passwd``, ``del`` and ``list``."""

    def setUp(self) -> None:
        super().setUp()
        self.run_command("user", "add", "alice@example.com")
        self.stdin_text("secret\n")
        self.run_command("user", "add", "Bob@example.net")
        self.stdout.truncate(0)
        self.stdout.seek(0)

    def test_passwd(self) -> None:
        """passwd sets the new password from stdin, matching the address in any case."""
        self.stdin_text("changed\n")

        status = self.run_command("user", "passwd", "ALICE@EXAMPLE.COM")

        self.assertEqual(0, status)
        self.assertTrue(PASSWORDS.verify("changed", self.password_of("alice@example.com")))

    def test_passwd_unknown(self) -> None:
        """passwd of an unknown user fails with exit 1 and a clear message."""
        status = self.run_command("user", "passwd", "carol@example.com")

        self.assertFailed(status, "there is no user carol@example.com")

    def test_del(self) -> None:
        """del removes the user and says their mail stays."""
        status = self.run_command("user", "del", "bob@example.net")

        self.assertEqual(0, status)
        self.assertEqual(["alice@example.com"], UserDatabase(self.users_path).addresses())
        self.assertIn("deleted Bob@example.net", self.stdout.getvalue())

    def test_del_unknown(self) -> None:
        """del of an unknown user fails with exit 1."""
        status = self.run_command("user", "del", "carol@example.com")

        self.assertFailed(status, "there is no user carol@example.com")

    def test_list(self) -> None:
        """list prints one address per line, sorted without regard to case."""
        status = self.run_command("user", "list")

        self.assertEqual(0, status)
        self.assertEqual("alice@example.com\nBob@example.net\n", self.stdout.getvalue())


class CommandLineTests(CommandTestCase):
    """Errors in the configuration or the arguments, and adding command groups."""

    def test_config_error_one_line_exit_2(self) -> None:
        """A bad configuration prints one 'mailsuite: ' line naming file and key, exit 2."""
        with open(self.config_path, "w") as f:
            f.write("hostname = 5\n")

        status = self.run_command("user", "list")

        self.assertEqual(2, status)
        self.assertEqual(
            f"mailsuite: {self.config_path}: key 'hostname': must be a string\n",
            self.stderr.getvalue(),
        )

    def test_missing_config_exit_2(self) -> None:
        """A --config that does not exist is a configuration error, not a traceback."""
        status = cli.main(["--config", self.config_path + ".missing", "user", "list"])

        self.assertEqual(2, status)
        self.assertIn("does not exist", self.stderr.getvalue())
        self.assertNotIn("Traceback", self.stderr.getvalue())

    def test_usage_error_returns_status(self) -> None:
        """A missing command returns argparse's status 2 instead of raising SystemExit."""
        status = cli.main([])

        self.assertEqual(2, status)
        self.assertIn("usage: mailsuite", self.stderr.getvalue())

    def test_builtin_defaults_use_current_folder(self) -> None:
        """Without --config the users file is maildirs/.users of the current folder."""
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(folder)

        status = cli.main(["user", "add", "alice@localhost"])

        self.assertEqual(0, status)
        users = os.path.join(folder, "maildirs", ".users")
        self.assertEqual(["alice@localhost"], UserDatabase(users).addresses())

    def test_new_command_group(self) -> None:
        """A group added to COMMAND_GROUPS gets its own subcommands and the config."""
        seen: list[Config] = []

        def run(args: argparse.Namespace, config: Config) -> int:
            seen.append(config)
            return 0

        def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
            queue = groups.add_parser("queue").add_subparsers(required=True)
            queue.add_parser("list").set_defaults(handler=run)

        self.patch(cli, "COMMAND_GROUPS", {**cli.COMMAND_GROUPS, "queue": register})

        status = self.run_command("queue", "list")

        self.assertEqual(0, status)
        self.assertEqual([os.path.abspath(self.config_path)], [c.path for c in seen])
