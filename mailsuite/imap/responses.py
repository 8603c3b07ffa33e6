"""What the IMAP server says: response codes, formatting, and error mapping.

Response codes are named here with the RFC that defines them, so a reader
can check each use against its section. ``CommandError`` is how a command
refuses (``NO`` or ``BAD`` with a code); ``store_error`` is the one place a
protocol-neutral store error becomes an IMAP answer.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from mailsuite.imap.parser import MONTHS
from mailsuite.store import errors
from mailsuite.store.names import encode_utf7

OK = "OK"
NO = "NO"
BAD = "BAD"

# -- response codes ---------------------------------------------------------------

BADCHARSET = "BADCHARSET (UTF-8 US-ASCII)"  # RFC 3501 7.1, with the charsets we take
CAPABILITY = "CAPABILITY"  # RFC 3501 7.1
PERMANENTFLAGS = "PERMANENTFLAGS"  # RFC 3501 7.1
READ_ONLY = "READ-ONLY"  # RFC 3501 7.1
READ_WRITE = "READ-WRITE"  # RFC 3501 7.1
TRYCREATE = "TRYCREATE"  # RFC 3501 7.1
UIDNEXT = "UIDNEXT"  # RFC 3501 7.1
UIDVALIDITY = "UIDVALIDITY"  # RFC 3501 7.1
UNSEEN = "UNSEEN"  # RFC 3501 7.1
APPENDUID = "APPENDUID"  # RFC 4315 3
COPYUID = "COPYUID"  # RFC 4315 3
ALREADYEXISTS = "ALREADYEXISTS"  # RFC 5530 3
AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"  # RFC 5530 3
CANNOT = "CANNOT"  # RFC 5530 3
CLIENTBUG = "CLIENTBUG"  # RFC 5530 3
EXPUNGEISSUED = "EXPUNGEISSUED"  # RFC 5530 3
NONEXISTENT = "NONEXISTENT"  # RFC 5530 3
OVERQUOTA = "OVERQUOTA"  # RFC 5530 3
PRIVACYREQUIRED = "PRIVACYREQUIRED"  # RFC 5530 3
SERVERBUG = "SERVERBUG"  # RFC 5530 3
UNAVAILABLE = "UNAVAILABLE"  # RFC 5530 3
TOOBIG = "TOOBIG"  # RFC 4469 / RFC 7889 4
HIGHESTMODSEQ = "HIGHESTMODSEQ"  # RFC 7162 3.1.2.1
MODIFIED = "MODIFIED"  # RFC 7162 3.1.3
USEATTR = "USEATTR"  # RFC 6154 6
UNKNOWN_CTE = "UNKNOWN-CTE"  # RFC 3516 4.3


@dataclass(frozen=True)
class Reply:
    """A tagged completion: status, optional response code, human text."""

    status: str
    text: str
    code: str | None = None

    def line(self, tag: bytes) -> bytes:
        return tagged(tag, self.status, self.text, self.code)


class CommandError(Exception):
    """A command refused with ``NO`` or ``BAD``; the session writes it tagged."""

    def __init__(self, status: str, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.reply = Reply(status, text, code)


def bad(text: str, code: str | None = None) -> CommandError:
    return CommandError(BAD, text, code)


def no(text: str, code: str | None = None) -> CommandError:
    return CommandError(NO, text, code)


def store_error(error: errors.StoreError, *, target: bool = False) -> Reply:
    """The IMAP answer to a store error; ``target`` for APPEND/COPY/MOVE targets.

    RFC 3501 6.3.11 and 6.4.7: a missing target mailbox is ``[TRYCREATE]``
    so the client may create it and retry.
    """
    if isinstance(error, errors.NoSuchMailbox):
        if target:
            return Reply(NO, "Mailbox does not exist", TRYCREATE)
        return Reply(NO, "Mailbox does not exist", NONEXISTENT)
    if isinstance(error, errors.MailboxExists):
        return Reply(NO, "Mailbox already exists", ALREADYEXISTS)
    if isinstance(error, errors.InvalidMailboxName):
        return Reply(NO, "Invalid mailbox name", CANNOT)
    if isinstance(error, errors.MailboxNotEmpty):
        return Reply(NO, "Mailbox cannot be removed", CANNOT)
    if isinstance(error, errors.MessageGone):
        return Reply(NO, "Some messages were expunged", EXPUNGEISSUED)
    if isinstance(error, errors.OverQuota):
        return Reply(NO, "Quota exceeded", OVERQUOTA)
    if isinstance(error, errors.TemporaryFailure):
        return Reply(NO, "Temporary failure, try again later", UNAVAILABLE)
    return Reply(NO, "Internal error; it has been logged", SERVERBUG)


#: The answer to an unexpected failure: temporary, and logged by the caller.
INTERNAL_ERROR = Reply(NO, "Internal error; it has been logged", SERVERBUG)


# -- formatting ----------------------------------------------------------------------


def tagged(tag: bytes, status: str, text: str, code: str | None = None) -> bytes:
    middle = f" [{code}] " if code else " "
    return tag + f" {status}{middle}{text}\r\n".encode("ascii", "replace")


def highest_modseq(modseq: int) -> bytes:
    """``* OK [HIGHESTMODSEQ n]`` (RFC 7162 3.1.2.1)."""
    return b"* OK [%s %d] Highest\r\n" % (HIGHESTMODSEQ.encode(), modseq)


def untagged(text: str) -> bytes:
    return f"* {text}\r\n".encode("ascii", "replace")


def continuation(text: str = "") -> bytes:
    return f"+ {text}\r\n".encode("ascii", "replace")


_ATOM = re.compile(rb"[^(){ %*\"\\\]\x00-\x20\x7f-\xff]+\Z")


def astring(value: bytes) -> bytes:
    """An atom when the value is one, else a quoted string, else a literal."""
    if _ATOM.match(value) and value.upper() != b"NIL":
        return value
    if b"\r" in value or b"\n" in value or b"\0" in value or max(value, default=0) > 0x7E:
        return b"{%d}\r\n" % len(value) + value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def mailbox(name: str) -> bytes:
    """A folder name on the wire: modified UTF-7 (RFC 3501 5.1.3), as an astring."""
    return astring(encode_utf7(name).encode("ascii"))


def internaldate(timestamp: float) -> bytes:
    """``"dd-Mon-yyyy hh:mm:ss +zzzz"`` in the server's time zone (RFC 3501 9)."""
    local = time.localtime(timestamp)
    offset = local.tm_gmtoff // 60
    sign = "-" if offset < 0 else "+"
    offset = abs(offset)
    text = time.strftime("%d-%b-%Y %H:%M:%S", local)
    # %b depends on the locale; IMAP wants the English abbreviation.
    text = text[:3] + MONTHS[local.tm_mon - 1] + text[6:]
    return f'"{text} {sign}{offset // 60:02d}{offset % 60:02d}"'.encode("ascii")
