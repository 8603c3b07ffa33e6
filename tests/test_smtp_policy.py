"""Who may receive: local users, relay only when authenticated, postmaster."""

from __future__ import annotations

import dataclasses

from twisted.trial import unittest

from mailsuite.config import default_config
from mailsuite.smtp import replies
from mailsuite.smtp.parse import Address, parse_rcpt
from mailsuite.smtp.policy import Recipient, RecipientPolicy
from mailsuite.smtp.replies import SMTPReplyError


class Users:
    """A user list with ``UserDatabase``'s case-insensitive ``canonical``."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = {a.lower(): a for a in addresses}

    def canonical(self, address: str) -> str | None:
        return self.addresses.get(address.lower())


def policy(
    *users: str, domains: tuple[str, ...] = ("example.org", "example.net")
) -> RecipientPolicy:
    config = dataclasses.replace(default_config("/nonexistent"), domains=domains)
    return RecipientPolicy(config, Users(*users))


def rcpt(text: str) -> Address:
    return parse_rcpt(f"TO:<{text}>", True)


class RecipientTests(unittest.TestCase):
    def assertRefused(
        self,
        expected: replies.Reply,
        address: Address,
        authenticated: bool,
        decider: RecipientPolicy,
    ) -> None:
        error = self.assertRaises(SMTPReplyError, decider.recipient, address, authenticated)
        self.assertEqual(expected, error.reply)

    def test_local_user_gets_canonical_mailbox(self) -> None:
        """Any spelling of a user's address is delivered to the stored spelling."""
        decider = policy("Alice@example.org")

        result = decider.recipient(rcpt("alice@EXAMPLE.org"), False)

        self.assertEqual(Recipient("alice@EXAMPLE.org", "Alice@example.org"), result)

    def test_quoted_local_part_finds_the_user(self) -> None:
        """ "alice"@example.org is alice@example.org."""
        result = policy("alice@example.org").recipient(rcpt('"alice"@example.org'), False)

        self.assertEqual("alice@example.org", result.mailbox)

    def test_unknown_local_user(self) -> None:
        """550 5.1.1 for a user we do not have, authenticated or not."""
        decider = policy("alice@example.org")
        for authenticated in (False, True):
            self.assertRefused(
                replies.NO_SUCH_USER, rcpt("bob@example.org"), authenticated, decider
            )

    def test_no_open_relay(self) -> None:
        """A remote recipient without authentication is 550 5.7.1."""
        decider = policy("alice@example.org")
        for address in (
            "x@elsewhere.com",
            "alice@example.org.evil.com",
            "x@[127.0.0.1]",
            "postmaster@elsewhere.com",
        ):
            self.assertRefused(replies.RELAY_DENIED, rcpt(address), False, decider)

    def test_authenticated_user_may_relay(self) -> None:
        """After AUTH a remote recipient is accepted for the queue."""
        result = policy().recipient(rcpt("x@elsewhere.com"), True)

        self.assertEqual(Recipient("x@elsewhere.com", None), result)
        self.assertFalse(result.local)

    def test_postmaster_of_the_domain(self) -> None:
        """postmaster@<domain> goes to that domain's postmaster user."""
        decider = policy("postmaster@example.org", "PostMaster@example.net")

        result = decider.recipient(rcpt("POSTMASTER@example.net"), False)

        self.assertEqual("PostMaster@example.net", result.mailbox)

    def test_one_postmaster_serves_every_domain(self) -> None:
        """Without a postmaster user in its own domain, the first domain's takes it."""
        decider = policy("postmaster@example.org")

        for address in ("postmaster@example.net", "postmaster"):
            self.assertEqual(
                "postmaster@example.org", decider.recipient(rcpt(address), False).mailbox
            )

    def test_no_postmaster_user(self) -> None:
        """With no postmaster user anywhere, postmaster is refused like any unknown user."""
        self.assertRefused(
            replies.NO_SUCH_USER,
            rcpt("postmaster@example.org"),
            False,
            policy("alice@example.org"),
        )

    def test_utf8_domain_matches_its_idna_form(self) -> None:
        """A U-label domain is ours if its A-label is configured."""
        decider = policy("bob@xn--bcher-kva.example", domains=("xn--bcher-kva.example",))

        result = decider.recipient(parse_rcpt("TO:<bob@bücher.example>", True), False)

        self.assertEqual("bob@xn--bcher-kva.example", result.mailbox)
