"""Delivery over real sockets: a loopback DNS server, SMTP sinks on 127.0.0.x, TLS."""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from mailsuite.config import Config, RelayConfig, default_config
from mailsuite.queue import delivery
from mailsuite.queue.client import ReplyReader, Timeouts
from mailsuite.queue.delivery import Deliverer, OutboundMessage
from mailsuite.queue.mx import MXResolver, make_resolver
from mailsuite.queue.routes import Destination
from mailsuite.queue.states import Outcome
from mailsuite.queue.tlsclient import ClientTLS
from tests.relay_fakes import (
    SinkScript,
    TLSMaterial,
    Zone,
    make_tls,
    port_free_on,
    start_dns,
    start_sink,
    wait_until,
)

MESSAGE = b"From: alice@example.com\r\nTo: bob@remote.test\r\nSubject: hi\r\n\r\nHello.\r\n"
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


class DeliveryTestCase(unittest.TestCase):
    """A zone, a common MX port on three loopback addresses, and a deliverer."""

    def setUp(self) -> None:
        self.folder = self.mktemp()
        os.makedirs(self.folder)
        self.zone = Zone()
        self.nameserver = start_dns(self, self.zone)
        self.port = port_free_on(HOSTS)
        self.message_path = os.path.join(self.folder, "message.eml")
        with open(self.message_path, "wb") as f:
            f.write(MESSAGE)
        self.reported: list[dict[str, Outcome]] = []

    def config(self, **relay: Any) -> Config:
        base = default_config(self.folder)
        settings = {"nameservers": (self.nameserver,), "port": self.port, **relay}
        return dataclasses.replace(
            base,
            hostname="mail.example.com",
            domains=("example.com",),
            relay=dataclasses.replace(RelayConfig(), **settings),
        )

    def deliverer(
        self, config: Config | None = None, trust: TLSMaterial | None = None, reuse: bool = False
    ) -> Deliverer:
        config = config or self.config()
        resolver = MXResolver(make_resolver(reactor, config.relay.nameservers), timeout=(1,))
        client_tls = ClientTLS(trust.trust_root() if trust else None)
        timeouts = Timeouts(greeting=5, command=5, data_start=5, data_block=5, data_end=5, quit=1)
        made = Deliverer(
            config, reactor, resolver, client_tls, timeouts=timeouts, reuse_connections=reuse
        )
        self.addCleanup(made.abort_all)
        return made

    def mx(self, domain: str, *hosts: tuple[int, str, str]) -> None:
        """MX records (preference, name, address) for ``domain``."""
        self.zone.mx[domain] = [(pref, name) for pref, name, _ in hosts]
        for _, name, address in hosts:
            self.zone.a[name] = [address]

    def send(
        self,
        deliverer: Deliverer,
        destination: Destination,
        recipients: list[str],
        sender: str = "alice@example.com",
        prefix: bytes = b"",
    ) -> defer.Deferred[dict[str, Outcome]]:
        message = OutboundMessage(
            "20261204153000.00000001",
            sender,
            self.message_path,
            len(MESSAGE) + len(prefix),
            False,
            prefix,
        )

        async def record(outcomes: dict[str, Outcome]) -> None:
            self.reported.append(outcomes)

        return defer.ensureDeferred(deliverer.deliver(destination, recipients, message, record))


