"""Reading the text after DATA: the end marker, dot-unstuffing, line ends, size.

The end of the message is ``CRLF . CRLF`` and nothing else (RFC 5321
4.1.1.4). ``LF . LF``, ``CR . CR``, ``LF . CRLF`` and ``CRLF . LF`` are
message text. Treating any of them as the end is what SMTP smuggling
(CVE-2023-51764 and its siblings, December 2023) exploits: a server that
ends the message where the next hop does not lets a sender hide a second,
forged message inside the first.

Bare line ends are *normalised*, not refused (Postfix's
``smtpd_forbid_bare_newline = normalize``): every lone LF or CR inside the
message becomes CRLF before the message is stored or queued. Why normalise:
scripts and old MTAs still send bare LF, and refusing their mail helps no
one once the end marker is strict. Why it is safe: the message only ever
ends at ``CRLF . CRLF`` in the bytes received, and what we store or relay
has CRLF line ends only, so when the relayer dot-stuffs it, a smuggled
``LF . LF`` has become an ordinary stuffed ``..`` line and cannot end the
message at the next hop either. The Maildir store writes CRLF for the same
reason (``mailsuite.store.to_crlf``), so both routes see the same bytes.

After normalising, the first dot of every line that starts with one is
removed (RFC 5321 4.5.2). A line after a bare LF is a line like any other
then, as in Postfix: a smuggled ``LF . LF`` is stored as an empty line.

Line length: nothing is buffered per line, so no line is too long for us;
memory is bounded by ``limits.message_size`` (RFC 5322 2.1.1's 998 octets
is the sender's duty, and Postfix does not enforce it either). Once the
octets received pass what could still unstuff to ``limit`` octets, the rest
is read to the end marker and thrown away, and the message is refused.

The work is per chunk, not per line: ``bytes.find`` for the end marker, one
``replace`` to unstuff, a tail of four octets to catch a marker split across
chunks.
"""

from __future__ import annotations

from mailsuite.store import to_crlf

END = b"\r\n.\r\n"

#: The DATA command's own CRLF: the message starts at the start of a line,
#: so a first line of "." ends an empty message.
_START = b"\r\n"


class DataReader:
    """Collects one message from raw chunks until ``CRLF . CRLF``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: A stuffed line is at least ``..CRLF`` (4 octets for 3), so more
        #: than this many octets can never unstuff to ``limit`` or fewer.
        self._bound = limit * 4 // 3 + len(END)
        self._chunks: list[bytes] = []
        self._received = 0
        self._tail = _START
        self.overflow = False
        #: Input after the end marker (pipelined commands), once done.
        self.rest: bytes | None = None

    @property
    def done(self) -> bool:
        return self.rest is not None

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; True once the end marker has been seen."""
        tail = self._tail
        found = (tail + chunk[:4]).find(END)
        if found >= 0:
            # The marker starts in the tail: it may cut into text kept already.
            found -= len(tail)
        else:
            found = chunk.find(END)
            if found < 0:
                self._keep(chunk)
                self._tail = chunk[-4:] if len(chunk) >= 4 else (tail + chunk)[-4:]
                return False

        body_end = found + 2
        if body_end >= 0:
            self._keep(chunk[:body_end])
        else:
            self._drop_last(-body_end)
        self.rest = chunk[found + len(END) :]
        return True

    def _keep(self, data: bytes) -> None:
        self._received += len(data)
        if self.overflow:
            return
        if self._received > self._bound:
            self.overflow = True
            self._chunks.clear()
            return
        self._chunks.append(data)

    def _drop_last(self, count: int) -> None:
        """Take back the last ``count`` octets kept: they belong to the marker."""
        self._received -= count
        if not self.overflow:
            data = b"".join(self._chunks)
            self._chunks = [data[:-count]]

    def message(self) -> bytes | None:
        """The message as received: CRLF line ends, unstuffed; None if too big."""
        if self.overflow:
            return None
        data = to_crlf(b"".join(self._chunks))
        self._chunks.clear()

        if data.startswith(b"."):
            data = data[1:]
        data = data.replace(b"\r\n.", b"\r\n")

        if len(data) > self.limit:
            return None
        return data
