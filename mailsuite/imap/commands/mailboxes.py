"""CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE and STATUS (RFC 3501 6.3).

Names arrive in modified UTF-7 and are checked by the store, whose errors
the session turns into ``NO [CODE]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mailsuite.imap.commands.base import CONDSTORE, Command, account_of, mailbox_argument
from mailsuite.imap.parser import Reader
from mailsuite.imap.responses import OK, USEATTR, Reply, bad, mailbox, no
from mailsuite.store import names

if TYPE_CHECKING:
    from mailsuite.imap.server import IMAPSession
    from mailsuite.store import Folder


def _one_name(command: Command) -> str:
    reader = command.args
    reader.space()
    name = mailbox_argument(reader)
    reader.end()
    return name


#: RFC 6154 2: the uses a folder here can have. \All and \Flagged would be
#: virtual mailboxes, which the store does not have, so CREATE refuses them.
CREATABLE_USES = {u.lower(): u for u in ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")}


def create(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 6.3.4, with ``(USE (...))`` of CREATE-SPECIAL-USE (RFC 6154 3)."""
    reader = command.args
    reader.space()
    name = mailbox_argument(reader)
    uses = _create_uses(reader)
    reader.end()
    # RFC 3501 6.3.3: a trailing delimiter only says inferiors will follow.
    if name.endswith(names.DELIMITER):
        name = name.rstrip(names.DELIMITER)

    account = account_of(session)
    account.create_folder(name)
    if uses:
        account.set_special_use(name, " ".join(uses))
    return Reply(OK, "CREATE completed")


def _create_uses(reader: Reader) -> list[str]:
    """``[SP "(" "USE" SP "(" [use-attr *(SP use-attr)] ")" ")"]``, each use one we keep."""
    if not reader.take(b" "):
        return []
    reader.enter()
    param = reader.keyword()
    if param != "USE":
        raise bad(f"Unknown CREATE parameter {param}")
    reader.space()
    wanted = reader.paren_list(reader.flag)
    reader.leave()
    uses = []
    for use in wanted:
        known = CREATABLE_USES.get(use.lower())
        if known is None:
            raise no(f"Special use {use} is not supported", USEATTR)
        if known not in uses:
            uses.append(known)
    return uses


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


#: RFC 3501 6.3.10, HIGHESTMODSEQ (RFC 7162 3.1.6), APPENDLIMIT (RFC 7889 3),
#: SIZE (RFC 8438), DELETED and DELETED-STORAGE (RFC 9208 4.3).
STATUS_ITEMS = (
    "MESSAGES",
    "RECENT",
    "UIDNEXT",
    "UIDVALIDITY",
    "UNSEEN",
    "HIGHESTMODSEQ",
    "APPENDLIMIT",
    "SIZE",
    "DELETED",
    "DELETED-STORAGE",
)


def read_status_items(reader: Reader) -> list[str]:
    """``"(" status-att *(SP status-att) ")"``, each a known item."""
    items = reader.paren_list(reader.keyword)
    if not items:
        raise bad("STATUS needs at least one item")
    for item in items:
        if item not in STATUS_ITEMS:
            raise bad(f"Unknown STATUS item {item}")
    return items


def status(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 6.3.10, from folder metadata only (no message is read)."""
    reader = command.args
    reader.space()
    name = mailbox_argument(reader)
    reader.space()
    items = read_status_items(reader)
    reader.end()

    folder = account_of(session).folder(name, create_inbox=True)
    session.untagged(status_response(session, folder, items))
    return Reply(OK, "STATUS completed")


def status_response(session: IMAPSession, folder: Folder, items: list[str]) -> bytes:
    """``* STATUS name (item value ...)`` for STATUS and LIST-STATUS (RFC 5819)."""
    if "HIGHESTMODSEQ" in items:
        session.enable(CONDSTORE)  # RFC 7162 3.1: a CONDSTORE enabling command
    folder.refresh()
    limit = session.ctx.config.limits.message_size
    values: dict[str, Callable[[], object]] = {
        "MESSAGES": lambda: len(folder.messages),
        "RECENT": lambda: session.factory.recent.tracker(folder).count(folder),
        "UIDNEXT": lambda: folder.uidnext,
        "UIDVALIDITY": lambda: folder.uidvalidity,
        "UNSEEN": lambda: sum(1 for m in folder.messages if "S" not in m.letters),
        "HIGHESTMODSEQ": lambda: folder.highest_modseq,
        "APPENDLIMIT": lambda: limit if limit else "NIL",
        "SIZE": lambda: sum(folder.wire_size(m) for m in folder.messages),
        "DELETED": lambda: sum(1 for m in folder.messages if "T" in m.letters),
        "DELETED-STORAGE": lambda: _kib(
            sum(folder.wire_size(m) for m in folder.messages if "T" in m.letters)
        ),
    }
    text = " ".join(f"{item} {values[item]()}" for item in items)
    return b"* STATUS " + mailbox(folder.name) + f" ({text})\r\n".encode()


def _kib(octets: int) -> int:
    """RFC 9208 storage units: 1024 octets, rounded up."""
    return (octets + 1023) // 1024
