"""Who may send to whom: the recipient and sender decisions, apart from the protocol.

Recipients (RCPT TO), for every listener:

- A recipient in one of our domains must be an alias or an existing user;
  otherwise ``550 5.1.1``, whoever asks. Aliases are looked up first
  (``mailsuite.aliases``) and expand, when the recipient is accepted, to
  local users (stored directly) and remote addresses (forwarded through the
  queue with the original envelope sender; see docs/known-issues.md on SPF).
  An alias none of whose targets exists is refused like an unknown user.
  Local mail never goes through the queue.
- A recipient anywhere else is relayed only for an authenticated client
  (submission); on the MX port it is ``550 5.7.1``. There is no other way
  to relay: no trusted networks, no exceptions for loopback. Forwarding by
  an alias is not relaying: the operator chose its targets.
- ``postmaster`` (RFC 5321 4.5.1: every domain MUST accept it) goes to the
  alias or user ``postmaster@<that domain>`` if there is one, else to the
  first ``postmaster@<domain>`` alias or user in the order ``domains`` lists
  them, so one postmaster serves every domain. A bare ``<postmaster>`` (RFC
  5321 4.1.1.3) is treated the same. With no postmaster at all the address
  is refused like any unknown user; the operator creates one with
  ``mailsuite alias add postmaster@<domain> you@<domain>``.

Senders, on submission only (RFC 6409 6.1 lets the submission server refuse
a sender the user is not authorised to use): the envelope sender at MAIL
and every From: address at the end of DATA must belong to the authenticated
user: their address, a ``+tag`` subaddress of it, or an alias that delivers
to them (``mailsuite.senders``). ``MAIL FROM:<>`` is refused: a person's
mail program never needs it, and mail that cannot bounce back to its
sender should not leave under our name. A message without From: passes.

Forwarding, on the MX port: a message an alias forwards elsewhere is refused
(``550 5.7.1``, the whole message) when its From: names one of our domains,
or cannot be read. The relayer DKIM-signs queued mail by its From: domain,
so forwarding it would put our signature on whatever a stranger wrote as
one of our users. Mail for local users alone is not affected.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from twisted.logger import Logger

from mailsuite import senders
from mailsuite.aliases import alias_key
from mailsuite.config import Config
from mailsuite.smtp import headers, replies
from mailsuite.smtp.parse import Address, unquote_local
from mailsuite.smtp.replies import SMTPReplyError

log = Logger()

POSTMASTER = "postmaster"


class UserDirectory(Protocol):
    """What the policy needs of the user list (``mailsuite.users.UserDatabase``)."""

    def canonical(self, address: str) -> str | None:
        """The stored spelling of ``address``, or None if there is no such user."""

    def addresses(self) -> list[str]:
        """Every user, in the order they were added."""


class AliasDirectory(Protocol):
    """What the policy needs of the aliases (``mailsuite.aliases.AliasTable``)."""

    def expand(self, address: str) -> list[str] | None:
        """The users and remote addresses ``address`` delivers to; None if no alias."""

    def expansions(self) -> dict[str, list[str]]:
        """Every alias with what it expands to."""


class NoAliases:
    """An empty alias list, for policies built without one."""

    def expand(self, address: str) -> list[str] | None:
        return None

    def expansions(self) -> dict[str, list[str]]:
        return {}


@dataclass(frozen=True)
class Expansion:
    """Where an alias delivers: local users' mailboxes and remote addresses."""

    mailboxes: tuple[str, ...]
    forwards: tuple[str, ...]


@dataclass(frozen=True)
class Recipient:
    """An accepted recipient and where its copy goes.

    ``mailbox`` is the local user of a user's address; an alias has its
    ``expansion`` instead; with neither, the address is relayed.
    """

    address: str
    mailbox: str | None = None
    expansion: Expansion | None = None

    @property
    def local(self) -> bool:
        """In one of our domains: stored here (or forwarded by an alias)."""
        return self.mailbox is not None or self.expansion is not None

    @property
    def mailboxes(self) -> tuple[str, ...]:
        """The local users who get a copy."""
        if self.expansion is not None:
            return self.expansion.mailboxes
        return (self.mailbox,) if self.mailbox is not None else ()

    @property
    def remote(self) -> tuple[str, ...]:
        """The addresses the queue sends a copy to."""
        if self.expansion is not None:
            return self.expansion.forwards
        return () if self.mailbox is not None else (self.address,)


