"""Commands valid in every state: CAPABILITY, NOOP, LOGOUT (RFC 3501 6.1), ID (RFC 2971).

Also ENABLE (RFC 5161) and NAMESPACE (RFC 2342), which need a login but
nothing selected, and the capability list itself, which depends on state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from mailsuite.imap.commands.base import CONDSTORE, QRESYNC, Command, State
from mailsuite.imap.message import imap_string
from mailsuite.imap.parser import Reader
from mailsuite.imap.responses import OK, Reply, bad

if TYPE_CHECKING:
    from mailsuite.imap.server import IMAPSession

log = Logger()

#: Offered in every state. LITERAL+ because the assembler takes ``{n+}``
#: (RFC 7888); SASL-IR because AUTHENTICATE takes an initial response
#: (RFC 4959); ENABLE because it answers (with nothing enabled yet).
ALWAYS = ("IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE")

#: Offered after login: each is implemented in full by this package. Not
#: UTF8=ACCEPT (RFC 6855): names and APPEND would need UTF-8 forms we lack.
AFTER_LOGIN = (
    "NAMESPACE",
    "UNSELECT",
    "CHILDREN",
    "SPECIAL-USE",
    "UIDPLUS",
    "MOVE",
    "CONDSTORE",
    "QRESYNC",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "CREATE-SPECIAL-USE",
    "STATUS=SIZE",
    "MULTIAPPEND",
    "BINARY",
    "ESEARCH",
)

#: RFC 2971 3.3: at most 30 field/value pairs.
MAX_ID_PAIRS = 30

SERVER_ID = (("name", "mailsuite"), ("vendor", "mailsuite"))


def capabilities(session: IMAPSession) -> list[str]:
    """What this session can do now (RFC 3501 7.2.1); it changes with TLS and login."""
    caps = list(ALWAYS)
    if session.authenticated:
        caps.extend(AFTER_LOGIN)
        limit = session.ctx.config.limits.message_size
        if limit:
            caps.append(f"APPENDLIMIT={limit}")  # RFC 7889 3.1
        if session.ctx.config.limits.quota:
            caps.extend(("QUOTA", "QUOTA=RES-STORAGE"))  # RFC 9208 3
        return caps
    if not session.secure and session.ctx.tls is not None:
        caps.append("STARTTLS")
    if session.confidential:
        caps.append("AUTH=PLAIN")
    else:
        # RFC 3501 6.2.3 and RFC 2595 3.2: no password before TLS.
        caps.append("LOGINDISABLED")
    return caps


def capability(session: IMAPSession, command: Command) -> Reply:
    command.args.end()
    session.untagged(b"* CAPABILITY " + " ".join(session.capabilities()).encode() + b"\r\n")
    return Reply(OK, "CAPABILITY completed")


def noop(session: IMAPSession, command: Command) -> Reply:
    """RFC 3501 6.1.2: also the client's way to ask for news, so look at the disk."""
    command.args.end()
    if session.selected is not None:
        session.selected.folder.refresh()
    return Reply(OK, "NOOP completed")


def logout(session: IMAPSession, command: Command) -> Reply:
    command.args.end()
    session.untagged(b"* BYE Logging out\r\n")
    session.state = State.LOGOUT
    return Reply(OK, "LOGOUT completed")


def id_command(session: IMAPSession, command: Command) -> Reply:
    """RFC 2971: note what the client says it is, and say what we are."""
    reader = command.args
    reader.space()
    client = read_id_list(reader)
    reader.end()
    if client:
        log.info("IMAP client {peer} is {client}", peer=session.peer, client=client)
    fields = b" ".join(imap_string(k) + b" " + imap_string(v) for k, v in SERVER_ID)
    session.untagged(b"* ID (" + fields + b")\r\n")
    return Reply(OK, "ID completed")


def read_id_list(reader: Reader) -> dict[str, str]:
    """``"(" *(string SP nstring) ")"`` or NIL; bounded as RFC 2971 3.3 asks."""
    if reader.take(b"NIL"):
        return {}

    def pair() -> tuple[bytes, bytes]:
        key = reader.string()
        reader.space()
        return key, reader.nstring_or_nil() or b""

    pairs = reader.paren_list(pair)
    if len(pairs) > MAX_ID_PAIRS:
        raise bad("Too many ID fields")
    return {
        key[:30].decode("utf-8", "replace"): value[:1024].decode("utf-8", "replace")
        for key, value in pairs
    }


#: What ENABLE can turn on (RFC 5161 4); anything else is ignored, as 3.1 says.
ENABLABLE = (CONDSTORE, QRESYNC)


def enable(session: IMAPSession, command: Command) -> Reply:
    """RFC 5161: ``* ENABLED`` names what this command turned on, nothing else."""
    reader = command.args
    reader.space()
    wanted = [reader.keyword()]
    while reader.take(b" "):
        wanted.append(reader.keyword())
    reader.end()

    turned_on = [name for name in wanted if name in ENABLABLE and session.enable(name)]
    session.untagged(" ".join(["* ENABLED", *turned_on]).encode("ascii") + b"\r\n")
    return Reply(OK, "ENABLE completed")


def namespace(session: IMAPSession, command: Command) -> Reply:
    """RFC 2342: one personal namespace with no prefix, ``/`` between levels."""
    command.args.end()
    session.untagged(b'* NAMESPACE (("" "/")) NIL NIL\r\n')
    return Reply(OK, "NAMESPACE completed")
