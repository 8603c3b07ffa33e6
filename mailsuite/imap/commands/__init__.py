"""Which commands each session state accepts (RFC 3501 section 6), one table per state.

Adding a command or an extension means adding its handler to the tables
of the states it is valid in; the session never names a command itself.
"""

from __future__ import annotations

from mailsuite.imap.commands import (
    anystate,
    append,
    auth,
    copy,
    fetch,
    idle,
    listing,
    mailboxes,
    quota,
    search,
    select,
    store,
)
from mailsuite.imap.commands.base import Handler, State

#: RFC 3501 6.1 (and ID, RFC 2971, valid in every state).
ANY_STATE: dict[str, Handler] = {
    "CAPABILITY": anystate.capability,
    "NOOP": anystate.noop,
    "LOGOUT": anystate.logout,
    "ID": anystate.id_command,
}

#: RFC 3501 6.2.
NOT_AUTHENTICATED: dict[str, Handler] = {
    **ANY_STATE,
    "STARTTLS": auth.starttls,
    "LOGIN": auth.login,
    "AUTHENTICATE": auth.authenticate,
}

#: RFC 3501 6.3, with NAMESPACE (RFC 2342), ENABLE (RFC 5161), IDLE (RFC 2177).
AUTHENTICATED: dict[str, Handler] = {
    **ANY_STATE,
    "SELECT": select.select,
    "EXAMINE": select.examine,
    "CREATE": mailboxes.create,
    "DELETE": mailboxes.delete,
    "RENAME": mailboxes.rename,
    "SUBSCRIBE": mailboxes.subscribe,
    "UNSUBSCRIBE": mailboxes.unsubscribe,
    "LIST": listing.list_command,
    "LSUB": listing.lsub,
    "STATUS": mailboxes.status,
    "APPEND": append.append,
    "NAMESPACE": anystate.namespace,
    "ENABLE": anystate.enable,
    "IDLE": idle.idle,
    "GETQUOTA": quota.getquota,  # RFC 9208 4
    "GETQUOTAROOT": quota.getquotaroot,
    "SETQUOTA": quota.setquota,
}

#: RFC 3501 6.4, with UNSELECT (RFC 3691), UID EXPUNGE (RFC 4315), MOVE (RFC 6851).
SELECTED: dict[str, Handler] = {
    **AUTHENTICATED,
    "CHECK": select.check,
    "CLOSE": select.close,
    "UNSELECT": select.unselect,
    "EXPUNGE": select.expunge,
    "SEARCH": search.search,
    "FETCH": fetch.fetch,
    "STORE": store.store,
    "COPY": copy.copy,
    "MOVE": copy.move,
    "UID SEARCH": search.search,
    "UID FETCH": fetch.fetch,
    "UID STORE": store.store,
    "UID COPY": copy.copy,
    "UID MOVE": copy.move,
    "UID EXPUNGE": select.expunge,
}

TABLES: dict[State, dict[str, Handler]] = {
    State.NOT_AUTHENTICATED: NOT_AUTHENTICATED,
    State.AUTHENTICATED: AUTHENTICATED,
    State.SELECTED: SELECTED,
    State.LOGOUT: {},
}

#: RFC 3501 7.4.1: no EXPUNGE response while answering these; their
#: message numbers must not shift under the client.
HOLD_EXPUNGES = frozenset({"FETCH", "STORE", "SEARCH"})


def lookup(state: State, name: str) -> Handler | None:
    return TABLES[state].get(name)


def known(name: str) -> bool:
    """Whether any state accepts ``name`` (to tell "wrong state" from "unknown")."""
    return any(name in table for table in TABLES.values())


def allows_expunge(name: str) -> bool:
    return name not in HOLD_EXPUNGES