class RecipientPolicy:
    """Decides RCPT TO: deliver locally, relay, or refuse (raising the reply)."""

    def __init__(
        self, config: Config, users: UserDirectory, aliases: AliasDirectory | None = None
    ) -> None:
        self.config = config
        self.users = users
        self.aliases = aliases or NoAliases()

    def recipient(self, address: Address, authenticated: bool) -> Recipient:
        local = unquote_local(address.local)
        domain = self._our_domain(address.domain) if address.domain else ""
        if local.lower() == POSTMASTER and (domain is not None):
            return self._postmaster(address.text, domain)

        if domain is not None:
            recipient = self._local(address.text, f"{local}@{domain}")
            base = _without_subaddress(local)
            if recipient is None and base != local:
                # RFC 5233: user+tag@domain reaches user@domain, so replies to
                # mail a user sent from a subaddress are not bounced.
                recipient = self._local(address.text, f"{base}@{domain}")
            if recipient is None:
                raise SMTPReplyError(replies.NO_SUCH_USER)
            return recipient

        if not authenticated:
            raise SMTPReplyError(replies.RELAY_DENIED)
        return Recipient(address.text)

    def _our_domain(self, domain: str) -> str | None:
        """``domain`` as configured (ASCII, IDNA for a U-label) if it is ours."""
        if not domain.isascii():
            try:
                domain = domain.encode("idna").decode("ascii")
            except UnicodeError:
                return None
        return domain.lower() if self.config.is_local_domain(domain) else None

    def _local(self, text: str, address: str) -> Recipient | None:
        """An alias (looked up first) or a user of ours; None if neither."""
        targets = self.aliases.expand(address)
        if targets is None:
            mailbox = self.users.canonical(address)
            return Recipient(text, mailbox) if mailbox is not None else None

        expansion = self._expansion(address, targets)
        if expansion is None:
            return None
        return Recipient(text, expansion=expansion)

    def _expansion(self, alias: str, targets: list[str]) -> Expansion | None:
        mailboxes: list[str] = []
        forwards: list[str] = []
        for target in targets:
            local, _, domain = target.rpartition("@")
            ours = self._our_domain(domain)
            if ours is None:
                forwards.append(target)
                continue

            mailbox = self.users.canonical(f"{local}@{ours}")
            if mailbox is None:
                log.warn("alias {alias}: {target} is no user here", alias=alias, target=target)
                continue
            mailboxes.append(mailbox)

        if not mailboxes and not forwards:
            return None
        return Expansion(tuple(dict.fromkeys(mailboxes)), tuple(forwards))

    def _postmaster(self, text: str, domain: str) -> Recipient:
        candidates = [domain] if domain else []
        candidates += list(self.config.domains)
        for candidate in candidates:
            recipient = self._local(text, f"{POSTMASTER}@{candidate}")
            if recipient is not None:
                return recipient

        # RFC 5321 4.5.1: postmaster MUST be accepted. With no postmaster alias
        # or user, the first user added (the person who set the server up) gets it.
        users = self.users.addresses()
        if users:
            return Recipient(text, users[0])
        raise SMTPReplyError(replies.NO_SUCH_USER)


class SenderPolicy:
    """Decides, on submission, whether a user may send as the addresses they give."""

    def __init__(
        self,
        aliases: AliasDirectory | None = None,
        domains: Collection[str] = (),
        header_limit: int = headers.HEADER_LIMIT,
    ) -> None:
        self.aliases = aliases or NoAliases()
        self.domains = frozenset(d.lower() for d in domains)
        self.header_limit = header_limit

    def envelope(self, user: str, sender: str) -> None:
        """MAIL FROM: ``SENDER_NOT_OWNED`` unless ``sender`` is the user's."""
        if not senders.may_send_as(user, sender, [], self.aliases.expansions()):
            raise SMTPReplyError(replies.SENDER_NOT_OWNED)

    def message(self, user: str, sender: str, message: bytes) -> None:
        """End of DATA: every From: address (and the sender, again) must be the user's."""
        found = self._from_addresses(message)
        if not senders.may_send_as(user, sender, found, self.aliases.expansions()):
            raise SMTPReplyError(replies.FROM_NOT_OWNED)

    def forwarded(self, message: bytes) -> None:
        """MX mail an alias forwards: ``FORWARD_REFUSED`` if From: claims our domains."""
        try:
            found = self._from_addresses(message)
        except SMTPReplyError:
            raise SMTPReplyError(replies.FORWARD_REFUSED) from None

        if any(alias_key(address).rpartition("@")[2] in self.domains for address in found):
            raise SMTPReplyError(replies.FORWARD_REFUSED)

    def _from_addresses(self, message: bytes) -> list[str]:
        try:
            return headers.from_addresses(headers.header_section(message, self.header_limit))
        except headers.HeaderTooLong:
            raise SMTPReplyError(replies.HEADER_TOO_LONG) from None
        except headers.UnreadableFrom:
            raise SMTPReplyError(replies.FROM_UNREADABLE) from None


def _without_subaddress(local: str) -> str:
    """``user+tag`` -> ``user`` (RFC 5233); other local parts unchanged."""
    base, plus, _ = local.partition("+")
    return base if plus and base else local
