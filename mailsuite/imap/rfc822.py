"""A tokenizer for structured header values (RFC 5322 section 3.2, RFC 2045 section 5.1).

It reads real-world mail the lenient way Dovecot's rfc822-parser does, so
that addresses, Content-Type parameters and dates come out exactly as that
server reports them. Every ``parse_*`` method returns 1 when more input
follows, 0 at the end of the value and -1 on a syntax error, and leaves
``pos`` where it stopped; callers rely on those positions to recover.
"""

import re

CR, LF, QUOTE, OPEN, CLOSE = 0x0D, 0x0A, 0x22, 0x28, 0x29
END = -1  # what peek() returns past the end, never equal to a real octet

# atext (RFC 5322 3.2.3) plus every 8-bit octet, as Dovecot reads it.
_ATEXT_CHARS = b"!#$%&'*+-/=?^_`{|}~" + bytes(range(0x30, 0x3A))
_ATEXT_CHARS += bytes(range(0x41, 0x5B)) + bytes(range(0x61, 0x7B)) + bytes(range(0x80, 0x100))
ATEXT = frozenset(_ATEXT_CHARS)

# A MIME token (RFC 2045 5.1) is atext without "/", "=" and "?", plus ".".
_TOKEN = frozenset(ATEXT - set(b"/=?")) | {ord(".")}


def _run_of(chars: frozenset[int]) -> re.Pattern[bytes]:
    klass = b"".join(re.escape(bytes([c])) for c in sorted(chars))
    return re.compile(b"[" + klass + b"]*")


_ATEXT_RUN = _run_of(ATEXT)
_ATEXT_OR_DOT_RUN = _run_of(ATEXT | {ord(".")})
_TOKEN_RUN = _run_of(_TOKEN)
_LWSP_RUN = re.compile(rb"[ \t\r\n]*")
_LWSP_OCTETS = frozenset(b" \t\r\n")
_COMMENT_STOP = re.compile(rb"[()\\\n]")
_QUOTED_STOP = re.compile(rb'["\\\n]')
_LITERAL_STOP = re.compile(rb"[\[\]\\\n]")
_BROKEN_VALUE = re.compile(rb"[^; \t\r\n]*")
_DIGITS = re.compile(rb"[0-9]*")


def _match_end(run: re.Pattern[bytes], data: bytes, pos: int) -> int:
    """Return where ``run``, a pattern that also matches nothing, stops at ``pos``."""
    found = run.match(data, pos)
    assert found is not None
    return found.end()


def _without_cr(data: bytes, start: int, lf: int) -> bytes:
    """Return ``data[start:lf]`` minus a CR just before the LF (folding removal)."""
    if lf > start and data[lf - 1] == CR:
        return data[start : lf - 1]

    return data[start:lf]


