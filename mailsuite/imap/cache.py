"""Recently read messages and their parses, shared by a factory's sessions.

Clients fetch the same message several times in a row (Thunderbird asks for
header fields, then the body, then the text part of one message, sometimes
over two connections), so the bytes and the ``ParsedMessage`` of the last
few messages are kept. A Maildir file's key names one content for ever, so
an entry never goes stale; it only ages out. Flags, UIDs and sizes never
come from here: they are folder metadata.
"""

from __future__ import annotations

from collections import OrderedDict

from mailsuite.imap.message import ParsedMessage
from mailsuite.store import Folder, Message

#: Entries kept, and the total octets they may hold.
MAX_ENTRIES = 64
MAX_BYTES = 32 * 1024 * 1024


class CachedMessage:
    """A message's bytes as served, and its parse made on first need."""

    __slots__ = ("_parsed", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._parsed: ParsedMessage | None = None

    @property
    def parsed(self) -> ParsedMessage:
        if self._parsed is None:
            self._parsed = ParsedMessage(self.data)
        return self._parsed


class MessageCache:
    """A small LRU of ``CachedMessage`` by folder and Maildir key."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], CachedMessage] = OrderedDict()
        self._bytes = 0

    def get(self, folder: Folder, message: Message) -> CachedMessage:
        """The message, from memory or read now (``MessageGone`` if it was expunged)."""
        key = (folder.path, message.key)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        entry = CachedMessage(folder.read(message))
        self._add(key, entry)
        return entry

    def peek(self, folder: Folder, message: Message) -> CachedMessage | None:
        """The message if it is in memory; a bulk reader (SEARCH) should not evict others."""
        return self._entries.get((folder.path, message.key))

    def _add(self, key: tuple[str, str], entry: CachedMessage) -> None:
        size = len(entry.data)
        if size > self.max_bytes // 4:
            return
        self._entries[key] = entry
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= len(old.data)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)
