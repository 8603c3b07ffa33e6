"""The ``mailsuite`` command: administration beside the running server.

Commands come in groups (``mailsuite user add ...``). Each group is one
``register(subparsers)`` function in ``COMMAND_GROUPS``; it adds its
subcommands and sets ``handler`` on each, a function ``(args, config) -> int``
called with the loaded configuration. Later groups (``queue``, ``dkim``) add
one entry there.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

from mailsuite import dkim
from mailsuite.aliases import AliasError, AliasTable, alias_key, check_address
from mailsuite.config import Config, ConfigError, load_config
from mailsuite.queue import admin as queue_admin
from mailsuite.users import UserDatabase, UserError, split_address

#: A command's body: ``(parsed arguments, configuration) -> exit status``.
Handler = Callable[[argparse.Namespace, Config], int]

#: Adds one group's subcommands to the ``subparsers`` object it is given.
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


class CommandError(Exception):
    """A command could not do what was asked; the message is for the user."""


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status instead of raising."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse printed
        return e.code if isinstance(e.code, int) else EXIT_FAILED

    try:
        config = load_config(args.config)
        return int(args.handler(args, config))
    except ConfigError as e:
        return _fail(str(e), EXIT_CONFIG)
    except (CommandError, UserError, AliasError) as e:
        return _fail(str(e), EXIT_FAILED)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}", EXIT_FAILED)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailsuite", description="Administer a mailsuite.")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the TOML configuration (default: built-in, paths relative to this folder)",
    )
    groups = parser.add_subparsers(title="commands", metavar="GROUP", required=True)
    for register in COMMAND_GROUPS.values():
        register(groups)
    return parser


def _fail(message: str, status: int) -> int:
    print(f"mailsuite: {message}", file=sys.stderr)
    return status


# -- mailsuite user ... --------------------------------------------------------


def register_user_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = groups.add_parser("user", help="add, remove and list users")
    commands = user.add_subparsers(title="user commands", metavar="COMMAND", required=True)

    add = commands.add_parser("add", help="add a user; the password comes from stdin or a prompt")
    add.add_argument("address")
    add.set_defaults(handler=user_add)

    passwd = commands.add_parser("passwd", help="set a user's password")
    passwd.add_argument("address")
    passwd.set_defaults(handler=user_passwd)

    delete = commands.add_parser("del", help="remove a user (their mail stays in the store)")
    delete.add_argument("address")
    delete.set_defaults(handler=user_del)

    listing = commands.add_parser("list", help="print every user's address")
    listing.set_defaults(handler=user_list)


def user_add(args: argparse.Namespace, config: Config) -> int:
    _, domain = split_address(args.address)
    if not config.is_local_domain(domain):
        raise CommandError(
            f"{domain} is not one of this server's domains ({', '.join(config.domains)}); "
            f"add it to 'domains' in {config.path or 'a configuration file'}"
        )

    db = UserDatabase(config.users)
    if db.exists(args.address):
        raise CommandError(f"{db.canonical(args.address)} already exists")

    address = db.add(args.address, read_password())
    print(f"added {address}")
    return EXIT_OK


def user_passwd(args: argparse.Namespace, config: Config) -> int:
    db = UserDatabase(config.users)
    if not db.exists(args.address):
        raise CommandError(f"there is no user {args.address}")

    address = db.set_password(args.address, read_password())
    print(f"changed the password of {address}")
    return EXIT_OK


def user_del(args: argparse.Namespace, config: Config) -> int:
    address = UserDatabase(config.users).delete(args.address)
    print(f"deleted {address}; their mail is still in {config.store}")
    return EXIT_OK


def user_list(args: argparse.Namespace, config: Config) -> int:
    for address in sorted(UserDatabase(config.users).addresses(), key=str.lower):
        print(address)
    return EXIT_OK


# -- mailsuite alias ... -------------------------------------------------------


def register_alias_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    alias = groups.add_parser("alias", help="add, remove and list aliases")
    commands = alias.add_subparsers(title="alias commands", metavar="COMMAND", required=True)

    add = commands.add_parser(
        "add", help="make ALIAS deliver to TARGETs (added to its targets if it exists)"
    )
    add.add_argument("alias", metavar="ALIAS", help="an address in one of our domains")
    add.add_argument("targets", metavar="TARGET", nargs="+", help="users or any other address")
    add.set_defaults(handler=alias_add)

    delete = commands.add_parser("del", help="remove an alias")
    delete.add_argument("alias", metavar="ALIAS")
    delete.set_defaults(handler=alias_del)

    listing = commands.add_parser("list", help="print every alias and its targets")
    listing.set_defaults(handler=alias_list)


def alias_add(args: argparse.Namespace, config: Config) -> int:
    alias = check_address(args.alias)
    domain = alias_key(alias).rpartition("@")[2]
    if not config.is_local_domain(domain):
        raise CommandError(
            f"{domain} is not one of this server's domains ({', '.join(config.domains)}); "
            "an alias must be an address this server receives mail for"
        )

    alias, targets = AliasTable(config.aliases, config.domains).add(alias, args.targets)
    print(f"{alias}: {', '.join(targets)}")
    keeps_copy = alias_key(alias) in {alias_key(t) for t in targets}
    if UserDatabase(config.users).exists(alias) and not keeps_copy:
        print(
            f"note: {alias} is also a user; their mail now goes only to the targets "
            f"(add {alias} itself as a target to keep a copy in the mailbox)"
        )
    return EXIT_OK


def alias_del(args: argparse.Namespace, config: Config) -> int:
    alias = AliasTable(config.aliases, config.domains).delete(args.alias)
    print(f"deleted {alias}")
    return EXIT_OK


def alias_list(args: argparse.Namespace, config: Config) -> int:
    aliases = AliasTable(config.aliases, config.domains).aliases()
    for alias in sorted(aliases, key=str.lower):
        print(f"{alias}: {', '.join(aliases[alias])}")
    return EXIT_OK


def read_password() -> str:
    """The first line of stdin when piped; else asked twice at the terminal."""
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise CommandError("the two passwords differ; nothing was changed")

    if not password:
        raise CommandError("the password is empty; nothing was changed")
    return password


COMMAND_GROUPS: dict[str, Register] = {
    "user": register_user_commands,
    "alias": register_alias_commands,
    "queue": queue_admin.register,
    "dkim": dkim.register,
}