class MXOrderTests(DeliveryTestCase):
    @defer.inlineCallbacks
    def test_next_mx_when_the_first_refuses_connections(self) -> defer.Generator:
        """Nothing listens on the best MX: the backup gets the mail."""
        self.mx(
            "remote.test", (10, "mx1.remote.test", HOSTS[0]), (20, "mx2.remote.test", HOSTS[1])
        )
        backup = start_sink(self, HOSTS[1], self.port)

        outcomes = yield self.send(
            self.deliverer(), Destination("mx", "remote.test"), ["bob@remote.test"]
        )

        self.assertEqual("delivered", outcomes["bob@remote.test"].kind)
        self.assertEqual("mx2.remote.test", outcomes["bob@remote.test"].remote)
        self.assertEqual(MESSAGE, backup.received[0].data)

    @defer.inlineCallbacks
    def test_next_mx_after_a_temporary_greeting(self) -> defer.Generator:
        """421 at the greeting of the first MX: the second is tried in the same attempt."""
        self.mx(
            "remote.test", (10, "mx1.remote.test", HOSTS[0]), (20, "mx2.remote.test", HOSTS[1])
        )
        busy = start_sink(self, HOSTS[0], self.port, SinkScript(greeting="421 busy"))
        backup = start_sink(self, HOSTS[1], self.port)

        outcomes = yield self.send(
            self.deliverer(), Destination("mx", "remote.test"), ["bob@remote.test"]
        )

        self.assertEqual("delivered", outcomes["bob@remote.test"].kind)
        self.assertEqual((1, 1), (busy.connections, len(backup.received)))

    @defer.inlineCallbacks
    def test_all_hosts_down_defers(self) -> defer.Generator:
        """No MX host answering: the mail waits, it does not bounce."""
        self.mx("remote.test", (10, "mx1.remote.test", HOSTS[0]))

        outcomes = yield self.send(
            self.deliverer(), Destination("mx", "remote.test"), ["bob@remote.test"]
        )

        self.assertEqual("deferred", outcomes["bob@remote.test"].kind)
        self.assertIn("4.4.1", outcomes["bob@remote.test"].reply)

    @defer.inlineCallbacks
    def test_implicit_mx(self) -> defer.Generator:
        """Without MX records, the domain's own address takes the mail."""
        self.zone.a["plain.test"] = [HOSTS[2]]
        sink = start_sink(self, HOSTS[2], self.port)

        outcomes = yield self.send(
            self.deliverer(), Destination("mx", "plain.test"), ["bob@plain.test"]
        )

        self.assertEqual("delivered", outcomes["bob@plain.test"].kind)
        self.assertEqual(1, len(sink.received))

    @defer.inlineCallbacks
    def test_null_mx_bounces_without_connecting(self) -> defer.Generator:
        """RFC 7505 null MX: failed with 556 5.1.10, no connection made."""
        self.zone.mx["nomail.test"] = [(0, "")]

        outcomes = yield self.send(
            self.deliverer(), Destination("mx", "nomail.test"), ["x@nomail.test"]
        )

        self.assertEqual("failed", outcomes["x@nomail.test"].kind)
        self.assertTrue(outcomes["x@nomail.test"].reply.startswith("556 5.1.10"))

    @defer.inlineCallbacks
    def test_per_recipient_replies_in_one_transaction(self) -> defer.Generator:
        """One connection carries all recipients; each gets its own outcome."""
        self.mx("remote.test", (10, "mx1.remote.test", HOSTS[0]))
        script = SinkScript(
            rcpt={"later@remote.test": ["451 4.2.0 later"], "no@remote.test": ["550 5.1.1 no"]}
        )
        sink = start_sink(self, HOSTS[0], self.port, script)
        recipients = ["ok@remote.test", "later@remote.test", "no@remote.test"]

        outcomes = yield self.send(self.deliverer(), Destination("mx", "remote.test"), recipients)

        kinds = [outcomes[r].kind for r in recipients]
        self.assertEqual(["delivered", "deferred", "failed"], kinds)
        self.assertEqual(1, sink.connections)
        self.assertEqual(
            [{"ok@remote.test": outcomes["ok@remote.test"]}],
            [{k: v for k, v in r.items() if v.kind == "delivered"} for r in self.reported],
        )


