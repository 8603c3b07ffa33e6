"""CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE and STATUS (RFC 3501 6.3).

Names arrive in modified UTF-7 and are checked by the store, whose errors
the session turns into ``NO [CODE]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailsuite.imap.commands.base import Command, account_of, mailbox_argument
from mailsuite.imap.responses import OK, Reply, bad, mailbox
from mailsuite.store import names

if TYPE_CHECKING:
    from mailsuite.imap.server import IMAPSession


def _one_name(command: Command) -> str:
    reader = command.args
    reader.space()
    name = mailbox_argument(reader)
    reader.end()
    return name


def create(session: IMAPSession, command: Command) -> Reply:
    name = _one_name(command)
    # RFC 3501 6.3.3: a trailing delimiter only says inferiors will follow.
    if name.endswith(names.DELIMITER):
        name = name.rstrip(names.DELIMITER)
    account_of(session).create_folder(name)
    return Reply(OK, "CREATE completed")


def delete(session: IMAPSession, command: Command) -> Reply:
    account_of(session).delete_folder(_one_name(command))
    return Reply(OK, "DELETE completed")


def rename(session: IMAPSession, command: Command) -> Reply:
    reader = command.args
    reader.space()
    old = mailbox_argument(reader)
    reader.space()
    new = mailbox_argument(reader)
    reader.end()
    account_of(session).rename_folder(old, new)
    return Reply(OK, "RENAME completed")


def subscribe(session: IMAPSession, command: Command) -> Reply:
    account_of(session).subscribe(_one_name(command))
    return Reply(OK, "SUBSCRIBE completed")


def unsubscribe(session: IMAPSession, command: Command) -> Reply:
    account_of(session).unsubscribe(_one_name(command))
    return Reply(OK, "UNSUBSCRIBE completed")


STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")


def status(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 6.3.10, from folder metadata only (no message is read)."""
    reader = command.args
    reader.space()
    name = mailbox_argument(reader)
    reader.space()
    items = reader.paren_list(reader.keyword)
    reader.end()
    if not items:
        raise bad("STATUS needs at least one item")
    for item in items:
        if item not in STATUS_ITEMS:
            raise bad(f"Unknown STATUS item {item}")

    folder = account_of(session).folder(name, create_inbox=True)
    folder.refresh()
    values = {
        "MESSAGES": lambda: len(folder.messages),
        "RECENT": lambda: session.factory.recent.tracker(folder).count(folder),
        "UIDNEXT": lambda: folder.uidnext,
        "UIDVALIDITY": lambda: folder.uidvalidity,
        "UNSEEN": lambda: sum(1 for m in folder.messages if "S" not in m.letters),
    }
    text = " ".join(f"{item} {values[item]()}" for item in items)
    session.untagged(b"* STATUS " + mailbox(folder.name) + f" ({text})\r\n".encode())
    return Reply(OK, "STATUS completed")
