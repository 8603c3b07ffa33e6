"""The MIME tree of a message as byte offsets into the original data (RFC 2045, 2046).

Parts are located the way Dovecot's message-parser locates them, because
every size in BODYSTRUCTURE and every BODY[section] depends on exactly where
a part is judged to start and end in broken mail:

- a header ends at the first empty line, or at the end of the data; a line
  without a colon is a header whose whole line is the name;
- a boundary line is ``--`` followed by any active boundary as a prefix (the
  longest matching one, innermost on a tie), wherever it appears, even inside
  a nested part's header, which it then cuts short;
- a part's body ends before the line break that precedes the next boundary
  line; an unterminated multipart runs to the end of the data;
- Content-* headers count only in a MIME part (one with Content-Type or
  MIME-Version, or any part inside a multipart); otherwise the part is
  text/plain, or message/rfc822 inside multipart/digest.

Nesting is bounded (:data:`MAX_DEPTH`) and so is the number of parts
(:data:`MAX_PARTS`): beyond them a multipart or message/rfc822 is kept as a
leaf. Parsing is linear in the size of the data.
"""

import re
from collections.abc import Callable
from typing import NamedTuple, TypeAlias

from mailsuite.imap.rfc822 import Rfc822Parser, parse_parameters

MAX_DEPTH = 100
MAX_PARTS = 10000

# RFC 2046 limits boundaries to 70 octets; Dovecot allows a few more and
# ignores the rest of a longer one.
MAX_BOUNDARY = 80

CR, LF = 0x0D, 0x0A

# A parsing step takes a position and returns the next position and step.
Step: TypeAlias = Callable[[int], "tuple[int, Step | None]"]


class HeaderField(NamedTuple):
    """One header field: its name, the raw span it occupies, and its value.

    ``value`` is what follows the colon, leading whitespace dropped and line
    breaks kept as bare LF (the unfolding is left to each consumer).
    """

    name: bytes
    start: int
    end: int
    value: bytes


class Part:
    """One node of the MIME tree; offsets index the message data.

    ``start`` is where the part's header begins; the header occupies
    ``header_size`` octets and the body the ``body_size`` after it. Children
    are the parts of a multipart, or the one encapsulated message of a
    message/rfc822 part.
    """

    __slots__ = (
        "body_lines",
        "body_size",
        "children",
        "digest",
        "header_lines",
        "header_size",
        "headers",
        "is_mime",
        "multipart",
        "parent",
        "rfc822",
        "start",
        "text",
    )

    def __init__(self, start: int, parent: "Part | None", is_mime: bool) -> None:
        self.start = start
        self.parent = parent
        self.is_mime = is_mime
        self.header_size = 0
        self.header_lines = 0
        self.body_size = 0
        self.body_lines = 0
        self.headers: list[HeaderField] = []
        self.children: list[Part] = []
        self.multipart = False
        self.digest = False
        self.rfc822 = False
        self.text = False

    @property
    def body_start(self) -> int:
        return self.start + self.header_size

    @property
    def end(self) -> int:
        return self.start + self.header_size + self.body_size

    def first_header(self, name: bytes) -> HeaderField | None:
        """Return the first header field called ``name`` (any case), if any."""
        wanted = name.lower()
        for field in self.headers:
            if field.name.lower() == wanted:
                return field

        return None


class _Boundary:
    __slots__ = ("closing", "part", "text")

    def __init__(self, text: bytes, part: Part) -> None:
        self.text = text
        self.part = part
        self.closing = False


