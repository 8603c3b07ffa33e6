"""The search cache: each message's header texts, ready for SEARCH, kept in the folder index.

SUBJECT, FROM, TO, CC, BCC, the sent-date keys and HEADER of the common
fields are what clients search most, and a message's headers never change.
So the first search that needs them reads each message's header only (not
the body), computes the texts exactly as :mod:`mailsuite.imap.searchtext`
compares them (decoded, addresses in normal form, case-folded), and keeps
one record per message in the folder index's ``search_texts`` table. Later
searches, in any session or after a restart, compare against memory and
open no file.

A record is one string: fields in :data:`FIELDS` order separated by
``\\x1f``. A field is empty when the message has no such header, otherwise
each value preceded by ``\\x1e``, so "present but empty" (``HEADER X ""``)
is told apart from "absent". Values cannot contain the separators (they
become NUL), and a search string containing NUL or a separator is not
answered from the cache, so a match never spans two values.
"""

from __future__ import annotations

import datetime
import re
import weakref

from twisted.logger import Logger

from mailsuite.imap.dates import sent_date
from mailsuite.imap.mime import Part, parse_header
from mailsuite.imap.searchtext import address_texts, fold, header_values
from mailsuite.store import Folder, FolderChanges, Message, to_crlf

log = Logger()

#: Bump when what a record holds, or how texts are folded, changes.
VERSION = "s1"

#: Record fields: ("SUBJECT", "") is the SUBJECT key's text (whitespace
#: squeezed); ("ADDRESS", name) the FROM/TO/CC/BCC key's; ("HEADER", name)
#: HEADER name's; ("SENT", "") the sent date as a proleptic ordinal.
FIELDS: tuple[tuple[str, str], ...] = (
    ("SUBJECT", ""),
    ("HEADER", "subject"),
    ("ADDRESS", "from"),
    ("HEADER", "from"),
    ("ADDRESS", "to"),
    ("HEADER", "to"),
    ("ADDRESS", "cc"),
    ("HEADER", "cc"),
    ("ADDRESS", "bcc"),
    ("HEADER", "bcc"),
    ("HEADER", "date"),
    ("HEADER", "message-id"),
    ("SENT", ""),
)
_POSITION = {field: i for i, field in enumerate(FIELDS)}
_SENT = _POSITION[("SENT", "")]

FIELD_SEPARATOR = "\x1f"
VALUE_SEPARATOR = "\x1e"

#: The record of a message whose header could not be read: no field present.
EMPTY_RECORD = VERSION + FIELD_SEPARATOR * len(FIELDS)
_UNSAFE = re.compile("[\x00\x1e\x1f]")
_WHITESPACE = re.compile(r"\s+")

#: Arrivals (deliveries, APPEND, a rescan) this small are recorded at once; a
#: large import is left to the first search, which works in slices.
FILL_ON_ARRIVAL = 50

#: The first read of a message file for its header; most headers fit.
HEAD_READ = 16 * 1024


def field_position(kind: str, name: str = "") -> int | None:
    """Where a key's text is in a record, or None if records do not hold it."""
    return _POSITION.get((kind, name.lower()))


def cacheable(value: str) -> bool:
    """Whether a folded search string can be answered from records."""
    return _UNSAFE.search(value) is None


def read_head(folder: Folder, message: Message) -> bytes:
    """The message's header as served (CRLF, NUL as 0x80), without reading the body.

    Reads in growing blocks until a blank line ends the header; a message
    with no blank line is all header. ``MessageGone`` if it was expunged.
    """
    with folder.open_message(message) as f:
        data = f.read(HEAD_READ)
        while True:
            end = _header_end(data)
            if end >= 0:
                data = data[:end]
                break
            more = f.read(max(len(data), HEAD_READ))
            if not more:
                break
            data += more
    data = to_crlf(data)
    return data.replace(b"\0", b"\x80") if b"\0" in data else data


def _header_end(data: bytes) -> int:
    """Where the first blank line (LF or CRLF) ends in ``data``, or -1."""
    if data.startswith((b"\n", b"\r\n")):
        return data.index(b"\n") + 1
    ends = [i + len(sep) for sep in (b"\n\n", b"\n\r\n") if (i := data.find(sep)) >= 0]
    return min(ends) if ends else -1


