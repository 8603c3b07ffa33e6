r"""STORE and UID STORE (RFC 3501 6.4.6).

System flags and keywords are kept (see ``mailsuite.imap.flags``); \Recent
and unknown ``\`` flags are ignored, and a keyword that finds no free
letter is dropped: the FETCH FLAGS answer shows the client what was kept.
Other sessions hear of the change through their folder listener; this
session's own change is answered here and not queued again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailsuite.imap.commands.base import Command, writable
from mailsuite.imap.flags import updated
from mailsuite.imap.parser import ParseError
from mailsuite.imap.responses import EXPUNGEISSUED, NO, OK, Reply
from mailsuite.store import MessageGone

if TYPE_CHECKING:
    from mailsuite.imap.server import IMAPSession

BATCH_BYTES = 64 * 1024


def store(session: IMAPSession, command: Command) -> Reply:
    reader = command.args
    reader.space()
    numbers = reader.sequence_set()
    reader.space()
    mode, silent = _store_action(reader.item_name())
    reader.space()
    flags = reader.flags_or_list()
    reader.end()

    view = writable(session)
    positions = view.select(numbers, command.uid)
    folder = view.folder
    out: list[bytes] = []
    size = 0
    gone = False
    with view.quiet(view.uids[i] for i in positions), folder.batch():
        for position in positions:
            message = view.messages[position]
            try:
                if view.is_expunged(message):
                    raise MessageGone(message.uid)
                folder.set_flags(message, updated(folder.flags_of(message), flags, mode))
            except MessageGone:
                gone = True
                continue
            if silent:
                continue
            uid = b"UID %d " % message.uid if command.uid else b""
            line = b"* %d FETCH (%sFLAGS %s)\r\n" % (position + 1, uid, view.flags(message))
            out.append(line)
            size += len(line)
            if size >= BATCH_BYTES:
                session.untagged(b"".join(out))
                out, size = [], 0
    session.untagged(b"".join(out))
    if gone:
        return Reply(NO, "Some messages were expunged", EXPUNGEISSUED)
    return Reply(OK, "STORE completed")


def _store_action(name: str) -> tuple[str, bool]:
    """``[+|-]FLAGS[.SILENT]`` as (mode, silent)."""
    mode = ""
    if name[:1] in ("+", "-"):
        mode, name = name[0], name[1:]
    silent = name.endswith(".SILENT")
    if silent:
        name = name[: -len(".SILENT")]
    if name != "FLAGS":
        raise ParseError("expected FLAGS, +FLAGS or -FLAGS")
    return mode, silent
