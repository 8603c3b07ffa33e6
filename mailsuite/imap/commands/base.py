"""What every command module shares: session states, the command record, handler types."""

from __future__ import annotations

import enum
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailsuite.imap.parser import Reader
from mailsuite.imap.responses import BAD, CANNOT, CommandError, Reply, no
from mailsuite.store import names

if TYPE_CHECKING:
    from mailsuite.imap.selected import SelectedMailbox
    from mailsuite.imap.server import IMAPSession
    from mailsuite.store import Account


#: Extensions a client turns on (RFC 5161 ENABLE, RFC 7162 3.1 and 3.2.3).
CONDSTORE = "CONDSTORE"
QRESYNC = "QRESYNC"


class State(enum.Enum):
    """RFC 3501 section 3."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


@dataclass
class Command:
    """One command as received: its tag, upper-case name, and argument reader."""

    tag: bytes
    name: str
    args: Reader

    @property
    def uid(self) -> bool:
        return self.name.startswith("UID ")


#: What a handler returns: a reply now, a coroutine for one later, or
#: ``PENDING`` when it answers through ``IMAPSession.finish`` itself.
Outcome = Reply | Coroutine[Any, Any, Reply] | None
Handler = Callable[["IMAPSession", Command], Outcome]
PENDING = None


def mailbox_argument(reader: Reader) -> str:
    """A mailbox name argument, decoded from modified UTF-7 (RFC 3501 5.1.3)."""
    return decode_mailbox(reader.astring())


def decode_mailbox(raw: bytes) -> str:
    """A name from the wire; only the one spelling modified UTF-7 allows is taken.

    RFC 3501 5.1.3: printable ASCII is never base64-encoded, so ``&AGE-``
    for ``a`` is refused rather than giving one folder two names.
    """
    try:
        text = raw.decode("ascii")
        name = names.decode_utf7(text)
    except (UnicodeDecodeError, ValueError):
        raise no("Mailbox name is not valid modified UTF-7", CANNOT)
    if names.encode_utf7(name) != text:
        raise no("Mailbox name is not valid modified UTF-7", CANNOT)
    return names.canonical(name)


def account_of(session: IMAPSession) -> Account:
    if session.account is None:  # the state tables make this unreachable
        raise CommandError(BAD, "Not logged in")
    return session.account


def selected_of(session: IMAPSession) -> SelectedMailbox:
    if session.selected is None:  # the state tables make this unreachable
        raise CommandError(BAD, "No mailbox selected")
    return session.selected


def writable(session: IMAPSession) -> SelectedMailbox:
    """The selected mailbox, refusing when it was opened with EXAMINE."""
    view = selected_of(session)
    if view.readonly:
        raise no("Mailbox is read-only (EXAMINE)", CANNOT)
    return view