class Rfc822Parser:
    """A cursor over one header value with Dovecot's tokenizing rules."""

    __slots__ = ("data", "end", "last_comment", "pos")

    def __init__(self, data: bytes, last_comment: bytearray | None = None) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.last_comment = last_comment

    def peek(self) -> int:
        """Return the octet at the cursor, or END past the end of the value."""
        if self.pos < self.end:
            return self.data[self.pos]

        return END

    def more(self) -> int:
        """Return 1 when input remains after the cursor, else 0."""
        return 1 if self.pos < self.end else 0

    def skip_comment(self) -> int:
        """Skip a (possibly nested) comment, keeping its text in ``last_comment``."""
        data, end, note = self.data, self.end, self.last_comment
        if note is not None:
            del note[:]

        i = start = self.pos + 1
        level = 1
        while True:
            found = _COMMENT_STOP.search(data, i)
            if found is None:
                self.pos = end
                return -1

            i = found.start()
            octet = data[i]
            if octet == OPEN:
                level += 1
            elif octet == CLOSE:
                level -= 1
                if level == 0:
                    if note is not None:
                        note += data[start:i]
                    self.pos = i + 1
                    return self.more()
            elif octet == LF:
                if note is not None:
                    note += _without_cr(data, start, i)
                start = i + 1
            else:
                i += 1
                if i >= end:
                    self.pos = end
                    return -1
                if data[i] in (CR, LF, 0):
                    continue
                if note is not None:
                    note += data[start : i - 1]
                start = i
            i += 1

    def skip_lwsp(self) -> int:
        """Skip whitespace, line breaks and comments."""
        data, end = self.data, self.end
        while True:
            if self.pos < end and data[self.pos] in _LWSP_OCTETS:
                self.pos = _match_end(_LWSP_RUN, data, self.pos)
            if self.pos >= end:
                return 0

            if data[self.pos] != OPEN:
                return 1

            if self.skip_comment() < 0:
                return -1

    def _take_run(self, run: re.Pattern[bytes], out: bytearray) -> int:
        """Append the run matching ``run`` at the cursor, then skip trailing CFWS."""
        stop = _match_end(run, self.data, self.pos)
        out += self.data[self.pos : stop]
        self.pos = stop
        if stop < self.end:
            return self.skip_lwsp()

        return 0

    def parse_atom(self, out: bytearray) -> int:
        """Parse one atom (at least one atext octet)."""
        if self.peek() not in ATEXT:
            return -1

        return self._take_run(_ATEXT_RUN, out)

    def parse_dot_atom(self, out: bytearray) -> int:
        """Parse a dot-atom, allowing CFWS around the dots as RFC 822 did."""
        if self.peek() not in ATEXT:
            return -1

        while True:
            ret = self._take_run(_ATEXT_RUN, out)
            if ret <= 0:
                return ret

            if self.peek() != ord("."):
                return 1

            self.pos += 1
            out += b"."
            if self.skip_lwsp() <= 0:
                return -1

            if self.peek() not in ATEXT:
                return -1

    def parse_mime_token(self, out: bytearray) -> int:
        """Parse a MIME token, which may be empty."""
        return self._take_run(_TOKEN_RUN, out)

    def parse_atom_or_dot(self, out: bytearray) -> int:
        """Parse a run of atext and dots, as found in obsolete phrases."""
        return self._take_run(_ATEXT_OR_DOT_RUN, out)

    def parse_quoted_string(self, out: bytearray) -> int:
        """Parse a quoted string at the cursor, unescaping it and removing folding."""
        data, end = self.data, self.end
        i = start = self.pos + 1
        while True:
            found = _QUOTED_STOP.search(data, i)
            if found is None:
                self.pos = end
                return -1

            i = found.start()
            octet = data[i]
            if octet == QUOTE:
                out += data[start:i]
                self.pos = i + 1
                return self.skip_lwsp()

            if octet == LF:
                out += _without_cr(data, start, i)
                start = i + 1
            else:
                i += 1
                if i >= end:
                    self.pos = end
                    return -1
                if data[i] in (CR, LF, 0):
                    continue
                out += data[start : i - 1]
                start = i
            i += 1

    def parse_phrase(self, out: bytearray) -> int:
        """Parse a phrase (display name): words joined by single spaces."""
        if self.pos >= self.end:
            return 0

        if self.peek() == ord("."):
            return -1

        while True:
            if self.peek() == QUOTE:
                ret = self.parse_quoted_string(out)
            else:
                ret = self.parse_atom_or_dot(out)
            if ret <= 0:
                return ret

            following = self.peek()
            if following not in ATEXT and following not in (QUOTE, ord(".")):
                return self.skip_lwsp()

            out += b" "

    def parse_domain_literal(self, out: bytearray) -> int:
        """Parse ``[...]`` at the cursor, keeping the brackets."""
        data, end = self.data, self.end
        start = self.pos
        i = start + 1
        while True:
            found = _LITERAL_STOP.search(data, i)
            if found is None:
                self.pos = end
                return -1

            i = found.start()
            octet = data[i]
            if octet == ord("["):
                self.pos = i
                return -1

            if octet == ord("]"):
                out += data[start : i + 1]
                self.pos = i + 1
                return self.skip_lwsp()

            if octet == LF:
                out += _without_cr(data, start, i)
                start = i + 1
            else:
                i += 1
                if i >= end:
                    self.pos = end
                    return -1
                if data[i] in (CR, LF, 0):
                    out += data[start:i]
                    start = i
                    continue
            i += 1

    def parse_domain(self, out: bytearray) -> int:
        """Parse ``@`` and the domain after it."""
        self.pos += 1
        if self.skip_lwsp() <= 0:
            return -1

        if self.peek() == ord("["):
            return self.parse_domain_literal(out)

        return self.parse_dot_atom(out)

    def parse_content_type(self, out: bytearray) -> int:
        """Parse ``type/subtype``; on any error leave ``out`` as it was.

        The subtype must be followed by the end of the value or by ``;``, so
        ``multipart/mixed boundary=x`` (a missing semicolon) is rejected, as
        Dovecot rejects it.
        """
        mark = len(out)
        if self.skip_lwsp() <= 0:
            return -1

        if self.parse_mime_token(out) <= 0 or len(out) == mark or self.peek() != ord("/"):
            del out[mark:]
            return -1

        self.pos += 1
        if self.skip_lwsp() <= 0:
            del out[mark:]
            return -1

        out += b"/"
        subtype_at = len(out)
        ret = self.parse_mime_token(out)
        if ret < 0 or len(out) == subtype_at or self.peek() not in (END, ord(";")):
            del out[mark:]
            return -1

        return ret

    def parse_content_param(self) -> tuple[int, bytes, bytes]:
        """Parse ``; key=value``; return (status, key, value), status 0 at the end."""
        if self.pos >= self.end:
            return 0, b"", b""

        if self.peek() != ord(";"):
            return -1, b"", b""

        self.pos += 1
        if self.skip_lwsp() <= 0:
            return -1, b"", b""

        key = bytearray()
        if self.parse_mime_token(key) <= 0 or self.peek() != ord("="):
            return -1, b"", b""

        self.pos += 1
        value = bytearray()
        ret = self.skip_lwsp()
        if ret <= 0:
            pass
        elif self.peek() == QUOTE:
            ret = self.parse_quoted_string(value)
        elif self.peek() == ord("="):
            # Broken input such as name==?utf-8?b?...?= : take up to the next
            # separator as it stands.
            stop = _match_end(_BROKEN_VALUE, self.data, self.pos)
            value += self.data[self.pos : stop]
            self.pos = stop
        else:
            ret = self.parse_mime_token(value)

        return (-1 if ret < 0 else 1), bytes(key), bytes(value)


