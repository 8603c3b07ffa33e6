"""FETCH and UID FETCH (RFC 3501 6.4.5, 6.4.8, 7.4.2).

Two paths. When only folder metadata is asked for (UID, FLAGS,
RFC822.SIZE, INTERNALDATE) no message file is opened: flags come from the
Maildir file name, sizes and dates from the folder index, so a client's
bulk ``UID FETCH 1:* (UID FLAGS)`` costs a string format per message.
Anything else reads the message once, through the factory's cache, and
parses it only for items that need structure. ENVELOPE, BODYSTRUCTURE and
header-field selections are kept in the folder index once made, so the
next client to ask for them (Thunderbird's header fetch) opens no file.

Output goes out in chunks; between chunks the command waits for the client
to take what was sent, so fetching a whole mailbox does not pile up in
memory. A message expunged by another session but not yet announced is
served from the cache when it is there and skipped otherwise; the command
then ends ``NO [EXPUNGEISSUED]`` (RFC 5530) after sending everything else.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.logger import Logger

from mailsuite.imap.cache import CachedMessage, MessageCache
from mailsuite.imap.commands.base import CONDSTORE, QRESYNC, Command, selected_of
from mailsuite.imap.commands.qresync import vanished_earlier
from mailsuite.imap.message import UnknownTransferEncoding
from mailsuite.imap.offload import Slicer
from mailsuite.imap.parser import FetchItem, Section, parse_fetch_items
from mailsuite.imap.responses import (
    EXPUNGEISSUED,
    NO,
    OK,
    SERVERBUG,
    UNKNOWN_CTE,
    Reply,
    astring,
    bad,
    internaldate,
)
from mailsuite.imap.searchindex import note_header
from mailsuite.imap.selected import SelectedMailbox
from mailsuite.store import Folder, Message, MessageGone

if TYPE_CHECKING:
    from mailsuite.imap.message import ParsedMessage
    from mailsuite.imap.server import IMAPSession

log = Logger()

#: Responses gathered before they are handed to the session in one piece.
BATCH_BYTES = 64 * 1024

#: Messages rendered between two waits for the client to drain.
CONTENT_CHUNK = 32

#: The same when nothing is read but values the index keeps (a header fetch):
#: each message costs microseconds, and the chunk's values come in one query.
KEPT_CHUNK = 256

#: Values read from the folder index ahead: (uid, name) -> value.
KeptValues = dict[tuple[int, str], bytes]

#: Prefix of the names values are kept under in the folder index; bump it
#: when the message model's ENVELOPE, BODYSTRUCTURE or header fields change,
#: so values kept by an older version are not served.
BLOB_VERSION = "imap1:"

#: Metadata items: how each is written, and what gives its value for a view.
METADATA_FORMAT = {
    "UID": b"UID %d",
    "FLAGS": b"FLAGS %s",
    "RFC822.SIZE": b"RFC822.SIZE %d",
    "INTERNALDATE": b"INTERNALDATE %s",
    "MODSEQ": b"MODSEQ (%d)",
}
MetadataValue = Callable[[Message], object]
METADATA_VALUE: dict[str, Callable[[SelectedMailbox], MetadataValue]] = {
    "UID": lambda view: operator.attrgetter("uid"),
    "FLAGS": lambda view: view.flags,
    "RFC822.SIZE": lambda view: view.folder.wire_size,
    "INTERNALDATE": lambda view: lambda m: internaldate(view.folder.internaldate(m)),
    "MODSEQ": lambda view: operator.attrgetter("modseq"),
}


def metadata_line_maker(
    view: SelectedMailbox, names: list[str]
) -> Callable[[int, Message], bytes]:
    """A function writing one FETCH response of metadata items, with no per-item dispatch.

    The bulk flag fetch clients open a mailbox with is the hottest path of
    the server; one format string and one call per item keeps it near the
    cost of formatting the bytes.
    """
    template = b"* %d FETCH (" + b" ".join(METADATA_FORMAT[n] for n in names) + b")\r\n"
    values = [METADATA_VALUE[n](view) for n in names]
    if len(values) == 1:
        (a,) = values
        return lambda number, m: template % (number, a(m))
    if len(values) == 2:
        a, b = values
        return lambda number, m: template % (number, a(m), b(m))
    if len(values) == 3:
        a, b, c = values
        return lambda number, m: template % (number, a(m), b(m), c(m))
    return lambda number, m: template % (number, *[value(m) for value in values])


def literal(data: bytes | None) -> bytes:
    """Message text as a literal; NUL, which IMAP4rev1 forbids, goes as 0x80 (as Dovecot).

    A section that does not exist (None) is an empty string, as Dovecot answers.
    """
    return b"".join(labelled(b"", data))


#: One item of a FETCH response as pieces written one after the other: a short
#: head (label, literal size) and, apart, the literal's octets, which are never
#: copied on their way to the session (a mailbox's bodies are hundreds of MB).
Pieces = list[bytes]


def labelled(label: bytes, data: bytes | None) -> Pieces:
    """``label`` then ``data`` as a literal (see ``literal``), in pieces."""
    if not data:
        return [label + b'""']
    if b"\0" in data:
        data = data.replace(b"\0", b"\x80")
    return [label + b"{%d}\r\n" % len(data), data]


class FetchPlan:
    """The items of one FETCH, and what serving them will need."""

    def __init__(self, items: list[FetchItem], uid_command: bool, modseq: bool = False) -> None:
        if uid_command and not any(item.name == "UID" for item in items):
            # RFC 3501 6.4.8: UID FETCH answers always carry the UID.
            items = [FetchItem("UID"), *items]
        if modseq and not any(item.name == "MODSEQ" for item in items):
            # RFC 7162 3.1.4.1: CHANGEDSINCE implies the MODSEQ item.
            items = [*items, FetchItem("MODSEQ")]
        self.items = items
        self.has_modseq = any(item.name == "MODSEQ" for item in items)
        self.has_uid = any(item.name == "UID" for item in items)
        self.sets_seen = any(item.sets_seen for item in items)
        self.needs_content = any(item.needs_content for item in items)
        #: Items that always read the message (all but the ones the index keeps).
        self.needs_text = any(item.needs_content and not _keepable(item) for item in items)
        self.has_flags = any(item.name == "FLAGS" for item in items)
        #: Names of the values the index keeps for these items (read a chunk at a time).
        self.kept_names = [
            BLOB_VERSION + n for n in dict.fromkeys(map(_kept_item_name, items)) if n
        ]


def _kept_item_name(item: FetchItem) -> str:
    """The index name an item's value is kept under, or "" if it is not kept."""
    if not _keepable(item):
        return ""
    if item.name in ("ENVELOPE", "BODYSTRUCTURE", "BODY"):
        return item.name
    assert item.section is not None
    return _kept_name(item.section)


