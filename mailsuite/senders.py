"""Who may send as whom: the submission server's sender policy, alone.

An authenticated user may use, as envelope sender (MAIL FROM) and in the
From: header, their own address, a subaddress of it (``user+tag@domain``),
or an alias that delivers to them. Anything else would let one family
member send as another, or let a stolen password send as anyone under our
DKIM signature.

The SMTP server parses and sequences; this module only decides, so it is
tested without a connection.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from email.utils import getaddresses

#: Alias address -> the addresses it delivers to.
Aliases = Mapping[str, Collection[str]]


def may_send_as(
    authenticated_address: str,
    sender_address: str,
    from_header_addresses: Iterable[str],
    aliases: Aliases | None = None,
) -> bool:
    """Whether ``authenticated_address`` owns the envelope sender and every From address.

    The null sender ``<>`` is refused: a person's mail must be able to
    bounce back to them. A message without a From address passes; the
    server may add one (RFC 6409 section 8.1), which must then be the user's.
    """
    owned = _owned_addresses(authenticated_address, aliases or {})
    if not _owns(owned, sender_address):
        return False
    return all(_owns(owned, address) for address in from_header_addresses)


def from_addresses(header_values: Iterable[str]) -> list[str]:
    """The addresses in the From: header field(s), e.g. for ``may_send_as``."""
    return [address for _, address in getaddresses(list(header_values)) if address]


def _owned_addresses(user: str, aliases: Aliases) -> set[str]:
    user_key = _normal(user)
    owned = {user_key}
    for alias, targets in aliases.items():
        if user_key in {_normal(t) for t in targets}:
            owned.add(_normal(alias))
    return owned


def _owns(owned: set[str], address: str) -> bool:
    key = _normal(address)
    if not key or "@" not in key:
        return False
    return key in owned or _without_subaddress(key) in owned


def _normal(address: str) -> str:
    """Compare without regard to case, as our user list does; strip <>."""
    return address.strip().strip("<>").strip().lower()


def _without_subaddress(address: str) -> str:
    """``user+tag@domain`` -> ``user@domain`` (RFC 5233 subaddressing)."""
    local, _, domain = address.rpartition("@")
    base, plus, _ = local.partition("+")
    return f"{base}@{domain}" if plus and base else address
