"""Serving one message as a POP3 multi-line response: RETR and TOP.

RFC 1939 section 3: a line of a multi-line response that begins with "."
gets one more "." in front, and the response ends with CRLF "." CRLF. The
message is served with CRLF line ends (as ``Folder.read`` and
``Folder.wire_size`` define it), and a CRLF is added before the final "."
when the message does not end with one, as Dovecot does.

Twisted's own POP3 server stuffs each 16 KiB chunk on its own and so
corrupts a message whose CRLF "." falls across a chunk boundary. Here the
only state that spans a boundary (a CR held back because it may be half of
a CRLF, whether a line has just begun, how much of TOP is left) is carried
from one chunk to the next, so the result is the same for any chunking; the
tests try every offset around every boundary. Each chunk is handled with a
few whole-buffer ``bytes`` operations, never line by line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import IO

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsuite.store import to_crlf

log = Logger()

#: Messages up to this many octets are served in one write; larger ones are
#: streamed, so a session holds a few chunks of a big message, not all of it.
WHOLE_MESSAGE_LIMIT = 1024 * 1024

#: Octets read from the file per step when streaming.
CHUNK_SIZE = 256 * 1024

CRLF = b"\r\n"

#: RFC 1939 section 3: the end of a multi-line response.
TERMINATOR = b".\r\n"


def crlf_chunks(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """The stored bytes with every line end made CRLF, as ``to_crlf`` does to the whole.

    A CR that ends a block may be the first half of a CRLF split by the
    block boundary, so it waits for the next block.
    """
    held = b""
    for block in blocks:
        if held:
            block = held + block
        held = b"\r" if block.endswith(b"\r") else b""
        if held:
            block = block[:-1]
        if block:
            yield crlf(block)

    if held:
        yield CRLF


def crlf(block: bytes) -> bytes:
    """``to_crlf``, with a fast path for the common bare-LF file (one scan, one copy)."""
    if b"\r" not in block:
        return block.replace(b"\n", CRLF)
    return to_crlf(block)


def top_chunks(chunks: Iterable[bytes], lines: int) -> Iterator[bytes]:
    """RFC 1939 TOP: the header, the blank line after it, then ``lines`` body lines.

    ``chunks`` are CRLF-normalised. A message with no blank line is all
    header and is sent whole.
    """
    chunks = iter(chunks)
    # As if a line had just ended: a message that starts with CRLF has an
    # empty header, and the blank line is its first line.
    tail = CRLF
    for chunk in chunks:
        window = tail + chunk
        end = window.find(b"\r\n\r\n")
        if end < 0:
            yield chunk
            tail = window[-3:]
            continue

        cut = end + 4 - len(tail)
        yield chunk[:cut]
        yield from _first_lines(chain([chunk[cut:]], chunks), lines)
        return


def _first_lines(chunks: Iterable[bytes], lines: int) -> Iterator[bytes]:
    """The first ``lines`` CRLF-ended lines of ``chunks`` (fewer if it ends first)."""
    remaining = lines
    for chunk in chunks:
        if remaining <= 0:
            return
        found = chunk.count(CRLF)
        if found < remaining:
            yield chunk
            remaining -= found
            continue

        end = 0
        for _ in range(remaining):
            end = chunk.index(CRLF, end) + 2
        yield chunk[:end]
        return


class DotStuffer:
    """Doubles every "." that begins a line (RFC 1939 section 3), across chunks.

    Chunks must not end between the CR and LF of a CRLF, which
    ``crlf_chunks`` and ``top_chunks`` ensure. With ``bare_lf_possible``
    (bytes not converted by us) a line begins after any LF, so that a client
    splitting lines at LF still never sees a lone "." before the real end;
    converted bytes have no bare LF, and the longer CRLF "." pattern is
    found faster.
    """

    def __init__(self, bare_lf_possible: bool = False) -> None:
        self.at_line_start = True
        self.ends_with_crlf = True
        self.line_start = b"\n." if bare_lf_possible else b"\r\n."

    def stuff(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk

        stuffed = chunk.replace(self.line_start, self.line_start + b".")
        if self.at_line_start and chunk[0] == 0x2E:
            stuffed = b"." + stuffed

        self.at_line_start = chunk[-1] == 0x0A
        self.ends_with_crlf = chunk.endswith(CRLF)
        return stuffed

    def end(self) -> bytes:
        """The terminator, after a CRLF when the message did not end with one."""
        return TERMINATOR if self.ends_with_crlf else CRLF + TERMINATOR


def served(
    blocks: Iterable[bytes], top_lines: int | None = None, normalise: bool = True
) -> Iterator[bytes]:
    """The multi-line response body for stored ``blocks``, terminator included.

    ``top_lines`` None serves the whole message (RETR); a number serves the
    header and that many body lines (TOP). ``normalise`` False skips the
    CRLF conversion, for bytes known to be in served form already.
    """
    chunks = crlf_chunks(blocks) if normalise else iter(blocks)
    if top_lines is not None:
        chunks = top_chunks(chunks, top_lines)

    stuffer = DotStuffer(bare_lf_possible=not normalise)
    for chunk in chunks:
        if chunk:
            yield stuffer.stuff(chunk)
    yield stuffer.end()


def file_blocks(file: IO[bytes], size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The file's contents, ``size`` octets at a time."""
    return iter(lambda: file.read(size), b"")


class MessageStream:
    """One streamed response, written a piece at a time while the transport wants more.

    The session pumps it when it starts and whenever the transport, having
    sent what it held, resumes the session (see ``POP3Session``): only the
    piece in hand and the transport's buffer are in memory, and the reactor
    serves other sessions in between. ``done`` fires when the response is
    written or the stream is stopped. A read error halfway cannot be
    answered with ``-ERR`` inside a multi-line response, so ``abort`` is
    called to close the connection: the client sees no terminator, and
    nothing is deleted.
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        pieces: Iterator[bytes],
        file: IO[bytes],
        abort: Callable[[], None],
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.write = write
        self.pieces = pieces
        self.file = file
        self.abort = abort
        self.on_progress = on_progress
        self.done: defer.Deferred[None] = defer.Deferred()
        self.finished = False

    def pump(self, writable: Callable[[], bool]) -> None:
        """Write pieces while ``writable()`` says the transport takes more."""
        while not self.finished and writable():
            try:
                piece = next(self.pieces, None)
            except Exception:
                log.failure("cannot read a message being served", Failure())
                self.abort()
                self.stop()
                return

            if piece is None:
                self.stop()
                return

            if self.on_progress is not None:
                self.on_progress()
            self.write(piece)

    def stop(self) -> None:
        """Finish: at the end, or because the connection is gone."""
        if self.finished:
            return
        self.finished = True
        self.file.close()
        self.done.callback(None)
