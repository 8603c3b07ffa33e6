r"""STORE and UID STORE (RFC 3501 6.4.6).

System flags and keywords are kept (see ``mailsuite.imap.flags``); \Recent
and unknown ``\`` flags are ignored, and a keyword that finds no free
letter is dropped: the FETCH FLAGS answer shows the client what was kept.
Other sessions hear of the change through their folder listener; this
session's own change is answered here and not queued again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailsuite.imap.commands.base import CONDSTORE, Command, writable
from mailsuite.imap.flags import updated
from mailsuite.imap.parser import ParseError, Reader, format_uid_set
from mailsuite.imap.responses import EXPUNGEISSUED, MODIFIED, NO, OK, Reply, bad
from mailsuite.store import MessageGone

if TYPE_CHECKING:
    from mailsuite.imap.selected import SelectedMailbox
    from mailsuite.imap.server import IMAPSession

BATCH_BYTES = 64 * 1024


def store(session: IMAPSession, command: Command) -> Reply:
    reader = command.args
    reader.space()
    numbers = reader.sequence_set()
    reader.space()
    unchanged_since = _unchanged_since(reader)
    mode, silent = _store_action(reader.item_name())
    reader.space()
    flags = reader.flags_or_list()
    reader.end()

    view = writable(session)
    positions = view.select(numbers, command.uid)
    if unchanged_since is not None:
        session.enable(CONDSTORE)  # RFC 7162 3.1: a CONDSTORE enabling command
    folder = view.folder
    out: list[bytes] = []
    size = 0
    gone = False
    modified: list[int] = []
    with view.quiet(view.uids[i] for i in positions), folder.batch():
        for position in positions:
            message = view.messages[position]
            if unchanged_since is not None and message.modseq > unchanged_since:
                # RFC 7162 3.1.3: changed since the client looked; left alone.
                modified.append(message.uid if command.uid else position + 1)
                continue
            try:
                if view.is_expunged(message):
                    raise MessageGone(message.uid)
                before = message.modseq
                folder.set_flags(message, updated(folder.flags_of(message), flags, mode))
            except MessageGone:
                gone = True
                continue
            line = _response(view, command, position, silent, message.modseq != before)
            out.append(line)
            size += len(line)
            if size >= BATCH_BYTES:
                session.untagged(b"".join(out))
                out, size = [], 0
    session.untagged(b"".join(out))
    if gone:
        return Reply(NO, "Some messages were expunged", EXPUNGEISSUED)
    if modified:
        code = f"{MODIFIED} {format_uid_set(sorted(modified))}"
        return Reply(OK, "Conditional STORE failed for some messages", code)
    return Reply(OK, "STORE completed")


def _unchanged_since(reader: Reader) -> int | None:
    """``"(" "UNCHANGEDSINCE" SP mod-sequence-valzer ")" SP`` (RFC 7162 3.1.3), if given."""
    if reader.peek() != 0x28:
        return None
    reader.enter()
    name = reader.keyword()
    if name != "UNCHANGEDSINCE":
        raise bad(f"Unknown STORE modifier {name}")
    reader.space()
    value = reader.mod_sequence()
    reader.leave()
    reader.space()
    return value


def _response(
    view: SelectedMailbox, command: Command, position: int, silent: bool, changed: bool
) -> bytes:
    """The untagged FETCH for one stored message, or nothing.

    RFC 7162 3.1.3: with CONDSTORE on, a change is reported with its UID and
    MODSEQ even after ``.SILENT`` (then without FLAGS).
    """
    message = view.messages[position]
    if view.condstore:
        if not silent:
            return view.flag_update(position)
        if changed:
            return b"* %d FETCH (UID %d MODSEQ (%d))\r\n" % (
                position + 1,
                message.uid,
                message.modseq,
            )
        return b""
    if silent:
        return b""
    uid = b"UID %d " % message.uid if command.uid else b""
    return b"* %d FETCH (%sFLAGS %s)\r\n" % (position + 1, uid, view.flags(message))


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
