"""MX resolution against a real DNS server on loopback answering from a test zone."""

from __future__ import annotations

import random

from twisted.internet import defer, reactor
from twisted.trial import unittest

from mailsuite.queue.mx import DNSFailure, MailHosts, MXResolver, make_resolver, parse_nameserver
from tests.relay_fakes import Zone, start_dns, start_silent_dns


class MXTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.zone = Zone()
        self.nameserver = start_dns(self, self.zone)

    def resolver(self, seed: int = 1, nameserver: str | None = None) -> MXResolver:
        dns = make_resolver(reactor, [nameserver or self.nameserver])
        return MXResolver(dns, rng=random.Random(seed), timeout=(1,))

    async def failure_of(self, d: defer.Deferred[object]) -> DNSFailure:
        try:
            await d
        except DNSFailure as e:
            return e
        raise AssertionError("the lookup did not fail")


class MailHostTests(MXTestCase):
    @defer.inlineCallbacks
    def test_hosts_in_preference_order(self) -> defer.Generator:
        """Lower preference first (RFC 5321 5.1)."""
        self.zone.mx["remote.test"] = [(20, "backup.remote.test"), (10, "mx.remote.test")]

        hosts = yield self.resolver().mail_hosts("remote.test")

        self.assertEqual(MailHosts("remote.test", ("mx.remote.test", "backup.remote.test")), hosts)

    @defer.inlineCallbacks
    def test_equal_preferences_are_shuffled(self) -> defer.Generator:
        """Hosts of the same preference come in random order, spreading the load."""
        self.zone.mx["remote.test"] = [(10, "a.remote.test"), (10, "b.remote.test")]

        orders = set()
        for seed in range(12):
            hosts = yield self.resolver(seed).mail_hosts("remote.test")
            orders.add(hosts.hosts)

        self.assertEqual(
            {("a.remote.test", "b.remote.test"), ("b.remote.test", "a.remote.test")}, orders
        )

    @defer.inlineCallbacks
    def test_implicit_mx_only_without_mx_records(self) -> defer.Generator:
        """A domain with an address but no MX is its own mail host."""
        self.zone.a["plain.test"] = ["127.0.0.9"]

        hosts = yield self.resolver().mail_hosts("plain.test")

        self.assertEqual(MailHosts("plain.test", ("plain.test",), implicit=True), hosts)

    def test_null_mx_fails_for_good(self) -> defer.Deferred[None]:
        """RFC 7505: a single MX "." means no mail: 556 5.1.10, at once."""
        self.zone.mx["nomail.test"] = [(0, "")]

        async def check() -> None:
            failure = await self.failure_of(self.resolver().mail_hosts("nomail.test"))
            self.assertFalse(failure.temporary)
            self.assertTrue(failure.reply.startswith("556 5.1.10"))

        return defer.ensureDeferred(check())

    def test_nxdomain_fails_for_good(self) -> defer.Deferred[None]:
        """A domain that does not exist bounces with 5.1.2."""

        async def check() -> None:
            failure = await self.failure_of(self.resolver().mail_hosts("missing.test"))
            self.assertFalse(failure.temporary)
            self.assertTrue(failure.reply.startswith("550 5.1.2"))

        return defer.ensureDeferred(check())

    def test_servfail_is_temporary(self) -> defer.Deferred[None]:
        """A failing name server defers; it says nothing about the domain."""
        self.zone.mx["broken.test"] = [(10, "mx.broken.test")]
        self.zone.servfail.add("broken.test")

        async def check() -> None:
            failure = await self.failure_of(self.resolver().mail_hosts("broken.test"))
            self.assertTrue(failure.temporary)
            self.assertIn("4.4.3", failure.reply)
            # The test server logs the failure it turned into SERVFAIL.
            self.flushLoggedErrors(RuntimeError)

        return defer.ensureDeferred(check())

    def test_timeout_is_temporary(self) -> defer.Deferred[None]:
        """A name server that never answers defers the mail."""
        silent = start_silent_dns(self)
        resolver = MXResolver(make_resolver(reactor, [silent]), timeout=(0.2,))  # type: ignore[arg-type]

        async def check() -> None:
            failure = await self.failure_of(resolver.mail_hosts("remote.test"))
            self.assertTrue(failure.temporary)
            self.assertIn("timed out", failure.reply)

        return defer.ensureDeferred(check())


class AddressTests(MXTestCase):
    @defer.inlineCallbacks
    def test_ipv4_then_ipv6(self) -> defer.Generator:
        """Both address families are returned, IPv4 first."""
        self.zone.a["mx.remote.test"] = ["127.0.0.2"]
        self.zone.aaaa["mx.remote.test"] = ["::1"]

        addresses = yield self.resolver().addresses("mx.remote.test")

        self.assertEqual(["127.0.0.2", "::1"], addresses)

    def test_implicit_mx_without_address_fails_for_good(self) -> defer.Deferred[None]:
        """No MX and no address: the domain has no mail host (5.1.2)."""
        self.zone.mx["empty.test"] = []

        async def check() -> None:
            failure = await self.failure_of(self.resolver().addresses("empty.test", implicit=True))
            self.assertFalse(failure.temporary)
            self.assertTrue(failure.reply.startswith("550 5.1.2"))

        return defer.ensureDeferred(check())

    def test_mx_host_without_address_is_temporary(self) -> defer.Deferred[None]:
        """A named MX host without addresses is a DNS mistake someone may fix: defer."""

        async def check() -> None:
            failure = await self.failure_of(self.resolver().addresses("gone.remote.test"))
            self.assertTrue(failure.temporary)

        return defer.ensureDeferred(check())


class NameserverParsingTests(unittest.TestCase):
    def test_forms(self) -> None:
        """host:port, [v6]:port and a bare address (port 53) are understood."""
        self.assertEqual(("127.0.0.1", 5353), parse_nameserver("127.0.0.1:5353"))
        self.assertEqual(("::1", 53), parse_nameserver("[::1]:53"))
        self.assertEqual(("::1", 53), parse_nameserver("::1"))
        self.assertEqual(("10.0.0.1", 53), parse_nameserver("10.0.0.1"))