class _BoundaryMatcher:
    """Finds which of the active boundaries starts at a position.

    A few boundaries are tried one by one; many (deep nesting) are tried in
    one regular expression, longest first, so a body full of ``--`` lines
    costs the same at any depth.
    """

    _FEW = 8

    def __init__(self, boundaries: list[_Boundary]) -> None:
        self.innermost_first = list(reversed(boundaries))
        self.pattern: re.Pattern[bytes] | None = None
        self.by_text: dict[bytes, _Boundary] = {}
        if len(boundaries) > self._FEW:
            for boundary in self.innermost_first:
                self.by_text.setdefault(boundary.text, boundary)
            texts = sorted(self.by_text, key=len, reverse=True)
            self.pattern = re.compile(b"|".join(re.escape(text) for text in texts))

    def match(self, data: bytes, start: int) -> _Boundary | None:
        if self.pattern is not None:
            found = self.pattern.match(data, start)
            return None if found is None else self.by_text[found.group(0)]

        best = None
        for boundary in self.innermost_first:
            text = boundary.text
            if data.startswith(text, start) and (best is None or len(best.text) < len(text)):
                best = boundary
        return best


class _HeaderScan:
    """What reading one header has found so far."""

    __slots__ = ("boundary", "content_type", "newline", "started_multipart")

    def __init__(self) -> None:
        self.content_type: bytes | None = None  # the first Content-Type's type/subtype
        self.boundary: bytes | None = None  # its boundary, if multipart
        self.newline = 0  # size of the line break ending the last field
        self.started_multipart = False


