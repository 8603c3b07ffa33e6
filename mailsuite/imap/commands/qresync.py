"""SELECT and EXAMINE parameters of CONDSTORE and QRESYNC (RFC 7162 3.1.8, 3.2.5).

``SELECT box (QRESYNC (uidvalidity modseq [known-uids [seq-match]]))`` lets
a client that cached the mailbox learn, in the SELECT itself, which of its
messages vanished (``* VANISHED (EARLIER)``) and whose flags changed (an
untagged FETCH each). The store keeps every expunge with its modseq, so the
sequence match data that helps servers with a partial history is read and
checked but not needed. When the folder's index was rebuilt, expunges from
before that are not recorded; then every known UID that no longer exists
is reported, which RFC 7162 3.2.10 allows.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailsuite.imap.commands.base import CONDSTORE, QRESYNC
from mailsuite.imap.parser import ParseError, Reader, SequenceSet
from mailsuite.imap.responses import bad

if TYPE_CHECKING:
    from mailsuite.imap.selected import SelectedMailbox
    from mailsuite.imap.server import IMAPSession
    from mailsuite.store import Folder


@dataclass(frozen=True)
class Resync:
    """What a QRESYNC client knows of the mailbox."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None


@dataclass(frozen=True)
class SelectOptions:
    condstore: bool = False
    resync: Resync | None = None


def read_select_options(session: IMAPSession, reader: Reader) -> SelectOptions:
    """``[SP "(" select-param *(SP select-param) ")"]`` after the mailbox name."""
    if reader.at_end():
        return SelectOptions()
    reader.space()
    condstore = False
    resync = None
    reader.enter()
    while True:
        name = reader.keyword()
        if name == CONDSTORE:
            condstore = True
        elif name == QRESYNC:
            if QRESYNC not in session.enabled:
                # RFC 7162 3.2.5: QRESYNC parameters need ENABLE QRESYNC first.
                raise bad("QRESYNC is not enabled")
            reader.space()
            resync = _read_resync(reader)
        else:
            raise bad(f"Unknown SELECT parameter {name}")
        if not reader.take(b" "):
            break
    reader.leave()
    reader.end()
    return SelectOptions(condstore, resync)


def read_modseq(reader: Reader, allow_zero: bool = True) -> int:
    """``mod-sequence-value`` (or ``mod-sequence-valzer`` with ``allow_zero``)."""
    value = reader.mod_sequence()
    if value == 0 and not allow_zero:
        raise ParseError("a mod-sequence value must not be zero here")
    return value


def _read_resync(reader: Reader) -> Resync:
    reader.enter()
    uidvalidity = reader.nz_number()
    reader.space()
    modseq = read_modseq(reader, allow_zero=False)
    known = None
    if reader.take(b" "):
        if reader.peek() != 0x28:
            known = reader.sequence_set()
        if reader.peek() == 0x28 or reader.take(b" "):
            # seq-match-data: checked for syntax; our history is complete.
            reader.enter()
            reader.sequence_set()
            reader.space()
            reader.sequence_set()
            reader.leave()
    reader.leave()
    return Resync(uidvalidity, modseq, known)


def resync_lines(view: SelectedMailbox, resync: Resync) -> list[bytes]:
    """``* VANISHED (EARLIER)`` and FETCH of changed flags since the client's modseq."""
    folder = view.folder
    if resync.uidvalidity != folder.uidvalidity:
        return []
    out = []
    vanished = vanished_earlier(folder, resync.modseq, resync.known_uids)
    if vanished:
        out.append(vanished)
    known = resync.known_uids
    top = view.uids[-1] if view.uids else 0
    ranges = known.resolve(top) if known is not None else [(1, top)]
    for low, high in ranges:
        start, end = bisect_left(view.uids, low), bisect_right(view.uids, high)
        for position in range(start, end):
            if view.messages[position].modseq > resync.modseq:
                out.append(view.flag_update(position))
    return out


def vanished_earlier(folder: Folder, modseq: int, within: SequenceSet | None) -> bytes:
    """``* VANISHED (EARLIER) uids`` for UIDs expunged after ``modseq``, or b"" if none."""
    top = folder.uidnext - 1
    ranges = within.resolve(top) if within is not None else [(1, top)]
    if modseq < folder.index.history_start():
        gone = _missing(folder, ranges)
    else:
        gone = _clip(folder.vanished_since(modseq), ranges)
    if not gone:
        return b""
    return b"* VANISHED (EARLIER) " + format_ranges(gone).encode("ascii") + b"\r\n"


def _clip(uids: list[int], ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The sorted ``uids`` inside ``ranges``, as ranges."""
    out: list[tuple[int, int]] = []
    for low, high in ranges:
        for uid in uids[bisect_left(uids, low) : bisect_right(uids, high)]:
            if out and out[-1][1] == uid - 1:
                out[-1] = (out[-1][0], uid)
            else:
                out.append((uid, uid))
    return out


def _missing(folder: Folder, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """UIDs in ``ranges`` below UIDNEXT that no message has, as ranges."""
    present = [m.uid for m in folder.messages]
    out: list[tuple[int, int]] = []
    for low, high in ranges:
        high = min(high, folder.uidnext - 1)
        at = low
        for uid in present[bisect_left(present, low) : bisect_right(present, high)]:
            if uid > at:
                out.append((at, uid - 1))
            at = uid + 1
        if at <= high:
            out.append((at, high))
    return out


def format_ranges(ranges: list[tuple[int, int]]) -> str:
    return ",".join(str(low) if low == high else f"{low}:{high}" for low, high in ranges)
