"""Reading DATA: only CRLF.CRLF ends a message; unstuffing, normalising, size."""

from __future__ import annotations

from twisted.trial import unittest

from mailsuite.smtp.data import DataReader


def read_whole(stream: bytes, limit: int = 10_000) -> tuple[bytes | None, bytes | None]:
    """Feed ``stream`` in one chunk; return (message, rest)."""
    reader = DataReader(limit)
    reader.feed(stream)
    return (reader.message() if reader.done else None), reader.rest


def read_split(stream: bytes, sizes: list[int], limit: int = 10_000) -> tuple[DataReader, bytes]:
    """Feed ``stream`` in chunks of the given sizes, then the rest in one chunk.

    Returns the reader and everything after the marker: the reader's
    ``rest`` plus what was never fed.
    """
    reader = DataReader(limit)
    position = 0
    for size in [*sizes, len(stream)]:
        chunk = stream[position : position + size]
        position += size
        if chunk and reader.feed(chunk):
            break
    return reader, (reader.rest or b"") + stream[position:]


class EndMarkerTests(unittest.TestCase):
    def test_crlf_dot_crlf_ends_the_message(self) -> None:
        """The message is everything before CRLF.CRLF, its last CRLF included."""
        message, rest = read_whole(b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n")

        self.assertEqual(b"Subject: hi\r\n\r\nbody\r\n", message)
        self.assertEqual(b"QUIT\r\n", rest)

    def test_empty_message(self) -> None:
        """A first line of "." ends an empty message (the DATA line's CRLF counts)."""
        message, rest = read_whole(b".\r\nNOOP\r\n")

        self.assertEqual(b"", message)
        self.assertEqual(b"NOOP\r\n", rest)

    def test_no_end_marker_means_not_done(self) -> None:
        """Without CRLF.CRLF the reader keeps waiting, whatever else arrives."""
        reader = DataReader(1000)

        self.assertFalse(reader.feed(b"text\r\nmore"))
        self.assertFalse(reader.done)

    def test_smuggling_sequences_do_not_end_the_message(self) -> None:
        """LF.LF, CR.CR, LF.CRLF and CRLF.LF are text (SMTP smuggling, CVE-2023-51764).

        The smuggled "second message" stays inside the first, and is stored
        with CRLF line ends only, so no later hop can split it off either.
        """
        for marker in (b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"):
            stream = b"Subject: one\r\n\r\nhello" + marker + b"MAIL FROM:<evil@x>\r\n.\r\n"
            message, rest = read_whole(stream)

            self.assertEqual(b"", rest, marker)
            assert message is not None
            self.assertIn(b"MAIL FROM:<evil@x>\r\n", message, marker)
            self.assertNotIn(b"\r\n.\r\n", message, marker)
            self.assertEqual(message.count(b"\n"), message.count(b"\r\n"), marker)

    def test_marker_split_at_every_position(self) -> None:
        """A terminator split across chunks anywhere is still found, text intact."""
        stream = b"a\r\n..b\r\nc\r\n.\r\nRSET\r\n"
        expected = b"a\r\n.b\r\nc\r\n"
        for first in range(1, len(stream)):
            for second in range(1, 6):
                reader, after = read_split(stream, [first, second])

                self.assertTrue(reader.done, (first, second))
                self.assertEqual(expected, reader.message(), (first, second))
                self.assertEqual(b"RSET\r\n", after, (first, second))

    def test_byte_by_byte(self) -> None:
        """One octet at a time, the tail logic still sees the marker."""
        stream = b".\r\n"
        reader, _ = read_split(stream, [1, 1])
        self.assertEqual(b"", reader.message())

        stream = b"x\r\n.\r\n"
        reader, _ = read_split(stream, [1] * len(stream))
        self.assertEqual(b"x\r\n", reader.message())


class TextTests(unittest.TestCase):
    def test_dot_unstuffing(self) -> None:
        """RFC 5321 4.5.2: the first dot of every dot-led line goes, the first line too."""
        message, _ = read_whole(b"..first\r\n...\r\nmid\r\n..\r\n.x\r\n.\r\n")

        self.assertEqual(b".first\r\n..\r\nmid\r\n.\r\nx\r\n", message)

    def test_bare_line_ends_are_normalised(self) -> None:
        """Lone LF and lone CR become CRLF, so stored and queued text is CRLF only."""
        message, _ = read_whole(b"a\nb\rc\r\nd\r\n.\r\n")

        self.assertEqual(b"a\r\nb\r\nc\r\nd\r\n", message)

    def test_eight_bit_and_nul_pass_unchanged(self) -> None:
        """8BITMIME: octets above 127 are kept byte for byte."""
        text = "Grüße, ñ, 日本\r\n".encode() + b"\x00\xff\r\n"
        message, _ = read_whole(text + b".\r\n")

        self.assertEqual(text, message)

    def test_long_lines_are_accepted(self) -> None:
        """No per-line limit: a 100 KB line is text like any other."""
        line = b"x" * 100_000 + b"\r\n"
        message, _ = read_whole(line + b".\r\n", limit=200_000)

        self.assertEqual(line, message)


class SizeTests(unittest.TestCase):
    def test_message_at_the_limit_is_taken(self) -> None:
        """The limit counts the unstuffed message; exactly the limit is fine."""
        body = b"x" * 8 + b"\r\n"
        message, _ = read_whole(body + b".\r\n", limit=len(body))

        self.assertEqual(body, message)

    def test_message_over_the_limit_is_refused(self) -> None:
        """One octet over the limit gives no message, but the end is still found."""
        body = b"x" * 9 + b"\r\n"
        message, rest = read_whole(body + b".\r\nNOOP\r\n", limit=len(body) - 1)

        self.assertIsNone(message)
        self.assertEqual(b"NOOP\r\n", rest)

    def test_stuffing_does_not_count(self) -> None:
        """Dots added by stuffing are not part of the size (RFC 1870)."""
        body = b"..\r\n" * 10
        message, _ = read_whole(body + b".\r\n", limit=30)

        self.assertEqual(b".\r\n" * 10, message)

    def test_huge_message_is_not_kept_in_memory(self) -> None:
        """Past the bound the reader discards text and keeps only a tail."""
        reader = DataReader(1000)
        for _ in range(100):
            reader.feed(b"y" * 9998 + b"\r\n")

        self.assertTrue(reader.overflow)
        self.assertEqual([], reader._chunks)
        self.assertTrue(reader.feed(b".\r\n"))
        self.assertIsNone(reader.message())
