"""The aliases file: parsing, reloading, expansion of chains and loops, writing."""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from mailsuite import aliases, durable
from mailsuite.aliases import MAX_DEPTH, AliasError, AliasTable
from mailsuite.config import default_config, load_config

DOMAINS = ("example.com", "example.org")


class AliasTestCase(TestCase):
    def setUp(self) -> None:
        folder = self.mktemp()
        os.makedirs(folder)
        self.path = os.path.join(folder, "aliases")
        self.events: list[dict[str, Any]] = []
        self.patch(aliases, "log", Logger(observer=self.events.append))

    def write(self, text: str) -> None:
        """Replace the file with new contents, as an editor that renames would."""
        temporary = self.path + ".new"
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, self.path)

    def table(self, text: str | None = None) -> AliasTable:
        if text is not None:
            self.write(text)
        return AliasTable(self.path, DOMAINS)

    def warnings(self) -> list[str]:
        return [e["log_format"].format(**e) for e in self.events if e["log_level"].name == "warn"]

    def read(self) -> str:
        with open(self.path, encoding="utf-8") as f:
            return f.read()


class ParsingTests(AliasTestCase):
    def test_alias_to_several_targets(self) -> None:
        """``alias: a, b`` delivers to both, as spelled in the file."""
        table = self.table("family@example.com: Alice@example.com,bob@example.net\n")

        self.assertEqual(
            ["Alice@example.com", "bob@example.net"], table.expand("family@example.com")
        )
        self.assertEqual([], self.warnings())

    def test_not_an_alias(self) -> None:
        """An address the file does not list is no alias: None, not an empty list."""
        table = self.table("family@example.com: alice@example.com\n")

        self.assertIsNone(table.expand("alice@example.com"))
        self.assertIsNone(table.targets("alice@example.com"))

    def test_missing_file_is_empty(self) -> None:
        """No aliases file yet: no aliases, no error."""
        table = AliasTable(self.path, DOMAINS)

        self.assertEqual({}, table.aliases())
        self.assertIsNone(table.expand("family@example.com"))

    def test_matched_without_regard_to_case(self) -> None:
        """Aliases match like the users file: the whole address, any letter case."""
        table = self.table("Family@Example.COM: alice@example.com\n")

        self.assertEqual(["alice@example.com"], table.expand("FAMILY@example.com"))

    def test_idna_domain(self) -> None:
        """A U-label alias domain matches its A-label, which is what SMTP looks up."""
        table = AliasTable(self.path, ["xn--bcher-kva.example"])
        self.write("info@bücher.example: alice@example.com\n")

        self.assertEqual(["alice@example.com"], table.expand("info@xn--bcher-kva.example"))

    def test_comments_blank_lines_and_continuations(self) -> None:
        """``#`` lines and blank lines are skipped; an indented line continues the entry."""
        table = self.table(
            "# the family\n"
            "\n"
            "family@example.com: alice@example.com,\n"
            "  bob@example.com,\n"
            "\tcarol@example.net\n"
            "   # an indented comment is still a comment\n"
        )

        self.assertEqual(
            ["alice@example.com", "bob@example.com", "carol@example.net"],
            table.expand("family@example.com"),
        )
        self.assertEqual([], self.warnings())

    def test_hash_inside_an_address(self) -> None:
        """``#`` is a valid address character, so only whole lines are comments."""
        table = self.table("a#b@example.com: c#d@example.net\n")

        self.assertEqual(["c#d@example.net"], table.expand("a#b@example.com"))

    def test_malformed_lines_logged_with_number_and_skipped(self) -> None:
        """Every bad line is named by its number; the good ones around it still work."""
        table = self.table(
            "good@example.com: alice@example.com\n"
            "no colon here\n"
            "spaces@example.com: alice@example.com bob@example.com\n"
            "empty@example.com:\n"
            "notanaddress: alice@example.com\n"
            "angle@example.com: <alice@example.com>\n"
            "\xff\xfe@example.com: \x00\n"
            "also-good@example.com: bob@example.com\n"
        )

        self.assertEqual(["good@example.com", "also-good@example.com"], list(table.aliases()))
        lines = [w.split(":")[0].rpartition(" line ")[2] for w in self.warnings()]
        self.assertEqual(["2", "3", "4", "5", "6", "7"], lines)

    def test_catch_all_is_not_supported(self) -> None:
        """``@domain:`` would accept every guessed address; it is refused and logged."""
        table = self.table("@example.com: alice@example.com\n")

        self.assertEqual({}, table.aliases())
        self.assertIsNone(table.expand("anything@example.com"))
        self.assertIn("catch-all", self.warnings()[0])

    def test_foreign_domain_is_ignored(self) -> None:
        """An alias outside our domains is skipped: it would let a user send as a stranger."""
        table = self.table("boss@bank.example: alice@example.com\n")

        self.assertEqual({}, table.expansions())
        self.assertIn("line 1: boss@bank.example is not in one of", self.warnings()[0])

    def test_listed_twice_first_counts(self) -> None:
        """A second entry for an alias is logged and ignored, as in the users file."""
        table = self.table(
            "family@example.com: alice@example.com\nFAMILY@example.com: mallory@example.net\n"
        )

        self.assertEqual(["alice@example.com"], table.expand("family@example.com"))
        self.assertIn("line 2", self.warnings()[0])

    def test_duplicate_targets_once(self) -> None:
        """A target written twice (any case) is delivered to once."""
        table = self.table("family@example.com: alice@example.com, ALICE@example.com\n")

        self.assertEqual(["alice@example.com"], table.expand("family@example.com"))

    def test_non_utf8_file_does_not_crash(self) -> None:
        """Bytes that are not UTF-8 make a line malformed, not the server fail."""
        with open(self.path, "wb") as f:
            f.write(b"a\xff@example.com: alice@example.com\nb@example.com: bob@example.com\n")

        table = AliasTable(self.path, DOMAINS)

        self.assertEqual(["bob@example.com"], table.expand("b@example.com"))


