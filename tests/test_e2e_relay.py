"""Outbound mail end to end: submission with smtplib, the relayer, remote test MXs.

Nothing leaves the machine: MX records come from a DNS server on 127.0.0.1
that the test starts, and the "remote" hosts are SMTP sinks on 127.0.0.2-4.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
from typing import Any

import dkim as dkimpy  # type: ignore[import-untyped]
from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from mailsuite.dkim import keygen
from mailsuite.users import UserDatabase
from tests.relay_fakes import (
    Sink,
    SinkScript,
    Zone,
    port_free_on,
    start_dns,
    start_sink,
    wait_until,
)
from tests.support import RunningSuite, client_ssl_context, start_suite, toml_text

USER = "alice@example.com"
PASSWORD = "correct horse"
TIMEOUT = 10
HOSTS = {"one.test": "127.0.0.2", "two.test": "127.0.0.3", "three.test": "127.0.0.4"}

MESSAGE = (
    "From: Alice <alice@example.com>\r\n"
    "To: friends\r\n"
    "Subject: outbound\r\n"
    "Message-ID: <e2e@example.com>\r\n"
    "\r\n"
    "Hello from the relay test.\r\n"
    ".a line with a leading dot\r\n"
)


def inbox(store: str, address: str) -> list[bytes]:
    local, domain = address.split("@")
    found = []
    for path in sorted(glob.glob(os.path.join(store, domain, local, "new", "*"))):
        with open(path, "rb") as f:
            found.append(f.read())
    return found


def txt_lookup(record: str) -> Any:
    value = "".join(re.findall(r'"([^"]*)"', record)).encode()

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return value if name.decode().rstrip(".") == "mail._domainkey.example.com" else None

    return lookup


class RemoteWorld:
    """Three remote domains, each with its own MX sink on one shared port."""

    def __init__(self, testcase: unittest.TestCase, scripts: dict[str, SinkScript]) -> None:
        self.zone = Zone()
        self.nameserver = start_dns(testcase, self.zone)
        self.port = port_free_on(list(HOSTS.values()))
        self.sinks: dict[str, Sink] = {}
        for domain, address in HOSTS.items():
            self.zone.mx[domain] = [(10, f"mx.{domain}")]
            self.zone.a[f"mx.{domain}"] = [address]
            self.sinks[domain] = start_sink(testcase, address, self.port, scripts.get(domain))

    def relay_config(self) -> dict[str, Any]:
        return {"smarthost": "", "nameservers": [self.nameserver], "port": self.port, "retry": [1]}


class SubmissionTests(unittest.TestCase):
    def submit(self, suite: RunningSuite, recipients: list[str]) -> None:
        """Runs in a thread: STARTTLS, AUTH, one message to ``recipients``."""
        with smtplib.SMTP("127.0.0.1", suite.port("submission"), timeout=TIMEOUT) as smtp:
            smtp.starttls(context=client_ssl_context(suite))
            smtp.login(USER, PASSWORD)
            refused = smtp.sendmail(USER, recipients, MESSAGE.encode())
            assert not refused, refused

    @defer.inlineCallbacks
    def test_three_domains_accept_retry_and_refuse(self) -> defer.Generator:
        """One accepts, one says 451 then 250, one says 550: two arrive once, one DSN."""
        world = RemoteWorld(
            self,
            {
                "two.test": SinkScript(rcpt={"bob@two.test": ["451 4.2.0 try again", "250 ok"]}),
                "three.test": SinkScript(rcpt={"bob@three.test": ["550 5.1.1 no such user"]}),
            },
        )
        suite = yield start_suite(self, relay=world.relay_config())
        suite.add_user(USER, PASSWORD)
        record = keygen(suite.config, "example.com")

        recipients = ["bob@one.test", "bob@two.test", "bob@three.test"]
        yield threads.deferToThread(self.submit, suite, recipients)
        queue = suite.config.queue

        def settled() -> bool:
            return (
                len(world.sinks["two.test"].delivered_to("bob@two.test")) == 1
                and len(inbox(suite.store_path, USER)) == 1
                and not os.listdir(queue)
            )

        yield wait_until(settled, timeout=15)
        yield deferLater(1.5)

        one = world.sinks["one.test"].delivered_to("bob@one.test")
        two = world.sinks["two.test"].delivered_to("bob@two.test")
        self.assertEqual((1, 1), (len(one), len(two)))
        self.assertEqual([], world.sinks["three.test"].received)
        self.assertIn(b"\r\n.a line with a leading dot\r\n", one[0].data)
        self.assertTrue(dkimpy.verify(one[0].data, dnsfunc=txt_lookup(record)))

        [report] = inbox(suite.store_path, USER)
        self.assertIn(b"Final-Recipient: rfc822; bob@three.test", report)
        self.assertIn(b"Status: 5.1.1", report)
        self.assertIn(b"Remote-MTA: dns; mx.three.test", report)
        self.assertIn(b"Subject: outbound", report)


def deferLater(seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


#: twistd beside the interpreter running the tests (the virtualenv's).
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class CrashTests(unittest.TestCase):
    """SIGKILL the suite while mail is queued and a remote stalls before its 250."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.processes: list[subprocess.Popen[bytes]] = []

    def tearDown(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)

    def write_config(self, world: RemoteWorld) -> tuple[str, int]:
        submission = port_free_on(["127.0.0.1"])
        listen = {"submission": [f"tcp:{submission}:interface=127.0.0.1"]}
        for name in ("smtp", "submissions", "pop3", "pop3s", "imap", "imaps"):
            listen[name] = []
        settings = {
            "hostname": "localhost",
            "domains": ["example.com"],
            "listen": listen,
            "auth": {"failure_delay": 0},
            "relay": world.relay_config(),
        }
        path = os.path.join(self.folder, "mailsuite.toml")
        with open(path, "w") as f:
            f.write(toml_text(settings))
        UserDatabase(os.path.join(self.folder, "maildirs", ".users")).add(USER, PASSWORD)
        return path, submission

    def start(self, config: str, submission: int) -> defer.Deferred[None]:
        log = open(os.path.join(self.folder, f"run{len(self.processes)}.log"), "wb")  # noqa: SIM115
        self.addCleanup(log.close)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=root)
        command = [TWISTD, "--nodaemon", "--pidfile=", "mailsuite", "--config", config]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.processes.append(process)
        return wait_until(lambda: _listening(submission), timeout=15)

    def kill(self) -> None:
        process = self.processes[-1]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def submit(self, port: int, recipient: str) -> None:
        cert = os.path.join(self.folder, "maildirs", ".tls", "cert.pem")
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as smtp:
            smtp.starttls(context=ssl.create_default_context(cafile=cert))
            smtp.login(USER, PASSWORD)
            smtp.sendmail(USER, [recipient], MESSAGE.encode())

    @defer.inlineCallbacks
    def test_nothing_lost_nothing_acknowledged_sent_again(self) -> defer.Generator:
        """After SIGKILL and restart: stalled and deferred mail arrives; acknowledged mail once."""
        world = RemoteWorld(
            self,
            {
                "one.test": SinkScript(stall_after_data=True),
                "three.test": SinkScript(rcpt={"bob@three.test": ["451 4.2.0 later", "250 ok"]}),
            },
        )
        config, port = self.write_config(world)
        yield self.start(config, port)
        for recipient in ("bob@one.test", "bob@two.test", "bob@three.test"):
            yield threads.deferToThread(self.submit, port, recipient)

        stalled, two, three = (
            world.sinks["one.test"],
            world.sinks["two.test"],
            world.sinks["three.test"],
        )
        yield wait_until(lambda: stalled.stalled and len(two.received) == 1 and three.rcpt_counts)
        self.kill()

        stalled.script.stall_after_data = False
        yield self.start(config, port)
        queue = os.path.join(self.folder, "maildirs", ".queue")
        yield wait_until(
            lambda: not os.listdir(queue) and three.delivered_to("bob@three.test"), 15
        )
        yield deferLater(1.5)

        self.assertEqual(2, len(stalled.data_done))
        self.assertEqual(1, len(two.received))
        self.assertEqual(1, len(three.delivered_to("bob@three.test")))
        self.assertEqual([], inbox(os.path.join(self.folder, "maildirs"), USER))


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