class _Parser:
    """Walks the data once, building the tree; the state mirrors Dovecot's parser."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.boundaries: list[_Boundary] = []  # innermost last
        self._matcher: _BoundaryMatcher | None = None
        self.depth = 0
        self.parts = 1
        self.root = Part(0, None, is_mime=False)
        self.part = self.root

    def parse(self) -> Part:
        pos = 0
        step: Step | None = self.header
        while step is not None:
            pos, step = step(pos)

        while self.part.parent is not None:
            self.finish_part()
        return self.root

    # Size accounting, as Dovecot keeps it: octets go to the current part's
    # header or body; a finished part's sizes are added to its parent's body.

    def add_body(self, start: int, end: int) -> None:
        if end > start:
            self.part.body_size += end - start
            self.part.body_lines += self.data.count(b"\n", start, end)

    def append_part(self, is_mime: bool) -> None:
        parent = self.part
        child = Part(parent.end, parent, is_mime)
        parent.children.append(child)
        self.part = child
        self.depth += 1
        self.parts += 1

    def finish_part(self) -> None:
        child = self.part
        parent = child.parent
        assert parent is not None
        parent.body_size += child.header_size + child.body_size
        parent.body_lines += child.header_lines + child.body_lines
        self.part = parent
        self.depth -= 1

    def nesting_allowed(self) -> bool:
        return self.depth + 1 < MAX_DEPTH and self.parts < MAX_PARTS

    # Boundaries.

    def boundary_at(self, pos: int) -> _Boundary | None:
        """Return the active boundary that the line at ``pos`` is a delimiter of.

        The line need only start with ``--`` and the boundary; when several
        match, the longest wins, then the innermost.
        """
        data = self.data
        if not self.boundaries or data[pos : pos + 2] != b"--":
            return None

        if self._matcher is None:
            self._matcher = _BoundaryMatcher(self.boundaries)
        best = self._matcher.match(data, pos + 2)
        if best is not None:
            after = pos + 2 + len(best.text)
            best.closing = data[after : after + 2] == b"--"
        return best

    def next_delimiter(self, pos: int) -> tuple[int, _Boundary | None]:
        """Find the next line after ``pos`` that is a boundary delimiter."""
        data = self.data
        while True:
            lf = data.find(b"\n--", pos)
            if lf < 0:
                return -1, None

            boundary = self.boundary_at(lf + 1)
            if boundary is not None:
                return lf, boundary
            pos = lf + 1

    def end_at_boundary(self, boundary: _Boundary, line_start: int, pos: int) -> int:
        """Close parts up to the boundary's multipart; give it the delimiter octets."""
        while self.part is not boundary.part:
            self.finish_part()

        index = self.boundaries.index(boundary)
        del self.boundaries[index if boundary.closing else index + 1 :]
        self._matcher = None
        line_end = line_start + 2 + len(boundary.text) + (2 if boundary.closing else 0)
        self.add_body(pos, line_end)
        return line_end

    # The steps; each takes a position and returns the next one and the next step.

    def header(self, pos: int) -> tuple[int, Step | None]:
        """Read the current part's header, which ends at a blank line, a delimiter or EOF."""
        scan = _HeaderScan()
        while True:
            if self.at_blank_line(pos) and scan.boundary is not None:
                scan.started_multipart = self.start_multipart(scan.boundary)
                scan.boundary = None

            if self.cut_by_delimiter(pos, scan.newline) or pos >= self.size:
                break

            if self.at_blank_line(pos):
                line_end = self.data.index(b"\n", pos) + 1
                self.part.header_size += line_end - pos
                self.part.header_lines += 1
                pos = line_end
                break

            pos = self.read_field(pos, scan)

        return pos, self._after_header(scan.started_multipart, scan.content_type is not None)

    def at_blank_line(self, pos: int) -> bool:
        return self.data[pos : pos + 1] == b"\n" or self.data[pos : pos + 2] == b"\r\n"

    def start_multipart(self, boundary: bytes) -> bool:
        """Make the part's boundary active for its body, unless nesting is too deep."""
        part = self.part
        if not part.is_mime:
            return False

        if not self.nesting_allowed():
            part.multipart = False
            return False

        self.boundaries.append(_Boundary(boundary, part))
        self._matcher = None
        return True

    def cut_by_delimiter(self, pos: int, newline: int) -> bool:
        """End the header at an enclosing multipart's delimiter line, if ``pos`` is one.

        The line break before the delimiter then belongs to the parent's body.
        """
        delimiter = self.boundary_at(pos)
        part = self.part
        if delimiter is None or delimiter.part is part:
            return False

        if newline:
            assert part.parent is not None
            part.header_size -= newline
            part.header_lines -= 1
            part.parent.body_size += newline
            part.parent.body_lines += 1
        return True

    def read_field(self, pos: int, scan: _HeaderScan) -> int:
        """Add the header field at ``pos`` to the part; return where the next one starts."""
        part, data = self.part, self.data
        field_end = self._field_end(pos)
        field = _header_field(data, pos, field_end)
        part.headers.append(field)
        part.header_size += field_end - pos
        part.header_lines += data.count(b"\n", pos, field_end)
        scan.newline = _newline_size(data, field_end)

        name = field.name.lower()
        if name == b"mime-version":
            part.is_mime = True
        elif name == b"content-type":
            part.is_mime = True
            if scan.content_type is None:
                scan.content_type, scan.boundary = _content_type_flags(part, field.value)
        return field_end

    def _field_end(self, pos: int) -> int:
        """Return where the field starting at ``pos`` ends, continuation lines included."""
        data, size = self.data, self.size
        while True:
            lf = data.find(b"\n", pos)
            if lf < 0:
                return size

            pos = lf + 1
            if pos >= size or data[pos] not in (0x20, 0x09):
                return pos

    def _after_header(self, started_multipart: bool, saw_content_type: bool) -> Step:
        part = self.part
        if not part.is_mime:
            part.multipart = part.digest = part.rfc822 = part.text = False
        if not saw_content_type or not part.is_mime:
            if part.parent is not None and part.parent.digest:
                part.rfc822 = True
            else:
                part.text = True

        if started_multipart:
            return self.first_body_line
        if part.rfc822:
            if self.nesting_allowed():
                return self.encapsulated
            part.rfc822 = False
        if self.boundaries:
            return self.first_body_line
        return self.body_to_end

    def first_body_line(self, pos: int) -> tuple[int, Step | None]:
        """Start a body that ends at a boundary; the delimiter may be its first line."""
        delimiter = self.boundary_at(pos)
        if delimiter is not None:
            return self.end_at_boundary(delimiter, pos, pos), self.rest_of_delimiter

        return self.body_to_boundary(pos)

    def body_to_boundary(self, pos: int) -> tuple[int, Step | None]:
        lf, delimiter = self.next_delimiter(pos)
        if delimiter is None:
            self.add_body(pos, self.size)
            return self.size, None

        body_end = lf - 1 if lf > pos and self.data[lf - 1] == CR else lf
        self.add_body(pos, body_end)
        return self.end_at_boundary(delimiter, lf + 1, body_end), self.rest_of_delimiter

    def body_to_end(self, pos: int) -> tuple[int, Step | None]:
        self.add_body(pos, self.size)
        return self.size, None

    def rest_of_delimiter(self, pos: int) -> tuple[int, Step | None]:
        """Skip what follows a delimiter on its line, then start the next part."""
        lf = self.data.find(b"\n", pos)
        if lf < 0:
            self.add_body(pos, self.size)
            return self.size, None

        self.add_body(pos, lf + 1)
        next_part_follows = bool(self.boundaries) and self.boundaries[-1].part is self.part
        if next_part_follows and self.parts < MAX_PARTS:
            self.append_part(is_mime=True)
            return lf + 1, self.header

        # The closing delimiter, or too many parts: the rest is epilogue.
        if self.boundaries:
            return lf + 1, self.first_body_line
        return lf + 1, self.body_to_end

    def encapsulated(self, pos: int) -> tuple[int, Step | None]:
        self.append_part(is_mime=False)
        return self.header(pos)


