"""The Date: header as SENTBEFORE, SENTON and SENTSINCE read it (RFC 3501 section 6.4.4).

Those keys compare the date as written in the header, disregarding time and
timezone. The parser accepts what Dovecot's message-date accepts (an
optional weekday, two-digit years, ``.`` as a time separator, unknown zones),
so the same messages count as having a date.
"""

import datetime

from mailsuite.imap.rfc822 import Rfc822Parser

_MONTHS = b"jan feb mar apr may jun jul aug sep oct nov dec".split()
_TIME_SEPARATORS = (ord(":"), ord("."))


class _Tokens:
    """Atoms of a date header, read one at a time."""

    def __init__(self, value: bytes) -> None:
        self.parser = Rfc822Parser(value)
        self.parser.skip_lwsp()

    def next(self) -> bytes | None:
        """Return the next atom, b"" at the end, None on a syntax error."""
        parser = self.parser
        if parser.pos >= parser.end:
            return b""

        atom = bytearray()
        if parser.parse_atom(atom) < 0:
            return None
        return bytes(atom)

    def skip_separator(self) -> bool:
        if self.parser.peek() not in _TIME_SEPARATORS:
            return False

        self.parser.pos += 1
        self.parser.skip_lwsp()
        return True


def _two_digits(token: bytes | None) -> int | None:
    if token is None or len(token) != 2 or not token.isdigit():
        return None
    return int(token)


def _small_number(token: bytes | None) -> int | None:
    """Return a one- or two-digit number (day, hour), None if it is not one."""
    if not token or len(token) > 2 or not token.isdigit():
        return None
    return int(token)


def _year(token: bytes | None) -> int | None:
    if not token or len(token) not in (2, 4) or not token.isdigit():
        return None

    year = int(token)
    if len(token) == 2:
        return year + (2000 if year < 70 else 1900)
    return year if year >= 1900 else None


def sent_date(value: bytes) -> datetime.date | None:
    """Return the calendar date written in a Date: header value, or None if unreadable."""
    tokens = _Tokens(value)
    token = tokens.next()
    if token is not None and len(token) == 3:
        if tokens.parser.peek() != ord(","):
            return None
        tokens.parser.pos += 1
        tokens.parser.skip_lwsp()
        token = tokens.next()

    day = _small_number(token)
    month_token = tokens.next()
    if day is None or not month_token or month_token[:3].lower() not in _MONTHS:
        return None
    month = _MONTHS.index(month_token[:3].lower()) + 1

    year = _year(tokens.next())
    hour = _small_number(tokens.next())
    if year is None or hour is None or not tokens.skip_separator():
        return None

    minute = _two_digits(tokens.next())
    if minute is None:
        return None

    seconds_follow = tokens.parser.pos < tokens.parser.end and tokens.skip_separator()
    if seconds_follow and _two_digits(tokens.next()) is None:
        return None

    # Any zone is accepted, but it must at least be an atom.
    if tokens.next() is None:
        return None

    # Out-of-range days and hours roll over, as mktime() makes them do.
    start = datetime.datetime(year, month, 1)
    try:
        written = start + datetime.timedelta(days=day - 1, hours=hour, minutes=minute)
    except OverflowError:
        return None
    return written.date()
