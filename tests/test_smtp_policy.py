"""Who may receive: local users, aliases, relay only when authenticated, postmaster."""

from __future__ import annotations

import dataclasses

from twisted.logger import Logger
from twisted.trial import unittest

from mailsuite.config import default_config
from mailsuite.smtp import policy as policy_module
from mailsuite.smtp import replies
from mailsuite.smtp.parse import Address, parse_rcpt
from mailsuite.smtp.policy import Expansion, Recipient, RecipientPolicy
from mailsuite.smtp.replies import SMTPReplyError


class Users:
    """A user list with ``UserDatabase``'s case-insensitive ``canonical``."""

    def __init__(self, *addresses: str) -> None:
        self.by_key = {a.lower(): a for a in addresses}

    def canonical(self, address: str) -> str | None:
        return self.by_key.get(address.lower())

    def addresses(self) -> list[str]:
        return list(self.by_key.values())


class Aliases:
    """``AliasTable.expand`` over a ready-made table (keys any case, expanded already)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = {k.lower(): v for k, v in table.items()}

    def expand(self, address: str) -> list[str] | None:
        return self.table.get(address.lower())

    def expansions(self) -> dict[str, list[str]]:
        return dict(self.table)


def policy(
    *users: str,
    domains: tuple[str, ...] = ("example.org", "example.net"),
    aliases: dict[str, list[str]] | None = None,
) -> RecipientPolicy:
    config = dataclasses.replace(default_config("/nonexistent"), domains=domains)
    return RecipientPolicy(config, Users(*users), Aliases(aliases or {}))


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

    def test_no_postmaster_user_reaches_the_first_user(self) -> None:
        """RFC 5321 4.5.1: postmaster MUST be accepted; with no alias or user of
        that name it reaches the first user added, who set the server up."""
        decider = policy("alice@example.org", "bob@example.org")

        for address in ("postmaster@example.org", "postmaster", "Postmaster"):
            self.assertEqual("alice@example.org", decider.recipient(rcpt(address), False).mailbox)

    def test_no_users_at_all_refuses_postmaster(self) -> None:
        """A server with no users has nobody to give postmaster mail to."""
        self.assertRefused(replies.NO_SUCH_USER, rcpt("postmaster@example.org"), False, policy())

    def test_subaddress_reaches_the_user(self) -> None:
        """RFC 5233: alice+lists@ reaches alice@, so replies to her subaddress arrive."""
        decider = policy("alice@example.org")

        result = decider.recipient(rcpt("alice+lists@example.org"), False)

        self.assertEqual("alice@example.org", result.mailbox)
        self.assertRefused(replies.NO_SUCH_USER, rcpt("nobody+x@example.org"), False, decider)

    def test_utf8_domain_matches_its_idna_form(self) -> None:
        """A U-label domain is ours if its A-label is configured."""
        decider = policy("bob@xn--bcher-kva.example", domains=("xn--bcher-kva.example",))

        result = decider.recipient(parse_rcpt("TO:<bob@bücher.example>", True), False)

        self.assertEqual("bob@xn--bcher-kva.example", result.mailbox)


class AliasRecipientTests(unittest.TestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, object]] = []
        self.patch(policy_module, "log", Logger(observer=self.events.append))

    def test_alias_to_local_users(self) -> None:
        """An alias is accepted and expands to its users' stored spellings."""
        decider = policy(
            "Alice@example.org",
            "bob@example.net",
            aliases={"family@example.org": ["alice@example.org", "bob@example.net"]},
        )

        result = decider.recipient(rcpt("Family@example.org"), False)

        expansion = Expansion(("Alice@example.org", "bob@example.net"), ())
        self.assertEqual(Recipient("Family@example.org", None, expansion), result)
        self.assertEqual(("Alice@example.org", "bob@example.net"), result.mailboxes)
        self.assertEqual((), result.remote)
        self.assertTrue(result.local)

    def test_alias_forwarding_from_the_mx(self) -> None:
        """A remote target is forwarded, even for an unauthenticated sender: not a relay."""
        decider = policy(
            "alice@example.org",
            aliases={"alice2@example.org": ["alice@example.org", "alice@phone.example"]},
        )

        result = decider.recipient(rcpt("alice2@example.org"), False)

        self.assertEqual(("alice@example.org",), result.mailboxes)
        self.assertEqual(("alice@phone.example",), result.remote)

    def test_alias_whose_every_target_is_unknown(self) -> None:
        """550 5.1.1 at RCPT when nothing behind the alias exists, and the log says why."""
        decider = policy(aliases={"family@example.org": ["gone@example.org", "left@example.net"]})

        for authenticated in (False, True):
            error = self.assertRaises(
                SMTPReplyError, decider.recipient, rcpt("family@example.org"), authenticated
            )
            self.assertEqual(replies.NO_SUCH_USER, error.reply)
        self.assertIn("gone@example.org", str([e.get("target") for e in self.events]))

    def test_unknown_target_skipped(self) -> None:
        """The targets that exist still get the mail when one does not."""
        decider = policy(
            "alice@example.org",
            aliases={"family@example.org": ["gone@example.org", "alice@example.org"]},
        )

        result = decider.recipient(rcpt("family@example.org"), False)

        self.assertEqual(("alice@example.org",), result.mailboxes)
        self.assertEqual(["gone@example.org"], [e["target"] for e in self.events])

    def test_same_user_twice_in_one_alias(self) -> None:
        """Two spellings of one user in an alias give one mailbox."""
        decider = policy(
            "alice@example.org",
            aliases={"family@example.org": ["alice@example.org", "ALICE@EXAMPLE.ORG"]},
        )

        result = decider.recipient(rcpt("family@example.org"), False)

        self.assertEqual(("alice@example.org",), result.mailboxes)

    def test_alias_comes_before_the_user(self) -> None:
        """An alias for a user's address decides where that user's mail goes."""
        decider = policy(
            "alice@example.org", aliases={"alice@example.org": ["alice@phone.example"]}
        )

        result = decider.recipient(rcpt("alice@example.org"), False)

        self.assertEqual(((), ("alice@phone.example",)), (result.mailboxes, result.remote))

    def test_aliases_in_other_domains_are_not_looked_up(self) -> None:
        """Only our domains have aliases: mail for other domains stays a relay question."""
        decider = policy(aliases={"boss@bank.example": ["alice@example.org"]})

        error = self.assertRaises(
            SMTPReplyError, decider.recipient, rcpt("boss@bank.example"), False
        )

        self.assertEqual(replies.RELAY_DENIED, error.reply)

    def test_postmaster_alias(self) -> None:
        """postmaster may be an alias; it serves every domain like a postmaster user."""
        decider = policy(
            "alice@example.org", aliases={"postmaster@example.org": ["alice@example.org"]}
        )

        for address in ("postmaster@example.org", "PostMaster@example.net", "postmaster"):
            result = decider.recipient(rcpt(address), False)
            self.assertEqual(("alice@example.org",), result.mailboxes)

    def test_postmaster_user_of_the_domain_before_another_domains_alias(self) -> None:
        """The domain's own postmaster (user or alias) is asked before the first domain's."""
        decider = policy(
            "alice@example.org",
            "postmaster@example.net",
            aliases={"postmaster@example.org": ["alice@example.org"]},
        )

        result = decider.recipient(rcpt("postmaster@example.net"), False)

        self.assertEqual(("postmaster@example.net",), result.mailboxes)

    def test_plain_recipients_keep_their_shape(self) -> None:
        """A user's address has one mailbox; a relayed address is its own remote."""
        self.assertEqual(("a@x",), Recipient("A@x", "a@x").mailboxes)
        self.assertEqual((), Recipient("A@x", "a@x").remote)
        self.assertEqual(("b@y",), Recipient("b@y").remote)
        self.assertEqual((), Recipient("b@y").mailboxes)
