"""Who may send to whom: the recipient decisions, apart from the protocol.

- A recipient in one of our domains must be an existing user; otherwise
  ``550 5.1.1``, whoever asks. Local mail never goes through the queue.
- A recipient anywhere else is relayed only for an authenticated client
  (submission); on the MX port it is ``550 5.7.1``. There is no other way
  to relay: no trusted networks, no exceptions for loopback.
- ``postmaster`` (RFC 5321 4.5.1: every domain MUST accept it) goes to the
  user ``postmaster@<that domain>`` if there is one, else to the first
  ``postmaster@<domain>`` in the order ``domains`` lists them, so one
  postmaster user serves every domain. A bare ``<postmaster>`` (RFC 5321
  4.1.1.3) is treated the same. With no postmaster user at all the address
  is refused like any unknown user; the operator creates it with
  ``mailsuite user add postmaster@<domain>``. There are no other aliases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailsuite.config import Config
from mailsuite.smtp import replies
from mailsuite.smtp.parse import Address, unquote_local
from mailsuite.smtp.replies import SMTPReplyError

POSTMASTER = "postmaster"


class UserDirectory(Protocol):
    """What the policy needs of the user list (``mailsuite.users.UserDatabase``)."""

    def canonical(self, address: str) -> str | None:
        """The stored spelling of ``address``, or None if there is no such user."""


@dataclass(frozen=True)
class Recipient:
    """An accepted recipient: ``mailbox`` is the local user, or None to relay."""

    address: str
    mailbox: str | None = None

    @property
    def local(self) -> bool:
        return self.mailbox is not None


class RecipientPolicy:
    """Decides RCPT TO: deliver locally, relay, or refuse (raising the reply)."""

    def __init__(self, config: Config, users: UserDirectory) -> None:
        self.config = config
        self.users = users

    def recipient(self, address: Address, authenticated: bool) -> Recipient:
        local = unquote_local(address.local)
        domain = self._our_domain(address.domain) if address.domain else ""
        if local.lower() == POSTMASTER and (domain is not None):
            return Recipient(address.text, self._postmaster(domain))

        if domain is not None:
            mailbox = self.users.canonical(f"{local}@{domain}")
            if mailbox is None:
                raise SMTPReplyError(replies.NO_SUCH_USER)
            return Recipient(address.text, mailbox)

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

    def _postmaster(self, domain: str) -> str:
        candidates = [domain] if domain else []
        candidates += list(self.config.domains)
        for candidate in candidates:
            mailbox = self.users.canonical(f"{POSTMASTER}@{candidate}")
            if mailbox is not None:
                return mailbox
        raise SMTPReplyError(replies.NO_SUCH_USER)