def make_record(head: Part) -> str:
    """A message's record, from its (header-only) parse."""
    fields = []
    for kind, name in FIELDS:
        if kind == "SUBJECT":
            texts = [_WHITESPACE.sub(" ", t) for t in header_values(head, "subject")]
        elif kind == "ADDRESS":
            texts = address_texts(head, name)
        elif kind == "HEADER":
            texts = header_values(head, name)
        else:
            fields.append(_sent_ordinal(head))
            continue
        fields.append("".join(VALUE_SEPARATOR + _UNSAFE.sub("\0", fold(t)) for t in texts))
    return VERSION + FIELD_SEPARATOR + FIELD_SEPARATOR.join(fields)


def _sent_ordinal(head: Part) -> str:
    field = head.first_header(b"date")
    day = sent_date(field.value) if field is not None else None
    return str(day.toordinal()) if day is not None else ""


def record_field(record: str, position: int) -> str:
    """One field of a record (the leading version is field -1)."""
    return record.split(FIELD_SEPARATOR, position + 2)[position + 1]


def record_sent_date(record: str) -> datetime.date | None:
    text = record_field(record, _SENT)
    return datetime.date.fromordinal(int(text)) if text else None


class SearchRecords:
    """One folder's records in memory, loaded from its index on first use.

    Records found missing are made from the message header and written back
    in batches (``flush``), one index commit per batch.
    """

    def __init__(self, folder: Folder) -> None:
        self._records: dict[int, str] = {
            uid: text
            for uid, text in folder.index.search_texts().items()
            if text.startswith(VERSION + FIELD_SEPARATOR)
        }
        self._unsaved: list[tuple[int, str]] = []
        folder.add_listener(self._changed)

    def get(self, folder: Folder, message: Message, head: Part | None = None) -> str:
        """The message's record, made now (from ``head`` if given) if not kept yet."""
        record = self._records.get(message.uid)
        if record is None:
            record = self.make(folder, message, head)
        return record

    def kept(self, message: Message) -> str | None:
        """The message's record if it is made already."""
        return self._records.get(message.uid)

    def make(self, folder: Folder, message: Message, head: Part | None = None) -> str:
        """Make, keep and return the message's record (``MessageGone`` if expunged).

        A header our parser fails on is logged and searched as empty, and
        not kept, so a fixed parser gets another go at it.
        """
        if head is None:
            head = parse_header(read_head(folder, message))
        try:
            record = make_record(head)
        except Exception:
            log.failure("cannot make the search record of message {uid}", uid=message.uid)
            return EMPTY_RECORD
        self._records[message.uid] = record
        self._unsaved.append((message.uid, record))
        return record

    def flush(self, folder: Folder) -> None:
        """Write the records made since the last flush to the index, in one commit."""
        if not self._unsaved:
            return
        rows, self._unsaved = self._unsaved, []
        with folder.batch():
            folder.index.put_search_texts(rows)

    def _changed(self, folder: Folder, changes: FolderChanges) -> None:
        for uid in changes.removed:
            self._records.pop(uid, None)
        if changes.added and len(changes.added) <= FILL_ON_ARRIVAL:
            # Soon, not inside the store's notification: a new message's
            # header is in the page cache and costs about 0.2 ms to record.
            folder.reactor.callLater(0, self._fill, folder, list(changes.added))

    def _fill(self, folder: Folder, messages: list[Message]) -> None:
        """Record messages that just arrived, so the next search opens no file."""
        for message in messages:
            if message.uid in self._records or folder.get(message.uid) is None:
                continue
            try:
                self.make(folder, message)
            except Exception:
                # Gone again, or unreadable now: the next search tries.
                continue
        self.flush(folder)


#: One ``SearchRecords`` per open folder; it goes when the folder object goes.
_RECORDS: weakref.WeakKeyDictionary[Folder, SearchRecords] = weakref.WeakKeyDictionary()


def records_of(folder: Folder) -> SearchRecords:
    records = _RECORDS.get(folder)
    if records is None:
        records = _RECORDS[folder] = SearchRecords(folder)
    return records


def note_header(folder: Folder, message: Message, head: Part) -> None:
    """Record a message whose header another command parsed anyway (a FETCH of ENVELOPE
    or header fields), so the first SEARCH after a client's header sync opens no file,
    as Dovecot's cache fills from what clients fetch."""
    records = records_of(folder)
    if records.kept(message) is None:
        records.make(folder, message, head)
        records.flush(folder)