def _keepable(item: FetchItem) -> bool:
    if item.name in ("ENVELOPE", "BODYSTRUCTURE", "BODY"):
        return True
    section = item.section
    return section is not None and not section.part and section.kind.startswith("HEADER.FIELDS")


@dataclass(frozen=True)
class Modifiers:
    """FETCH modifiers (RFC 4466 2.4): CHANGEDSINCE and VANISHED of RFC 7162."""

    changed_since: int | None = None
    vanished: bool = False


def read_modifiers(session: IMAPSession, command: Command) -> Modifiers:
    """``[SP "(" fetch-modifier *(SP fetch-modifier) ")"]`` after the items."""
    reader = command.args
    if not reader.take(b" "):
        return Modifiers()
    changed_since = None
    vanished = False
    reader.enter()
    while True:
        name = reader.keyword()
        if name == "CHANGEDSINCE":
            reader.space()
            changed_since = reader.mod_sequence()
        elif name == "VANISHED":
            vanished = True
        else:
            raise bad(f"Unknown FETCH modifier {name}")
        if not reader.take(b" "):
            break
    reader.leave()
    if vanished and (not command.uid or QRESYNC not in session.enabled or changed_since is None):
        # RFC 7162 3.2.6: only UID FETCH, with CHANGEDSINCE, after ENABLE QRESYNC.
        raise bad("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC")
    return Modifiers(changed_since, vanished)


