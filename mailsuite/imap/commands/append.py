"""APPEND (RFC 3501 6.3.11) with APPENDUID (RFC 4315 3).

The message arrives as one literal, already bounded by the configured
message size (the assembler refuses a larger one before reading it). It is
stored durably (written, fsynced, renamed, directory fsynced) before the
OK. Flags are kept as STORE keeps them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailsuite.imap.commands.base import Command, mailbox_argument
from mailsuite.imap.commands.copy import target_folder
from mailsuite.imap.flags import letters_for
from mailsuite.imap.responses import APPENDUID, CANNOT, OK, Reply, bad, no

if TYPE_CHECKING:
    from mailsuite.imap.server import IMAPSession


async def append(session: IMAPSession, command: Command) -> Reply:
    reader = command.args
    reader.space()
    name = mailbox_argument(reader)
    reader.space()
    flags: list[str] = []
    if reader.peek() == 0x28:  # "("
        flags = reader.flag_list()
        reader.space()
    internaldate = None
    if reader.peek() == 0x22:  # '"'
        internaldate = reader.date_time()
        reader.space()
    if reader.peek() != 0x7B:  # "{"
        raise bad("APPEND needs the message as a literal")
    data = reader.string()
    reader.end()
    if not data:
        raise no("An empty message cannot be stored", CANNOT)

    folder = target_folder(session, name)
    message = await folder.append(data, letters_for(folder, flags), internaldate)
    return Reply(OK, "APPEND completed", f"{APPENDUID} {folder.uidvalidity} {message.uid}")