class ReloadTests(AliasTestCase):
    def test_new_file_contents_seen_at_once(self) -> None:
        """A file replaced by an editor or the command is read on the next lookup."""
        table = self.table("family@example.com: alice@example.com\n")
        self.assertEqual(["alice@example.com"], table.expand("family@example.com"))

        self.write("family@example.com: bob@example.com\nteam@example.com: carol@example.com\n")

        self.assertEqual(["bob@example.com"], table.expand("family@example.com"))
        self.assertEqual(["carol@example.com"], table.expand("team@example.com"))

    def test_edit_in_place_of_same_size(self) -> None:
        """An in-place edit that keeps the size is caught by its modification time."""
        table = self.table("family@example.com: alice@example.com\n")
        table.expand("family@example.com")
        before = os.stat(self.path)

        with open(self.path, "w", encoding="utf-8") as f:
            f.write("family@example.com: bobby@example.com\n")
        os.utime(self.path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))

        self.assertEqual(["bobby@example.com"], table.expand("family@example.com"))

    def test_removed_file_means_no_aliases(self) -> None:
        """Deleting the file removes every alias; it is not an error."""
        table = self.table("family@example.com: alice@example.com\n")
        table.expand("family@example.com")

        os.unlink(self.path)

        self.assertIsNone(table.expand("family@example.com"))

    def test_unchanged_file_is_not_reread(self) -> None:
        """Lookups of an unchanged file do not parse it again (nor log its problems again)."""
        table = self.table("bad line\n")
        table.aliases()
        table.expand("x@example.com")
        table.expansions()

        self.assertEqual(1, len(self.warnings()))