async def fetch(session: IMAPSession, command: Command) -> Reply:
    reader = command.args
    reader.space()
    numbers = reader.sequence_set()
    reader.space()
    items = parse_fetch_items(reader)
    modifiers = read_modifiers(session, command)
    reader.end()
    since = modifiers.changed_since
    plan = FetchPlan(items, command.uid, modseq=since is not None)

    view = selected_of(session)
    positions = view.select(numbers, command.uid)
    if plan.has_modseq:
        session.enable(CONDSTORE)  # RFC 7162 3.1: a CONDSTORE enabling command
    if since is not None:
        positions = [p for p in positions if view.messages[p].modseq > since]
        if modifiers.vanished:
            session.untagged(vanished_earlier(view.folder, since, numbers))
            # What VANISHED just named is not fetched as well.
            positions = [p for p in positions if not view.is_expunged(view.messages[p])]
    if plan.has_flags:
        view.flags_told(view.uids[p] for p in positions)
    if plan.needs_content:
        problems = await _fetch_content(session, view, positions, plan)
    else:
        problems = await _fetch_metadata(session, view, positions, plan)
    return problems or Reply(OK, "FETCH completed")


async def _fetch_metadata(
    session: IMAPSession, view: SelectedMailbox, positions: list[int], plan: FetchPlan
) -> Reply | None:
    line_of = metadata_line_maker(view, [item.name for item in plan.items])
    messages = view.messages
    slicer = Slicer(session.ctx.reactor)  # other sessions run between slices
    batch: list[bytes] = []
    size = 0
    gone = False
    for position in positions:
        try:
            line = line_of(position + 1, messages[position])
        except MessageGone:
            gone = True
            continue
        batch.append(line)
        size += len(line)
        if size >= BATCH_BYTES:
            session.untagged(b"".join(batch))
            batch, size = [], 0
            await session.drain()
            if slicer.due():
                await slicer.pause()
            if session.closed:
                return None
    session.untagged(b"".join(batch))
    return Reply(NO, "Some messages were expunged", EXPUNGEISSUED) if gone else None


async def _fetch_content(
    session: IMAPSession, view: SelectedMailbox, positions: list[int], plan: FetchPlan
) -> Reply | None:
    gone = failed = False
    cache = session.factory.cache
    done = 0
    slicer = Slicer(session.ctx.reactor)  # other sessions run between slices
    chunk = CONTENT_CHUNK if plan.needs_text else KEPT_CHUNK
    renderers = [_renderer(view, item) for item in plan.items]
    while done < len(positions):
        if session.closed:
            return None
        # One index commit per chunk for the values kept and the \Seen set,
        # and one index read for the values kept before; a chunk ends early
        # when the client stops taking what we send.
        with view.folder.batch():
            messages = [view.messages[p] for p in positions[done : done + chunk]]
            kept = _kept_values(view.folder, messages, plan)
            for message in messages:
                position = positions[done]
                done += 1
                try:
                    source = Source(cache, view.folder, message, kept)
                    session.untagged_pieces(_render(view, position, source, plan, renderers))
                except MessageGone:
                    gone = True
                except UnknownCTE:
                    # RFC 3516 4.3: the command fails; the client may fetch BODY instead.
                    return Reply(NO, "Unknown Content-Transfer-Encoding", UNKNOWN_CTE)
                except Exception:
                    log.failure("cannot FETCH message {uid}", uid=message.uid)
                    failed = True
                if session.write_blocked or slicer.due():
                    break
        await session.drain()
        if slicer.due():
            await slicer.pause()
    if failed:
        return Reply(NO, "Some messages could not be fetched; it has been logged", SERVERBUG)
    if gone:
        return Reply(NO, "Some messages were expunged", EXPUNGEISSUED)
    return None


def _kept_values(folder: Folder, messages: list[Message], plan: FetchPlan) -> KeptValues | None:
    """The index's values for a chunk's messages, in one read rather than one per item."""
    if not plan.kept_names:
        return None
    return folder.cached_many([m.uid for m in messages], plan.kept_names)


