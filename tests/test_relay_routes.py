"""Route selection, endpoint parsing, config checks and the recipient state rules."""

from __future__ import annotations

import dataclasses
import os

from twisted.trial import unittest

from mailsuite.config import Config, ConfigError, RelayConfig, default_config, load_config
from mailsuite.queue import routes, states
from mailsuite.queue.routes import Destination, EndpointInfo, parse_endpoint
from mailsuite.queue.spool import QueuedRecipient


def config(**relay: object) -> Config:
    base = default_config("/nonexistent")
    relay_config = dataclasses.replace(RelayConfig(), **relay)  # type: ignore[arg-type]
    return dataclasses.replace(base, domains=("example.com",), relay=relay_config)


class RouteTests(unittest.TestCase):
    def test_order_local_route_smarthost_mx(self) -> None:
        """Our domains stay local; a route beats the smarthost; MX only when neither."""
        c = config(routes={"office.test": "tcp:10.0.0.5:25"}, smarthost="tcp:smtp.isp.test:587")

        self.assertEqual("local", routes.destination_for(c, "a@Example.COM").kind)
        self.assertEqual(
            Destination("route", "office.test", "tcp:10.0.0.5:25"),
            routes.destination_for(c, "a@office.test"),
        )
        self.assertEqual("smarthost", routes.destination_for(c, "a@gmail.test").kind)
        self.assertEqual(
            Destination("mx", "gmail.test"), routes.destination_for(config(), "a@gmail.test")
        )

    def test_batches_of_at_most_100(self) -> None:
        """RFC 5321 4.5.3.1.8: more than 100 recipients go in several transactions."""
        addresses = [f"u{i}@remote.test" for i in range(250)]

        sizes = [len(members) for _, members in routes.group(config(), addresses)]
        self.assertEqual([100, 100, 50], sizes)

    def test_endpoint_strings(self) -> None:
        """Positional and named host/port, escaped IPv6, and the TLS types."""
        self.assertEqual(
            EndpointInfo("tcp", "127.0.0.2", 2525), parse_endpoint("tcp:127.0.0.2:2525")
        )
        self.assertEqual(
            EndpointInfo("tls", "smtp.isp.test", 465),
            parse_endpoint("tls:host=smtp.isp.test:port=465:timeout=10"),
        )
        self.assertEqual("::1", parse_endpoint(r"tcp:\:\:1:25").host)
        self.assertTrue(parse_endpoint("tls:h:465").implicit_tls)
        self.assertRaises(ValueError, parse_endpoint, "tcp:")


class ConfigCheckTests(unittest.TestCase):
    def test_tcp_smarthost_on_465_is_refused(self) -> None:
        """Port 465 is implicit TLS; a tcp: endpoint there would hang, so say so."""
        error = self.assertRaises(ConfigError, routes.check, config(smarthost="tcp:isp.test:465"))
        self.assertIn("tls:isp.test:465", str(error))

    def test_user_without_password_file(self) -> None:
        """A smarthost login needs its password file."""
        c = config(smarthost="tls:isp.test:465", smarthost_user="me")
        self.assertRaises(ConfigError, routes.check, c)

    def test_unknown_endpoint_type(self) -> None:
        """Only tcp: and tls: (ssl:) make sense for mail."""
        self.assertRaises(ConfigError, routes.check, config(routes={"x.test": "unix:/tmp/s"}))

    def test_ssl_smarthost_warns(self) -> None:
        """ssl: checks no certificate; the operator is told to use tls:."""
        self.assertEqual(1, len(routes.check(config(smarthost="ssl:isp.test:465"))))


class StateTests(unittest.TestCase):
    SCHEDULE = (300, 600, 1200, 2400, 3600)

    def test_retry_delay_repeats_the_last_value(self) -> None:
        """5, 10, 20, 40 minutes, then hourly."""
        delays = [states.retry_delay(n, self.SCHEDULE) for n in range(1, 9)]
        self.assertEqual([300, 600, 1200, 2400, 3600, 3600, 3600, 3600], delays)

    def test_deferral_is_capped_at_the_expiry(self) -> None:
        """The last try happens at the expiry, not an interval after it."""
        r = QueuedRecipient("b@remote.test", attempts=5)
        states.apply(
            r, states.deferred("451 busy"), now=1000.0, schedule=self.SCHEDULE, expires=2000.0
        )

        self.assertEqual(("deferred", 2000.0), (r.state, r.next_attempt))

    def test_deferral_after_expiry_fails(self) -> None:
        """A temporary failure once the lifetime is over becomes a bounce (4.4.7 noted)."""
        r = QueuedRecipient("b@remote.test")
        states.apply(
            r,
            states.deferred("451 4.2.0 busy"),
            now=2000.0,
            schedule=self.SCHEDULE,
            expires=2000.0,
        )

        self.assertEqual("failed", r.state)
        self.assertIn("4.4.7", r.last_reply or "")

    def test_delayed_stays_delayed(self) -> None:
        """After the delay notice, further deferrals keep "delayed": one notice only."""
        r = QueuedRecipient("b@remote.test", state=states.DELAYED)
        states.apply(r, states.deferred("451 busy"), now=1.0, schedule=self.SCHEDULE, expires=1e9)

        self.assertEqual("delayed", r.state)

    def test_status_codes(self) -> None:
        """Enhanced code from the reply, else the class of the basic code."""
        self.assertEqual("5.1.1", states.status_code("550 5.1.1 no such user", "5"))
        self.assertEqual("5.0.0", states.status_code("550 no such user", "5"))
        self.assertEqual("4.0.0", states.status_code("421 busy", "5"))
        self.assertEqual("4.0.0", states.status_code(None, "4"))


class ConfigKeyTests(unittest.TestCase):
    def load(self, text: str) -> Config:
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "mailsuite.toml")
        with open(path, "w") as f:
            f.write(text)
        return load_config(path)

    def test_defaults(self) -> None:
        """No fallback to the clear by default; DKIM selector "mail" under maildirs/.dkim."""
        config = self.load("")

        self.assertFalse(config.relay.tls_fallback)
        self.assertEqual("mail", config.dkim.selector)
        self.assertTrue(config.dkim.keys.endswith(os.path.join("maildirs", ".dkim")))

    def test_keys_read_and_checked(self) -> None:
        """The relay and DKIM keys are read; a wrong type names the key."""
        config = self.load(
            '[relay]\ntls_fallback = true\n[dkim]\nselector = "s2026"\nkeys = "k"\n'
        )
        self.assertTrue(config.relay.tls_fallback)
        self.assertEqual("s2026", config.dkim.selector)

        error = self.assertRaises(ConfigError, self.load, '[relay]\ntls_fallback = "yes"\n')
        self.assertIn("relay.tls_fallback", str(error))
        error = self.assertRaises(ConfigError, self.load, '[dkim]\nselector = "a/b"\n')
        self.assertIn("dkim.selector", str(error))