def _newline_size(data: bytes, field_end: int) -> int:
    """Return the size of the line break ending at ``field_end`` (0 if none)."""
    if field_end == 0 or data[field_end - 1] != LF:
        return 0

    return 2 if field_end >= 2 and data[field_end - 2] == CR else 1


def _header_field(data: bytes, start: int, end: int) -> HeaderField:
    """Split the raw field ``data[start:end]`` into name and value."""
    first_lf = data.find(b"\n", start, end)
    first_end = end if first_lf < 0 else first_lf
    if first_end > start and data[first_end - 1] == CR:
        first_end -= 1
    colon = data.find(b":", start, first_end)
    if colon < 0:
        return HeaderField(data[start:first_end], start, end, _unfold_tail(data, first_end, end))

    name = data[start:colon].rstrip(b" \t")
    value_start = colon + 1
    first_value = data[value_start:first_end]
    stripped = first_value.lstrip(b" \t")
    if stripped:
        value_start += len(first_value) - len(stripped)
    elif first_value:
        value_start += 1
    return HeaderField(name, start, end, _unfold_tail(data, value_start, end))


def _unfold_tail(data: bytes, start: int, end: int) -> bytes:
    """Return ``data[start:end]`` without its final line break, CRLF turned to LF."""
    value = data[start:end]
    if value.endswith(b"\n"):
        value = value[:-2] if value.endswith(b"\r\n") else value[:-1]
    return value.replace(b"\r\n", b"\n")


def _content_type_flags(part: Part, value: bytes) -> tuple[bytes, bytes | None]:
    """Set the part's kind from its first Content-Type; return it and any boundary."""
    parser = Rfc822Parser(value)
    parser.skip_lwsp()
    content_type = bytearray()
    ret = parser.parse_content_type(content_type)
    lowered = bytes(content_type).lower()
    if lowered == b"message/rfc822":
        part.rfc822 = True
    elif lowered == b"text" or lowered.startswith(b"text/"):
        part.text = True
    elif lowered.startswith(b"multipart/"):
        part.multipart = True
        part.digest = lowered == b"multipart/digest"

    if ret < 0 or not part.multipart:
        return bytes(content_type), None

    for key, boundary in parse_parameters(parser):
        if key.lower() == b"boundary":
            return bytes(content_type), boundary[:MAX_BOUNDARY]
    return bytes(content_type), None


def parse_message(data: bytes) -> Part:
    """Parse ``data`` into its MIME tree and return the root part."""
    return _Parser(data).parse()


def parse_header(data: bytes) -> Part:
    """Parse only the top-level header of ``data``: a root whose body is not looked at.

    For ENVELOPE, header-field FETCHes and the header SEARCH keys, which
    never need the body's structure. ``headers`` and ``body_start`` are
    exactly what :func:`parse_message` finds (no boundary is active before
    the top-level header ends); ``body_size``, ``children`` and the part
    kinds are not filled in.
    """
    parser = _Parser(data)
    parser.header(0)
    return parser.root