class ExpansionTests(AliasTestCase):
    def test_chain(self) -> None:
        """An alias naming another alias delivers to the end of the chain."""
        table = self.table(
            "postmaster@example.com: admins@example.com\n"
            "admins@example.com: alice@example.com, ops@example.net\n"
        )

        self.assertEqual(
            ["alice@example.com", "ops@example.net"], table.expand("postmaster@example.com")
        )

    def test_two_paths_to_one_user_give_one_target(self) -> None:
        """A user reached twice through different aliases is listed once."""
        table = self.table(
            "all@example.com: family@example.com, parents@example.com, alice@example.com\n"
            "family@example.com: alice@example.com, bob@example.com\n"
            "parents@example.com: bob@example.com, Alice@example.com\n"
        )

        self.assertEqual(["alice@example.com", "bob@example.com"], table.expand("all@example.com"))

    def test_alias_naming_itself_keeps_a_copy(self) -> None:
        """``alice: alice, phone``: the user alice gets her copy, and one is forwarded."""
        table = self.table("alice@example.com: alice@example.com, alice@phone.example\n")

        self.assertEqual(
            ["alice@example.com", "alice@phone.example"], table.expand("alice@example.com")
        )
        self.assertEqual([], self.warnings())

    def test_loop_stops_and_is_logged(self) -> None:
        """a -> b -> a ends where it closes, with a warning; it never recurses forever."""
        table = self.table(
            "a@example.com: b@example.com\n"
            "b@example.com: a@example.com, c@example.com\n"
            "c@example.com: a@example.com\n"
        )

        self.assertEqual(["a@example.com"], table.expand("a@example.com"))
        self.assertEqual(["b@example.com"], table.expand("b@example.com"))
        self.assertTrue(any("loop back" in w for w in self.warnings()))

    def test_depth_bound(self) -> None:
        """A chain longer than MAX_DEPTH is cut there and logged; shorter ones are whole."""
        lines = [f"a{i}@example.com: a{i + 1}@example.com\n" for i in range(MAX_DEPTH + 2)]
        table = self.table("".join(lines))

        self.assertEqual([], table.expand("a0@example.com"))
        self.assertEqual([f"a{MAX_DEPTH + 2}@example.com"], table.expand("a2@example.com"))
        self.assertTrue(any("more than 10 aliases deep" in w for w in self.warnings()))

    def test_wide_and_deep_is_cheap(self) -> None:
        """Each alias is expanded once per lookup: 20 wide and 9 deep is 20^9 paths, not walks."""
        width, depth = 20, MAX_DEPTH - 1

        def name(level: int, i: int) -> str:
            return f"l{level}x{i}@example.com" if level < depth else f"user{i}@example.com"

        lines = [
            f"{name(level, i)}: " + ", ".join(name(level + 1, j) for j in range(width)) + "\n"
            for level in range(depth)
            for i in range(width)
        ]
        table = self.table("".join(lines))

        self.assertEqual([name(depth, j) for j in range(width)], table.expand(name(0, 0)))

    def test_expansions_for_sender_ownership(self) -> None:
        """``expansions`` gives every alias its final targets, as spelled in the file."""
        table = self.table(
            "family@example.com: parents@example.com, kid@example.com\n"
            "parents@example.com: alice@example.com\n"
        )

        self.assertEqual(
            {
                "family@example.com": ["alice@example.com", "kid@example.com"],
                "parents@example.com": ["alice@example.com"],
            },
            table.expansions(),
        )


