"""APPEND (RFC 3501 6.3.11) with APPENDUID (RFC 4315 3) and MULTIAPPEND (RFC 3502).

The message arrives as one literal, already bounded by the configured
message size (the assembler refuses a larger one before reading it). It is
stored durably (written, fsynced, renamed, directory fsynced) before the
OK. Flags are kept as STORE keeps them. Several messages in one APPEND
(MULTIAPPEND) are stored all or none; together they must fit the
assembler's bound for one APPEND (the message size plus the command allowance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailsuite import quota
from mailsuite.imap.commands.base import Command, mailbox_argument
from mailsuite.imap.commands.copy import target_folder
from mailsuite.imap.flags import letters_for
from mailsuite.imap.parser import Reader, format_uid_set
from mailsuite.imap.responses import APPENDUID, CANNOT, OK, Reply, bad, no
from mailsuite.store import Folder, Message

if TYPE_CHECKING:
    from mailsuite.imap.server import IMAPSession


@dataclass(frozen=True)
class Incoming:
    """One message of an APPEND: its flags, arrival time and octets."""

    flags: list[str]
    internaldate: float | None
    data: bytes


async def append(session: IMAPSession, command: Command) -> Reply:
    reader = command.args
    reader.space()
    name = mailbox_argument(reader)
    reader.space()
    incoming = [_message(reader)]
    # RFC 3502 MULTIAPPEND: more messages follow, each with its own flags and date.
    while reader.take(b" "):
        incoming.append(_message(reader))
    reader.end()

    folder = target_folder(session, name)
    total = sum(len(m.data) for m in incoming)
    quota.check(folder.account, session.ctx.config.limits.quota, total)
    stored = await _store_all(folder, incoming)
    uids = format_uid_set([m.uid for m in stored])
    return Reply(OK, "APPEND completed", f"{APPENDUID} {folder.uidvalidity} {uids}")


def _message(reader: Reader) -> Incoming:
    """``[SP flag-list] [SP date-time] SP literal`` (the space before is read already)."""
    flags: list[str] = []
    if reader.peek() == 0x28:  # "("
        flags = reader.flag_list()
        reader.space()
    internaldate = None
    if reader.peek() == 0x22:  # '"'
        internaldate = reader.date_time()
        reader.space()
    # RFC 3516 4.4: with BINARY, the message may come as a literal8 (~{n}).
    reader.take(b"~")
    if reader.peek() != 0x7B:  # "{"
        raise bad("APPEND needs the message as a literal")
    data = reader.string()
    if not data:
        raise no("An empty message cannot be stored", CANNOT)
    return Incoming(flags, internaldate, data)


async def _store_all(folder: Folder, incoming: list[Incoming]) -> list[Message]:
    """Store every message or none (RFC 3502): undo on failure."""
    stored: list[Message] = []
    try:
        for message in incoming:
            letters = letters_for(folder, message.flags)
            stored.append(await folder.append(message.data, letters, message.internaldate))
    except BaseException:
        folder.expunge(m.uid for m in stored)
        raise
    return stored