class TLSTests(DeliveryTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.mx(
            "remote.test", (10, "mx1.remote.test", HOSTS[0]), (20, "mx2.remote.test", HOSTS[1])
        )
        self.cert = make_tls(self, "mx1.remote.test")

    @defer.inlineCallbacks
    def test_opportunistic_starttls(self) -> defer.Generator:
        """STARTTLS is used when offered, even with a certificate nobody could check."""
        sink = start_sink(self, HOSTS[0], self.port, SinkScript(tls=self.cert.server_options()))

        outcomes = yield self.send(
            self.deliverer(), Destination("mx", "remote.test"), ["bob@remote.test"]
        )

        self.assertTrue(outcomes["bob@remote.test"].tls)
        self.assertTrue(sink.received[0].tls)

    @defer.inlineCallbacks
    def test_verified_domain_with_trusted_certificate(self) -> defer.Generator:
        """For a verify_tls domain a valid certificate for the MX name passes."""
        start_sink(self, HOSTS[0], self.port, SinkScript(tls=self.cert.server_options()))
        config = self.config(verify_tls=("remote.test",))

        outcomes = yield self.send(
            self.deliverer(config, trust=self.cert),
            Destination("mx", "remote.test"),
            ["bob@remote.test"],
        )

        self.assertEqual("delivered", outcomes["bob@remote.test"].kind)

    @defer.inlineCallbacks
    def test_verified_domain_with_wrong_name_defers(self) -> defer.Generator:
        """A trusted certificate for another name fails verification: the mail waits."""
        wrong = make_tls(self, "other.example")
        sink = start_sink(self, HOSTS[0], self.port, SinkScript(tls=wrong.server_options()))
        config = self.config(verify_tls=("remote.test",))

        outcomes = yield self.send(
            self.deliverer(config, trust=wrong),
            Destination("mx", "remote.test"),
            ["bob@remote.test"],
        )

        self.assertEqual("deferred", outcomes["bob@remote.test"].kind)
        self.assertEqual([], sink.received)

    @defer.inlineCallbacks
    def test_verified_domain_without_starttls_defers(self) -> defer.Generator:
        """A verify_tls domain whose MX offers no STARTTLS gets nothing in the clear."""
        sink = start_sink(self, HOSTS[0], self.port)
        config = self.config(verify_tls=("remote.test",))

        outcomes = yield self.send(
            self.deliverer(config), Destination("mx", "remote.test"), ["bob@remote.test"]
        )

        self.assertEqual("deferred", outcomes["bob@remote.test"].kind)
        self.assertEqual([], sink.received)

    @defer.inlineCallbacks
    def test_broken_handshake_defers_by_default(self) -> defer.Generator:
        """STARTTLS offered but the handshake fails: no fallback to the clear by default."""
        script = SinkScript(tls=self.cert.server_options(), broken_tls=True)
        sink = start_sink(self, HOSTS[0], self.port, script)

        outcomes = yield self.send(
            self.deliverer(), Destination("mx", "remote.test"), ["bob@remote.test"]
        )

        self.assertEqual("deferred", outcomes["bob@remote.test"].kind)
        self.assertIn("TLS", outcomes["bob@remote.test"].reply)
        self.assertEqual([], sink.received)

    @defer.inlineCallbacks
    def test_broken_handshake_falls_back_when_allowed(self) -> defer.Generator:
        """With relay.tls_fallback the same host gets the mail in the clear."""
        script = SinkScript(tls=self.cert.server_options(), broken_tls=True)
        sink = start_sink(self, HOSTS[0], self.port, script)
        config = self.config(tls_fallback=True)

        outcomes = yield self.send(
            self.deliverer(config), Destination("mx", "remote.test"), ["bob@remote.test"]
        )

        self.assertEqual("delivered", outcomes["bob@remote.test"].kind)
        self.assertEqual((2, False), (sink.connections, sink.received[0].tls))


class SmarthostAndRouteTests(DeliveryTestCase):
    def password_file(self, mode: int = 0o600) -> str:
        path = os.path.join(self.folder, "smarthost.password")
        with open(path, "w") as f:
            f.write("s3cret\n")
        os.chmod(path, mode)
        return path

    @defer.inlineCallbacks
    def test_starttls_smarthost_with_auth(self) -> defer.Generator:
        """Port 587 style: STARTTLS (verified), then AUTH, and no MX lookup at all."""
        cert = make_tls(self, "localhost")
        script = SinkScript(tls=cert.server_options(), users={"me@isp.test": "s3cret"})
        sink = start_sink(self, "127.0.0.1", 0, script)
        endpoint = f"tcp:127.0.0.1:{sink.port.getHost().port}"
        config = self.config(
            smarthost=endpoint,
            smarthost_user="me@isp.test",
            smarthost_password_file=self.password_file(),
        )

        outcomes = yield self.send(
            self.deliverer(config, trust=cert),
            Destination("smarthost", "smarthost", endpoint),
            ["bob@remote.test"],
        )

        self.assertEqual("delivered", outcomes["bob@remote.test"].kind)
        self.assertEqual([True], sink.auth_seen_secure)
        self.assertEqual("me@isp.test", sink.received[0].user)
        self.assertEqual([], self.zone.queries)

    @defer.inlineCallbacks
    def test_smarthost_without_starttls_never_gets_the_password(self) -> defer.Generator:
        """A smarthost that offers no STARTTLS gets no AUTH: the mail waits."""
        sink = start_sink(self, "127.0.0.1", 0, SinkScript(users={"me@isp.test": "s3cret"}))
        endpoint = f"tcp:127.0.0.1:{sink.port.getHost().port}"
        config = self.config(
            smarthost=endpoint,
            smarthost_user="me@isp.test",
            smarthost_password_file=self.password_file(),
        )

        outcomes = yield self.send(
            self.deliverer(config),
            Destination("smarthost", "smarthost", endpoint),
            ["bob@remote.test"],
        )

        self.assertEqual("deferred", outcomes["bob@remote.test"].kind)
        self.assertEqual([], sink.auth_seen_secure)
        self.assertNotIn(b"s3cret", b"".join(sink.lines))

    @defer.inlineCallbacks
    def test_implicit_tls_smarthost(self) -> defer.Generator:
        """Port 465 style: a tls: endpoint speaks TLS from the first byte, then AUTH."""
        cert = make_tls(self, "localhost")
        trust_dir = os.path.join(self.folder, "trust")
        os.makedirs(trust_dir)
        shutil.copy(cert.cert_path, trust_dir)
        script = SinkScript(users={"me@isp.test": "s3cret"})
        sink = start_sink(self, "127.0.0.1", 0, script, implicit_tls=cert.server_options())
        endpoint = f"tls:127.0.0.1:{sink.port.getHost().port}:trustRoots={trust_dir}"
        config = self.config(
            smarthost=endpoint,
            smarthost_user="me@isp.test",
            smarthost_password_file=self.password_file(),
        )

        outcomes = yield self.send(
            self.deliverer(config),
            Destination("smarthost", "smarthost", endpoint),
            ["bob@remote.test"],
        )

        self.assertEqual("delivered", outcomes["bob@remote.test"].kind)
        self.assertEqual([True], sink.auth_seen_secure)

    @defer.inlineCallbacks
    def test_wrong_smarthost_password_defers(self) -> defer.Generator:
        """535 from the smarthost keeps the mail queued with the reason."""
        cert = make_tls(self, "localhost")
        script = SinkScript(tls=cert.server_options(), users={"me@isp.test": "other"})
        sink = start_sink(self, "127.0.0.1", 0, script)
        endpoint = f"tcp:127.0.0.1:{sink.port.getHost().port}"
        config = self.config(
            smarthost=endpoint,
            smarthost_user="me@isp.test",
            smarthost_password_file=self.password_file(),
        )

        outcomes = yield self.send(
            self.deliverer(config, trust=cert),
            Destination("smarthost", "smarthost", endpoint),
            ["bob@remote.test"],
        )

        self.assertEqual("deferred", outcomes["bob@remote.test"].kind)
        self.assertIn("535", outcomes["bob@remote.test"].reply)

    @defer.inlineCallbacks
    def test_route_skips_mx_lookup(self) -> defer.Generator:
        """A route sends straight to its endpoint; DNS is not asked."""
        sink = start_sink(self, HOSTS[2], 0)
        endpoint = f"tcp:{HOSTS[2]}:{sink.port.getHost().port}"

        outcomes = yield self.send(
            self.deliverer(self.config(routes={"routed.test": endpoint})),
            Destination("route", "routed.test", endpoint),
            ["bob@routed.test"],
        )

        self.assertEqual("delivered", outcomes["bob@routed.test"].kind)
        self.assertEqual([], self.zone.queries)


class ConnectionReuseTests(DeliveryTestCase):
    """RFC 5321 3.3: several transactions on one connection, as Postfix does."""

    def route(self) -> tuple[Any, Destination, Config]:
        sink = start_sink(self, HOSTS[2], 0)
        endpoint = f"tcp:{HOSTS[2]}:{sink.port.getHost().port}"
        config = self.config(routes={"routed.test": endpoint})
        return sink, Destination("route", "routed.test", endpoint), config

    @defer.inlineCallbacks
    def test_kept_connection_carries_the_next_message(self) -> defer.Generator:
        """Two messages to one endpoint: one connection, one greeting, two transactions."""
        sink, destination, config = self.route()
        deliverer = self.deliverer(config, reuse=True)

        first = yield self.send(deliverer, destination, ["bob@routed.test"])
        second = yield self.send(deliverer, destination, ["carol@routed.test"])

        self.assertEqual(
            ["delivered", "delivered"],
            [first["bob@routed.test"].kind, second["carol@routed.test"].kind],
        )
        self.assertEqual(1, sink.connections)
        self.assertEqual(2, len(sink.received))
        self.assertEqual(1, sum(line.startswith(b"EHLO") for line in sink.lines))

    @defer.inlineCallbacks
    def test_without_reuse_every_message_quits(self) -> defer.Generator:
        """The default deliverer still says QUIT after each message."""
        sink, destination, config = self.route()
        deliverer = self.deliverer(config)

        yield self.send(deliverer, destination, ["bob@routed.test"])
        yield self.send(deliverer, destination, ["carol@routed.test"])

        self.assertEqual(2, sink.connections)
        self.assertEqual(2, sink.lines.count(b"QUIT"))

    @defer.inlineCallbacks
    def test_dead_kept_connection_sends_on_a_fresh_one(self) -> defer.Generator:
        """A kept connection that died unnoticed decides nothing: a new one takes the mail."""
        sink, destination, config = self.route()
        deliverer = self.deliverer(config, reuse=True)
        yield self.send(deliverer, destination, ["bob@routed.test"])
        [[(session, _)]] = deliverer._idle.values()
        session.reader.abort()
        yield wait_until(lambda: not session.reader.idle_clean)
        # Pretend the loss went unseen until MAIL was written.
        self.patch(ReplyReader, "idle_clean", property(lambda reader: True))

        outcomes = yield self.send(deliverer, destination, ["carol@routed.test"])

        self.assertEqual("delivered", outcomes["carol@routed.test"].kind)
        self.assertEqual(2, sink.connections)
        self.assertEqual(1, len(sink.delivered_to("carol@routed.test")))

    @defer.inlineCallbacks
    def test_idle_connection_quits_after_the_idle_time(self) -> defer.Generator:
        """Nothing more to send: the kept connection says QUIT and is closed."""
        self.patch(delivery, "IDLE_TIME", 0.01)
        sink, destination, config = self.route()
        deliverer = self.deliverer(config, reuse=True)

        yield self.send(deliverer, destination, ["bob@routed.test"])
        yield wait_until(lambda: not deliverer._idle and b"QUIT" in sink.lines)

        self.assertEqual([b"QUIT"], [line for line in sink.lines if line == b"QUIT"])
