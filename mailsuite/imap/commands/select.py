"""Opening and leaving a mailbox, and expunging it (RFC 3501 6.3.1-2, 6.4.1-3).

SELECT, EXAMINE, CLOSE, UNSELECT (RFC 3691), CHECK, EXPUNGE and UID
EXPUNGE (RFC 4315 2.1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailsuite.imap import flags as imap_flags
from mailsuite.imap import responses
from mailsuite.imap.commands.base import (
    CONDSTORE,
    Command,
    mailbox_argument,
    selected_of,
    writable,
)
from mailsuite.imap.commands.qresync import read_select_options, resync_lines
from mailsuite.imap.responses import (
    HIGHESTMODSEQ,
    OK,
    READ_ONLY,
    READ_WRITE,
    UIDNEXT,
    UIDVALIDITY,
    UNSEEN,
    Reply,
)

if TYPE_CHECKING:
    from mailsuite.imap.server import IMAPSession


def select(session: IMAPSession, command: Command) -> Reply:
    return _open(session, command, readonly=False)


def examine(session: IMAPSession, command: Command) -> Reply:
    return _open(session, command, readonly=True)


def _open(session: IMAPSession, command: Command, readonly: bool) -> Reply:
    reader = command.args
    reader.space()
    name = mailbox_argument(reader)
    options = read_select_options(session, reader)

    # RFC 3501 6.3.1: the old mailbox is deselected even if this one fails.
    session.set_selected(None)
    if options.condstore:
        session.enable(CONDSTORE)
    view = session.open_view(name, readonly)
    session.set_selected(view)

    folder = view.folder
    lines = [
        imap_flags.announcement(folder, readonly),
        b"* %d EXISTS\r\n" % view.exists,
        b"* %d RECENT\r\n" % len(view.recent),
    ]
    first_unseen = next((i for i, m in enumerate(view.messages) if "S" not in m.letters), None)
    if first_unseen is not None:
        lines.append(b"* OK [%s %d] First unseen\r\n" % (UNSEEN.encode(), first_unseen + 1))
    lines.append(b"* OK [%s %d] UIDs valid\r\n" % (UIDVALIDITY.encode(), folder.uidvalidity))
    lines.append(b"* OK [%s %d] Predicted next UID\r\n" % (UIDNEXT.encode(), folder.uidnext))
    # RFC 7162 3.1.2.1: every SELECT of a CONDSTORE server says it (never NOMODSEQ).
    lines.append(responses.highest_modseq(folder.highest_modseq))
    if options.resync is not None:
        lines.extend(resync_lines(view, options.resync))
    session.untagged(b"".join(lines))
    verb = "EXAMINE" if readonly else "SELECT"
    return Reply(OK, f"{verb} completed", READ_ONLY if readonly else READ_WRITE)


def close(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 6.4.2: expunge silently (unless read-only), then deselect."""
    command.args.end()
    view = selected_of(session)
    if not view.readonly:
        view.folder.expunge(m.uid for m in view.folder.messages if "T" in m.letters)
    session.set_selected(None)
    return Reply(OK, "CLOSE completed")


def unselect(session: IMAPSession, command: Command) -> Reply:
    """RFC 3691: deselect without expunging."""
    command.args.end()
    session.set_selected(None)
    return Reply(OK, "UNSELECT completed")


def check(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 6.4.1: nothing to flush (writes are durable at once); look at the disk."""
    command.args.end()
    selected_of(session).folder.refresh()
    return Reply(OK, "CHECK completed")


def expunge(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 6.4.3 / RFC 4315 2.1: the EXPUNGE responses go out as updates."""
    reader = command.args
    view = writable(session)
    wanted: set[int] = set()
    if command.uid:
        reader.space()
        wanted = {view.uids[i] for i in view.select(reader.sequence_set(), uid=True)}
    reader.end()
    doomed = [
        m.uid
        for m in view.folder.messages
        if "T" in m.letters and (not command.uid or m.uid in wanted)
    ]
    with view.folder.batch():
        view.folder.expunge(doomed)
    if view.condstore:
        # RFC 7162: an expunge raises the mailbox's modseq and the client
        # cannot work that out from EXPUNGE/VANISHED, so the tagged OK says it.
        code = f"{HIGHESTMODSEQ} {view.folder.highest_modseq}"
        return Reply(OK, "EXPUNGE completed", code)
    return Reply(OK, "EXPUNGE completed")