class Source:
    """One message's content for FETCH, read from disk only when an item needs it.

    What is costly to derive and never changes for a message (ENVELOPE,
    BODYSTRUCTURE, header field selections) is kept in the folder's index,
    so a client's second header fetch of a mailbox opens no file.
    """

    __slots__ = ("_cache", "_content", "_kept", "folder", "message")

    def __init__(
        self, cache: MessageCache, folder: Folder, message: Message, kept: KeptValues | None = None
    ) -> None:
        self._cache = cache
        self.folder = folder
        self.message = message
        #: Values read from the index ahead for the whole chunk this message is
        #: in; None when nothing was read ahead (look each value up then).
        self._kept = kept
        self._content: CachedMessage | None = None

    @property
    def content(self) -> CachedMessage:
        return self.load()

    def load(self) -> CachedMessage:
        """The message, read now if not yet (``MessageGone`` if it was expunged)."""
        if self._content is None:
            self._content = self._cache.get(self.folder, self.message)
        return self._content

    def kept(self, name: str, make: Callable[[ParsedMessage], bytes]) -> bytes:
        """A value from the index, or made from the parsed message and kept."""
        return self.kept_as(BLOB_VERSION + name, make)

    def kept_as(self, key: str, make: Callable[[ParsedMessage], bytes]) -> bytes:
        """``kept`` with the index name already made (once per FETCH, not per message)."""
        if self._kept is None:
            value = self.folder.cached(self.message, key)
        else:
            # What the chunk's read did not find is not in the index.
            value = self._kept.get((self.message.uid, key))
        if value is None:
            value = make(self.content.parsed)
            self.folder.keep(self.message, key, value)
            note_header(self.folder, self.message, self.content.parsed.head)
        return value


def _render(
    view: SelectedMailbox,
    position: int,
    source: Source,
    plan: FetchPlan,
    renderers: list[Renderer],
) -> Pieces:
    """One ``* n FETCH (...)`` response as pieces; message octets are not copied."""
    if plan.needs_text:
        source.load()  # first: if the message is gone, nothing below happens
    seen_now = plan.sets_seen and _mark_seen(view, source.message)
    values = [render(source) for render in renderers]
    if seen_now and not plan.has_flags:
        # RFC 3501 6.4.5: a \Seen set by this FETCH is reported with it.
        values.append([b"FLAGS " + view.flags(source.message)])
    if seen_now and view.condstore:
        # RFC 7162 3.1: and with its UID and new MODSEQ once CONDSTORE is on.
        if not plan.has_uid:
            values.insert(0, [b"UID %d" % source.message.uid])
        if not plan.has_modseq:
            values.append([b"MODSEQ (%d)" % source.message.modseq])
    return _joined(b"* %d FETCH (" % (position + 1), values, b")\r\n")


def _joined(head: bytes, values: list[Pieces], tail: bytes) -> Pieces:
    """``head``, the values separated by spaces, ``tail``: short pieces merged, octets apart."""
    out: Pieces = []
    short = head
    for number, value in enumerate(values):
        if number:
            short += b" "
        short += value[0]
        if len(value) > 1:
            out.append(short)
            out.extend(value[1:])
            short = b""
    out.append(short + tail)
    return out


def _mark_seen(view: SelectedMailbox, message: Message) -> bool:
    """Set \\Seen for a body fetch, unless read-only or already seen."""
    if view.readonly or "S" in message.letters or view.is_expunged(message):
        return False
    with view.quiet([message.uid]):
        view.folder.set_letters(message, message.letters + "S")
    return True


#: Writes one item of one message's response.
Renderer = Callable[[Source], Pieces]


def _renderer(view: SelectedMailbox, item: FetchItem) -> Renderer:
    """How to write ``item``, with what does not depend on the message worked out once.

    A bulk FETCH writes the same items for thousands of messages; the
    metadata and header-field items (a client's header sync) skip the
    general dispatch of ``_item``.
    """
    name = item.name
    if name in METADATA_FORMAT:
        template = METADATA_FORMAT[name]
        value = METADATA_VALUE[name](view)
        return lambda source: [template % value(source.message)]
    section = item.section
    if (
        section is not None
        and name == "BODY[]"
        and not section.part
        and section.kind.startswith("HEADER.FIELDS")
        and item.partial is None
    ):
        label = _body_label(section)
        key = BLOB_VERSION + _kept_name(section)

        def make(parsed: ParsedMessage) -> bytes:
            return parsed.section((), section.kind, section.fields) or b""

        return lambda source: [b"".join(labelled(label, source.kept_as(key, make)))]
    return lambda source: _item(view, source, item)