class WritingTests(AliasTestCase):
    def test_add_creates_file_private(self) -> None:
        """The first alias creates the file (and its folder), readable by us only."""
        self.path = os.path.join(self.mktemp(), "sub", "aliases")
        table = AliasTable(self.path, DOMAINS)

        result = table.add("family@example.com", ["alice@example.com", "bob@example.net"])

        self.assertEqual(("family@example.com", ["alice@example.com", "bob@example.net"]), result)
        self.assertEqual("family@example.com: alice@example.com, bob@example.net\n", self.read())
        self.assertEqual(0o600, os.stat(self.path).st_mode & 0o777)

    def test_add_to_existing_merges(self) -> None:
        """Adding to an alias appends new targets, once each, keeping its spelling."""
        table = self.table("Family@example.com: alice@example.com\n")

        result = table.add("family@EXAMPLE.com", ["ALICE@example.com", "bob@example.com"])

        self.assertEqual(("Family@example.com", ["alice@example.com", "bob@example.com"]), result)
        self.assertEqual("Family@example.com: alice@example.com, bob@example.com\n", self.read())

    def test_comments_and_bad_lines_survive_a_write(self) -> None:
        """A write keeps the operator's comments and even lines we could not read."""
        table = self.table("# family\nfamily@example.com: alice@example.com\nbad line\n")

        table.add("team@example.com", ["bob@example.com"])

        self.assertEqual(
            "# family\nfamily@example.com: alice@example.com\nbad line\n"
            "team@example.com: bob@example.com\n",
            self.read(),
        )

    def test_write_is_atomic(self) -> None:
        """Writes go through ``durable.replace_file`` (write, fsync, rename, fsync)."""
        written: list[tuple[str, bytes]] = []
        real = durable.replace_file

        def recording(path: str, data: bytes, disk: durable.Disk = durable.DISK) -> None:
            written.append((path, data))
            real(path, data, disk)

        self.patch(durable, "replace_file", recording)

        AliasTable(self.path, DOMAINS).add("family@example.com", ["alice@example.com"])

        self.assertEqual([(self.path, b"family@example.com: alice@example.com\n")], written)

    def test_failed_write_leaves_the_file(self) -> None:
        """If the write fails, the old file and the table's view of it stay as they were."""
        table = self.table("family@example.com: alice@example.com\n")

        def failing(path: str, data: bytes, disk: durable.Disk = durable.DISK) -> None:
            raise OSError(28, "No space left on device")

        self.patch(durable, "replace_file", failing)

        self.assertRaises(OSError, table.add, "family@example.com", ["bob@example.com"])
        self.assertEqual(["alice@example.com"], table.expand("family@example.com"))
        self.assertEqual("family@example.com: alice@example.com\n", self.read())

    def test_continued_entry_rewritten_on_one_line(self) -> None:
        """Changing a multi-line entry writes it back as one line."""
        table = self.table("family@example.com: alice@example.com,\n  bob@example.com\n")

        table.add("family@example.com", ["carol@example.com"])

        self.assertEqual(
            "family@example.com: alice@example.com, bob@example.com, carol@example.com\n",
            self.read(),
        )

    def test_delete(self) -> None:
        """``delete`` removes the alias (and any ignored second entry of it), nothing else."""
        table = self.table(
            "# keep me\n"
            "family@example.com: alice@example.com\n"
            "team@example.com: bob@example.com\n"
            "FAMILY@example.com: mallory@example.net\n"
        )

        self.assertEqual("family@example.com", table.delete("Family@example.com"))

        self.assertEqual("# keep me\nteam@example.com: bob@example.com\n", self.read())
        self.assertIsNone(table.expand("family@example.com"))

    def test_delete_unknown(self) -> None:
        """Deleting an alias that is not there is an error the operator can read."""
        table = self.table("family@example.com: alice@example.com\n")

        error = self.assertRaises(AliasError, table.delete, "team@example.com")

        self.assertEqual("there is no alias team@example.com", str(error))

    def test_bad_addresses_refused(self) -> None:
        """add checks every address before it writes anything."""
        table = self.table("")
        for alias, targets in [
            ("@example.com", ["alice@example.com"]),
            ("family", ["alice@example.com"]),
            ("family@example.com", ["alice example.com"]),
            ("family@example.com", ["a b@example.com"]),
            ("family@example.com", ["<alice@example.com>"]),
            ("family@example.com", []),
        ]:
            self.assertRaises(AliasError, table.add, alias, targets)

        self.assertEqual("", self.read())


class ConfigTests(TestCase):
    def test_default_path(self) -> None:
        """Without a setting the file is maildirs/.aliases beside the users file."""
        config = default_config(base="/srv/mail")

        self.assertEqual("/srv/mail/maildirs/.aliases", config.aliases)

    def test_relative_to_config_file(self) -> None:
        """A relative ``aliases`` path resolves against the configuration's folder."""
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "mailsuite.toml")
        with open(path, "w") as f:
            f.write('aliases = "etc/aliases"\n')

        self.assertEqual(os.path.join(folder, "etc", "aliases"), load_config(path).aliases)


class BounceAddressTests(TestCase):
    def test_bounce_to_an_alias_reaches_the_user_behind_it(self) -> None:
        """A DSN for mail sent as an alias goes to the local user the alias delivers to."""
        from types import SimpleNamespace

        from mailsuite.queue.relay import _local_users

        path = self.mktemp()
        with open(path, "w") as f:
            f.write("family@example.test: remote@example.net, Alice@example.test\n")
        users = {"alice@example.test": "Alice@example.test"}
        ctx = SimpleNamespace(
            checker=SimpleNamespace(db=SimpleNamespace(canonical=lambda a: users.get(a.lower()))),
            aliases=AliasTable(path, ["example.test"]),
        )

        local_user = _local_users(ctx)  # type: ignore[arg-type]

        self.assertEqual("Alice@example.test", local_user("family@example.test"))
        self.assertEqual("Alice@example.test", local_user("alice@example.test"))
        self.assertIsNone(local_user("nobody@example.test"))