def _rfc2231_escape(value: bytes) -> bytes:
    return value.replace(b"%", b"%25")


def parse_parameters(parser: Rfc822Parser) -> list[tuple[bytes, bytes]]:
    """Parse the ``;``-separated parameters left in ``parser`` (RFC 2045, RFC 2231).

    RFC 2231 continuations (``name*0``, ``name*1*``...) are joined into one
    ``name`` or ``name*`` parameter whose value keeps its ``charset'lang'``
    prefix and percent-encoding, as Dovecot reports them in BODYSTRUCTURE;
    they follow the plain parameters. Broken parameters are skipped.
    """
    plain: list[tuple[bytes, bytes]] = []
    split: list[tuple[bytes, int, bool, bytes]] = []
    index = 0
    while True:
        ret, key, value = parser.parse_content_param()
        if ret == 0:
            break

        if ret < 0:
            if parser.pos >= parser.end:
                break
            parser.pos += 1
            continue

        star = key.find(b"*")
        if star < 0:
            plain.append((key, value))
            continue

        # A bare "name*" is extended and, as in Dovecot, keeps the section
        # number of the previous split parameter.
        rest = key[star + 1 :]
        extended = not rest
        if rest:
            digits_end = _match_end(_DIGITS, rest, 0)
            index = int(rest[:digits_end] or b"0")
            rest = rest[digits_end:]
            extended = rest.startswith(b"*")
            rest = rest[1:] if extended else rest
        if rest:
            plain.append((key, value))
        else:
            split.append((key[:star], index, extended, value))

    return plain + _merge_rfc2231(split)


def _merge_rfc2231(split: list[tuple[bytes, int, bool, bytes]]) -> list[tuple[bytes, bytes]]:
    """Join RFC 2231 sections by name; keep them apart when a section is missing."""
    split.sort(key=lambda section: (section[0], section[1]))
    merged: list[tuple[bytes, bytes]] = []
    i = 0
    while i < len(split):
        name = split[i][0].lower()
        group_end = i
        while group_end < len(split) and split[group_end][0].lower() == name:
            group_end += 1
        group = split[i:group_end]
        i = group_end

        complete = [section[1] for section in group] == list(range(len(group)))
        extended = any(section[2] for section in group)
        if not complete:
            for key, index, is_extended, value in group:
                suffix = b"*%d*" % index if is_extended else b"*%d" % index
                merged.append((key + suffix, value))
            continue

        value = b"''" if extended and not group[0][2] else b""
        for _key, _index, is_extended, part in group:
            value += _rfc2231_escape(part) if extended and not is_extended else part
        merged.append((group[0][0] + (b"*" if extended else b""), value))

    return merged