def _item(view: SelectedMailbox, source: Source, item: FetchItem) -> Pieces:
    name = item.name
    if name in METADATA_FORMAT:
        return [METADATA_FORMAT[name] % METADATA_VALUE[name](view)(source.message)]
    if name == "ENVELOPE":
        return [b"ENVELOPE " + source.kept(name, lambda p: p.envelope())]
    if name == "BODYSTRUCTURE":
        return [b"BODYSTRUCTURE " + source.kept(name, lambda p: p.bodystructure(extensible=True))]
    if name == "BODY":
        return [b"BODY " + source.kept(name, lambda p: p.bodystructure(extensible=False))]
    if name == "BINARY[]":
        return _binary(source, item)
    if name == "BINARY.SIZE":
        data = _decoded(source, item)
        label = b"BINARY.SIZE[" + _section_label(item.section or Section()) + b"]"
        return [label + b" %d" % len(data or b"")]
    if name == "RFC822":
        return labelled(b"RFC822 ", source.content.data)
    if name == "RFC822.HEADER":
        return labelled(b"RFC822.HEADER ", source.content.parsed.section((), "HEADER"))
    if name == "RFC822.TEXT":
        return labelled(b"RFC822.TEXT ", source.content.parsed.section((), "TEXT"))
    return _body_section(source, item)


def _body_section(source: Source, item: FetchItem) -> Pieces:
    """``BODY[section]<origin>`` and its data (RFC 3501 6.4.5, 7.4.2)."""
    section = item.section or Section()
    label = _body_label(section)
    data: bytes | None
    if not section.part and not section.kind:
        data = source.content.data
    elif not section.part and section.kind.startswith("HEADER.FIELDS"):
        data = source.kept(
            _kept_name(section),
            lambda p: p.section((), section.kind, section.fields) or b"",
        )
        if item.partial is None:
            # A few hundred octets: one piece is cheaper than two.
            return [b"".join(labelled(label, data))]
    else:
        data = source.content.parsed.section(section.part, section.kind, section.fields)
    if item.partial is not None:
        offset, length = item.partial
        # A partial past the end is an empty string, not the whole message.
        data = (data or b"")[offset : offset + length]
        label = label[:-1] + b"<%d> " % offset
    return labelled(label, data)


@functools.lru_cache(maxsize=256)
def _body_label(section: Section) -> bytes:
    """``BODY[section] ``: made once per distinct section, not once per message."""
    return b"BODY[" + _section_label(section) + b"] "


@functools.lru_cache(maxsize=256)
def _kept_name(section: Section) -> str:
    """The index name a header-field selection is kept under (fields sorted, deduplicated)."""
    fields = " ".join(sorted(set(section.fields)))
    return f"{section.kind} ({fields})"


def _decoded(source: Source, item: FetchItem) -> bytes | None:
    """A part with its transfer encoding undone (RFC 3516); ``UnknownCTE`` if we cannot."""
    part = item.section.part if item.section else ()
    try:
        return source.content.parsed.binary_section(part)
    except UnknownTransferEncoding as e:
        raise UnknownCTE(str(e)) from None


def _binary(source: Source, item: FetchItem) -> Pieces:
    """``BINARY[part]<origin>`` and its data: a literal8 when it holds NUL (RFC 3516 4.3)."""
    data = _decoded(source, item) or b""
    label = b"BINARY[" + _section_label(item.section or Section()) + b"]"
    if item.partial is not None:
        offset, length = item.partial
        data = data[offset : offset + length]
        label += b"<%d>" % offset
    if b"\0" in data:
        return [label + b" ~{%d}\r\n" % len(data), data]
    return labelled(label + b" ", data)


class UnknownCTE(Exception):
    """A BINARY fetch met a transfer encoding it cannot undo; the FETCH fails."""


def _section_label(section: Section) -> bytes:
    text = ".".join(str(n) for n in section.part)
    if section.kind:
        text = f"{text}.{section.kind}" if text else section.kind
    label = text.encode("ascii")
    if section.fields:
        fields = b" ".join(astring(f.encode("ascii", "replace")) for f in section.fields)
        label += b" (" + fields + b")"
    return label
