"""COPY, MOVE (RFC 3501 6.4.7, RFC 6851) and their UID forms, with COPYUID (RFC 4315).

A copy is all or nothing (RFC 3501 6.4.7): when one message cannot be
copied, the copies already made are removed again and the command fails.
MOVE is a copy followed by an expunge of the originals; the client hears
``* OK [COPYUID ...]`` first, then the EXPUNGE responses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailsuite import quota
from mailsuite.imap.commands.base import (
    Command,
    account_of,
    mailbox_argument,
    selected_of,
    writable,
)
from mailsuite.imap.flags import letters_for
from mailsuite.imap.parser import format_uid_set
from mailsuite.imap.responses import (
    COPYUID,
    EXPUNGEISSUED,
    OK,
    CommandError,
    Reply,
    no,
    store_error,
)
from mailsuite.store import Folder, Message, NoSuchMailbox

if TYPE_CHECKING:
    from mailsuite.imap.server import IMAPSession


async def copy(session: IMAPSession, command: Command) -> Reply:
    return await _transfer(session, command, move=False)


async def move(session: IMAPSession, command: Command) -> Reply:
    return await _transfer(session, command, move=True)


async def _transfer(session: IMAPSession, command: Command, move: bool) -> Reply:
    reader = command.args
    reader.space()
    numbers = reader.sequence_set()
    reader.space()
    target_name = mailbox_argument(reader)
    reader.end()

    view = writable(session) if move else selected_of(session)
    messages = [view.messages[i] for i in view.select(numbers, command.uid)]
    target = target_folder(session, target_name)
    if any(view.is_expunged(m) for m in messages):
        raise no("Some messages were expunged", EXPUNGEISSUED)
    if not messages:
        return Reply(OK, f"{command.name} completed, nothing to do")
    if not move:
        # A MOVE adds nothing in the end, and must work for a user cleaning up.
        adding = sum(view.folder.wire_size(m) for m in messages)
        quota.check(target.account, session.ctx.config.limits.quota, adding)

    copies = await copy_messages(view.folder, messages, target)
    code = (
        f"{COPYUID} {target.uidvalidity} {format_uid_set([m.uid for m in messages])} "
        f"{format_uid_set([c.uid for c in copies])}"
    )
    if not move:
        return Reply(OK, "COPY completed", code)
    session.untagged(f"* OK [{code}] Moved\r\n".encode("ascii"))
    view.folder.expunge(m.uid for m in messages)
    return Reply(OK, "MOVE completed")


def target_folder(session: IMAPSession, name: str) -> Folder:
    """The folder to copy or append into; missing means ``NO [TRYCREATE]``.

    Its \\Recent tracker is made now, so what arrives is recent to the next
    session that selects it (RFC 3501 6.3.11, 6.4.7).
    """
    try:
        folder = account_of(session).folder(name, create_inbox=True)
    except NoSuchMailbox as e:
        reply = store_error(e, target=True)
        raise CommandError(reply.status, reply.text, reply.code)
    session.factory.recent.tracker(folder)
    return folder


async def copy_messages(source: Folder, messages: list[Message], target: Folder) -> list[Message]:
    """Copy with flags and arrival time; on any failure undo the copies made.

    Keyword letters are per folder, so flags go over by name.
    """
    copies: list[Message] = []
    try:
        for message in messages:
            data = source.read(message)
            when = source.internaldate(message)
            letters = letters_for(target, source.flags_of(message))
            copies.append(await target.append(data, letters, when))
    except BaseException:
        target.expunge(c.uid for c in copies)
        raise
    return copies
