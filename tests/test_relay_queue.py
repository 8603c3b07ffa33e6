"""The relayer's queue semantics on a real spool, a test clock and a scripted deliverer."""

from __future__ import annotations

import dataclasses
import email
import os
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.trial import unittest

from mailsuite import durable
from mailsuite.config import Config, default_config
from mailsuite.context import ServiceContext
from mailsuite.maillog import MailLog
from mailsuite.queue import admin, states
from mailsuite.queue.delivery import Interrupted, OutboundMessage
from mailsuite.queue.relay import MAX_ACTIVE, MAX_CONNECTIONS, SCAN_INTERVAL, RelayService
from mailsuite.queue.routes import Destination
from mailsuite.queue.spool import QueueEntry, Spool
from mailsuite.queue.states import Outcome
from mailsuite.store import NoSuchMailbox, TemporaryFailure
from tests.relay_fakes import ClockReactor

MESSAGE = b"From: alice@example.com\r\nTo: bob@remote.test\r\nSubject: hi\r\n\r\nHello.\r\n"

OK = states.delivered("250 2.0.0 ok", "mx.remote.test", tls=True)
LATER = states.deferred("451 4.2.0 try later", "mx.remote.test")
NEVER = states.failed("550 5.1.1 no such user", "mx.remote.test")


class ScriptedDeliverer:
    """Answers per recipient from a script: one outcome per attempt, the last repeats."""

    def __init__(self, sent: list[tuple[str, list[str], bytes]] | None = None) -> None:
        #: (sender, recipients, message) of every attempt, kept across restarts.
        self.sent = sent if sent is not None else []
        self.script: dict[str, list[Outcome]] = {}
        self.calls: list[tuple[Destination, list[str], OutboundMessage]] = []
        self.times: list[float] = []
        self.clock: Any = None
        #: When set, deliveries wait on this Deferred after reporting (a hung
        #: remote); it fires with True when the relayer stops (interrupted).
        self.hang: defer.Deferred[bool] | None = None
        self.aborted = False

    def outcome(self, address: str) -> Outcome:
        attempts = sum(address in c[1] for c in self.calls)
        outcomes = self.script.get(address, [OK])
        return outcomes[min(attempts - 1, len(outcomes) - 1)]

    async def deliver(
        self, destination: Destination, recipients: list[str], message: Any, on_outcomes: Any
    ) -> dict[str, Outcome]:
        self.calls.append((destination, list(recipients), message))
        self.times.append(self.clock.seconds())
        with open(message.path, "rb") as f:
            self.sent.append((message.sender, list(recipients), f.read()))
        outcomes = {r: self.outcome(r) for r in recipients}
        accepted = {r: o for r, o in outcomes.items() if o.kind == "delivered"}
        if accepted:
            await on_outcomes(accepted)
        if self.hang is not None and await self.hang:
            raise Interrupted()
        return outcomes

    def abort_all(self) -> None:
        self.aborted = True
        if self.hang is not None and not self.hang.called:
            self.hang.callback(True)


class FakeStore:
    """Records local deliveries (bounces to our own users)."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, bytes]] = []

    def deliver(self, address: str, data: bytes) -> defer.Deferred[str]:
        self.delivered.append((address, data))
        return defer.succeed(f"key{len(self.delivered)}")


class RelayTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.folder = self.mktemp()
        os.makedirs(self.folder)
        base = default_config(self.folder)
        self.config: Config = dataclasses.replace(
            base, hostname="mail.example.com", domains=("example.com",)
        )
        self.clock = ClockReactor()
        self.store = FakeStore()
        self.events: list[dict[str, Any]] = []
        self.deliverer = ScriptedDeliverer()
        self.deliverer.clock = self.clock
        self.spool = Spool(self.config.queue, self.clock)
        self.relay: RelayService | None = None

    def tearDown(self) -> None:
        if self.relay is not None and self.relay.running:
            self.relay.stopService()

    def start(self, deliverer: ScriptedDeliverer | None = None) -> RelayService:
        maillog = MailLog(Logger(observer=self.events.append))
        ctx = ServiceContext(
            config=self.config,
            reactor=self.clock,
            store=self.store,  # type: ignore[arg-type]
            checker=None,
            tls=None,
            spool=self.spool,
            maillog=maillog,
        )
        self.relay = RelayService(ctx, deliverer=deliverer or self.deliverer)  # type: ignore[arg-type]
        self.relay.startService()
        self.clock.advance(0)
        return self.relay

    def restart(self, crash: bool = False) -> RelayService:
        """A new process: new clock, spool and relayer on the same files.

        With ``crash`` the old relayer is abandoned mid-flight: its clock
        never runs again, so it writes nothing more, as after SIGKILL.
        """
        if self.relay is not None and self.relay.running and not crash:
            self.relay.stopService()
        self.clock = ClockReactor(self.clock.seconds())
        self.spool = Spool(self.config.queue, self.clock)
        fresh = ScriptedDeliverer(self.deliverer.sent)
        fresh.script = self.deliverer.script
        fresh.clock = self.clock
        self.deliverer = fresh
        return self.start(fresh)

    def enqueue(
        self, recipients: list[str], sender: str = "alice@example.com", data: bytes = MESSAGE
    ) -> str:
        ids: list[str] = []
        self.spool.enqueue(sender, recipients, data).addCallback(ids.append)
        self.clock.advance(0)
        self.assertEqual(1, len(ids))
        return ids[0]

    def entry(self, queue_id: str) -> QueueEntry | None:
        for entry in self.spool.entries():
            if entry.id == queue_id:
                return entry
        return None

    def state(self, queue_id: str, address: str) -> str:
        entry = self.entry(queue_id)
        assert entry is not None
        return next(r.state for r in entry.recipients if r.address == address)

    def mail_events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("mail_event") == kind]

    def reports_sent(self) -> list[tuple[list[str], email.message.Message]]:
        """The DSNs the relayer queued and then sent (null sender), with their recipients."""
        return [
            (recipients, email.message_from_bytes(data))
            for sender, recipients, data in self.deliverer.sent
            if sender == ""
        ]

    def user_mail_sent(self) -> list[list[str]]:
        return [recipients for sender, recipients, _ in self.deliverer.sent if sender]


class DeliveryTests(RelayTestCase):
    def test_queue_is_resumed_at_start(self) -> None:
        """Mail queued before the relayer starts is delivered when it starts."""
        queue_id = self.enqueue(["bob@remote.test"])
        self.start()

        self.assertEqual(["bob@remote.test"], [r for rs in self.user_mail_sent() for r in rs])
        self.assertIsNone(self.entry(queue_id))
        [event] = self.mail_events("delivered")
        self.assertEqual(True, event["tls"])

    def test_enqueue_wakes_the_relayer(self) -> None:
        """A new entry is sent at once, not at the next scan."""
        self.start()
        self.enqueue(["bob@remote.test"])
        self.clock.advance(0)

        self.assertEqual(["bob@remote.test"], [r for rs in self.user_mail_sent() for r in rs])

    def test_burst_is_not_relisted_per_enqueue(self) -> None:
        """Each enqueue reads its own envelope: listing the spool each time was quadratic."""
        self.start()
        listings: list[int] = []
        entries = self.spool.entries
        self.spool.entries = lambda: listings.append(1) or entries()  # type: ignore[method-assign]

        for number in range(5):
            self.enqueue([f"r{number}@remote.test"])
        self.clock.advance(0)

        self.assertEqual(5, len(self.user_mail_sent()))
        self.assertEqual([], listings)

    def test_backlog_beyond_the_slots_starts_as_slots_free(self) -> None:
        """More due entries than slots: the rest start as a slot frees, not a scan later."""
        self.deliverer.hang = defer.Deferred()
        for number in range(MAX_ACTIVE + 3):
            self.enqueue([f"r{number}@remote.test"])
        self.start()
        self.assertEqual(min(MAX_ACTIVE, MAX_CONNECTIONS), len(self.deliverer.calls))

        hang, self.deliverer.hang = self.deliverer.hang, None
        hang.callback(False)
        self.clock.advance(0)

        self.assertEqual(MAX_ACTIVE + 3, len(self.deliverer.calls))
        self.assertEqual([], self.spool.entries())

    def test_one_transaction_per_destination(self) -> None:
        """Recipients of one domain go together; other domains separately."""
        self.enqueue(["a@remote.test", "b@remote.test", "c@other.test"])
        self.start()

        groups = sorted(sorted(call[1]) for call in self.deliverer.calls)
        self.assertEqual([["a@remote.test", "b@remote.test"], ["c@other.test"]], groups)

    def test_mixed_replies_per_recipient(self) -> None:
        """250, 451 and 550 in one transaction: delivered, deferred, failed and bounced."""
        self.deliverer.script = {"later@remote.test": [LATER], "never@remote.test": [NEVER]}
        queue_id = self.enqueue(["ok@remote.test", "later@remote.test", "never@remote.test"])
        self.start()

        self.assertEqual("delivered", self.state(queue_id, "ok@remote.test"))
        self.assertEqual("deferred", self.state(queue_id, "later@remote.test"))
        self.assertEqual("bounced", self.state(queue_id, "never@remote.test"))
        self.assertEqual(1, len(self.store.delivered))

    def test_delivered_recipient_is_never_sent_again(self) -> None:
        """A retry carries only the recipients still waiting."""
        self.deliverer.script = {"later@remote.test": [LATER, OK]}
        queue_id = self.enqueue(["ok@remote.test", "later@remote.test"])
        self.start()
        self.clock.advance(300)

        self.assertEqual(
            ["ok@remote.test", "later@remote.test", "later@remote.test"],
            [r for rs in self.user_mail_sent() for r in rs],
        )
        self.assertIsNone(self.entry(queue_id))


class RetryTests(RelayTestCase):
    def test_back_off_schedule_then_hourly(self) -> None:
        """Retries after 5, 10, 20, 40 minutes, then every hour (the last value repeats)."""
        self.deliverer.script = {"bob@remote.test": [LATER]}
        self.enqueue(["bob@remote.test"])
        self.start()
        start = self.clock.seconds()
        for _ in range(7 * 3600 // 60):
            self.clock.advance(60)

        gaps = [
            b - a
            for a, b in zip([start, *self.deliverer.times], self.deliverer.times, strict=False)
        ]
        self.assertEqual([0, 300, 600, 1200, 2400, 3600, 3600, 3600, 3600], gaps[:9])

    def test_gives_up_after_the_lifetime_with_one_bounce(self) -> None:
        """After 5 days of deferrals the sender gets exactly one bounce and the entry goes."""
        self.deliverer.script = {"bob@remote.test": [LATER]}
        queue_id = self.enqueue(["bob@remote.test"], sender="alice@far.test")
        self.start()
        for _ in range(6 * 24):
            self.clock.advance(3600)

        self.assertIsNone(self.entry(queue_id))
        reports = [r for r in self.reports_sent() if "Undelivered" in r[1]["Subject"]]
        self.assertEqual(1, len(reports))
        status = reports[0][1].get_payload()[1].get_payload()[1]
        self.assertEqual("failed", status["Action"])
        self.assertEqual("4.2.0", status["Status"])
        last = self.deliverer.times[-1] - self.deliverer.times[0]
        self.assertEqual(self.config.relay.lifetime, round(last))

    def test_delay_notice_once(self) -> None:
        """After 4 hours the sender is told once that the mail is delayed, never again."""
        self.deliverer.script = {"bob@remote.test": [LATER]}
        queue_id = self.enqueue(["bob@remote.test"], sender="alice@far.test")
        self.start()
        for _ in range(12):
            self.clock.advance(3600)

        notices = [r for r in self.reports_sent() if "Delayed" in r[1]["Subject"]]
        self.assertEqual(1, len(notices))
        self.assertEqual("delayed", self.state(queue_id, "bob@remote.test"))
        status = notices[0][1].get_payload()[1].get_payload()[1]
        self.assertEqual("delayed", status["Action"])
        self.assertIn("Will-Retry-Until", status)

    def test_operator_retry_is_picked_up_by_the_next_scan(self) -> None:
        """``queue retry`` makes an entry due; the running relayer sees it within a scan."""
        self.deliverer.script = {"bob@remote.test": [LATER, OK]}
        queue_id = self.enqueue(["bob@remote.test"])
        self.start()
        self.clock.advance(10)

        self.assertEqual(1, admin.retry(self.spool, queue_id, now=self.clock.seconds()))
        self.clock.advance(SCAN_INTERVAL)

        self.assertEqual(2, len(self.deliverer.calls))
        self.assertIsNone(self.entry(queue_id))


class BounceTests(RelayTestCase):
    def test_bounce_to_remote_sender_goes_through_the_queue(self) -> None:
        """A remote sender's bounce is queued with the null sender, to them."""
        self.deliverer.script = {"never@remote.test": [NEVER]}
        self.enqueue(["never@remote.test"], sender="alice@far.test")
        self.start()

        [(recipients, report)] = self.reports_sent()
        self.assertEqual(["alice@far.test"], recipients)
        self.assertEqual(
            "MAILER-DAEMON@mail.example.com", email.utils.parseaddr(report["From"])[1]
        )
        self.assertEqual("multipart/report", report.get_content_type())

    def test_bounce_to_local_sender_goes_to_the_store(self) -> None:
        """A local sender's bounce is stored straight into their mailbox."""
        self.deliverer.script = {"never@remote.test": [NEVER]}
        self.enqueue(["never@remote.test"], sender="alice@example.com")
        self.start()

        [(address, data)] = self.store.delivered
        self.assertEqual("alice@example.com", address)
        self.assertIn(b"Final-Recipient: rfc822; never@remote.test", data)
        self.assertIn(b"Remote-MTA: dns; mx.remote.test", data)
        self.assertEqual([], self.reports_sent())

    def test_no_bounce_for_the_null_sender(self) -> None:
        """A bounce that cannot be delivered is dropped, never bounced (no loops)."""
        self.deliverer.script = {"never@remote.test": [NEVER]}
        queue_id = self.enqueue(["never@remote.test"], sender="")
        self.start()

        self.assertEqual([], self.store.delivered)
        # The only null-sender mail sent is the message itself, no report about it.
        self.assertEqual([["never@remote.test"]], [r for r, _ in self.reports_sent()])
        self.assertIsNone(self.entry(queue_id))

    def test_mail_loop_is_bounced_not_sent(self) -> None:
        """More than 50 Received: fields stop the message with 5.4.6."""
        looping = b"Received: from a by b\r\n" * 51 + MESSAGE
        self.enqueue(["bob@remote.test"], data=looping)
        self.start()

        self.assertEqual([], self.user_mail_sent())
        [(_, data)] = self.store.delivered
        self.assertIn(b"Status: 5.4.6", data)


class StoreFailureTests(RelayTestCase):
    def test_unknown_local_sender_bounce_is_dropped(self) -> None:
        """A bounce for a local sender who no longer exists is logged and dropped."""

        def no_mailbox(address: str, data: bytes) -> defer.Deferred[str]:
            return defer.fail(NoSuchMailbox(address))

        self.store.deliver = no_mailbox  # type: ignore[method-assign]
        self.deliverer.script = {"never@remote.test": [NEVER]}
        queue_id = self.enqueue(["never@remote.test"], sender="gone@example.com")
        self.start()

        self.assertIsNone(self.entry(queue_id))

    def test_full_disk_for_a_bounce_retries_later_without_spinning(self) -> None:
        """A temporary store failure keeps the bounce owed; the relayer waits, not spins."""
        failures: list[str] = []

        def full(address: str, data: bytes) -> defer.Deferred[str]:
            failures.append(address)
            return defer.fail(TemporaryFailure("disk full"))

        self.store.deliver = full  # type: ignore[method-assign]
        self.deliverer.script = {"never@remote.test": [NEVER]}
        queue_id = self.enqueue(["never@remote.test"], sender="alice@example.com")
        self.start()
        self.flushLoggedErrors(TemporaryFailure)

        self.assertEqual("failed", self.state(queue_id, "never@remote.test"))
        now = self.clock.seconds()
        self.assertTrue(all(c.getTime() >= now + 1 for c in self.clock.getDelayedCalls()))

        self.store.deliver = FakeStore.deliver.__get__(self.store)  # type: ignore[method-assign]
        self.clock.advance(SCAN_INTERVAL)
        self.flushLoggedErrors(TemporaryFailure)

        self.assertEqual(1, len(failures))
        self.assertEqual(1, len(self.store.delivered))
        self.assertIsNone(self.entry(queue_id))


class StartTests(RelayTestCase):
    def test_readable_password_file_is_warned_about(self) -> None:
        """A smarthost password others can read is pointed out at start, with the fix."""
        path = os.path.join(self.folder, "password")
        with open(path, "w") as f:
            f.write("secret\n")
        os.chmod(path, 0o644)
        relay = dataclasses.replace(
            self.config.relay,
            smarthost="tcp:smtp.isp.test:587",
            smarthost_user="me",
            smarthost_password_file=path,
        )
        self.config = dataclasses.replace(self.config, relay=relay)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        self.start()

        warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertTrue(any(f"chmod 600 {path}" in str(e.get("problem")) for e in warnings))
        self.assertFalse(any("secret" in str(e) for e in events))

    def test_stand_in_spool_leaves_the_relayer_idle(self) -> None:
        """A spool without entries() (other parts' tests) starts an idle relayer, no errors."""
        self.spool = object()  # type: ignore[assignment]
        self.start()

        self.assertEqual([], self.clock.getDelayedCalls())


class CrashTests(RelayTestCase):
    def test_delivered_is_durable_before_the_transaction_ends(self) -> None:
        """A crash right after the remote's 250 does not resend to that recipient."""
        self.deliverer.hang = defer.Deferred()
        queue_id = self.enqueue(["ok@remote.test"])
        self.start()

        # The 250 is on disk while the transaction is still open (before QUIT):
        # its last recipient delivered, the entry is already durably removed.
        self.assertIsNone(self.entry(queue_id))

        self.restart(crash=True)

        self.assertEqual([["ok@remote.test"]], self.user_mail_sent())
        self.assertIsNone(self.entry(queue_id))

    def test_failed_recipient_found_at_start_gets_its_bounce(self) -> None:
        """A crash between "failed" and the bounce: the bounce is sent after restart, once."""
        queue_id = self.enqueue(["never@remote.test"], sender="alice@far.test")
        entry = self.entry(queue_id)
        assert entry is not None
        entry.recipients[0].state = states.FAILED
        entry.recipients[0].last_reply = "550 5.1.1 no such user"
        durable.replace_file(self.spool.envelope_path(queue_id), entry.to_json())

        self.start()
        self.restart()

        self.assertEqual([], self.user_mail_sent())
        self.assertEqual(1, len(self.reports_sent()))
        self.assertIsNone(self.entry(queue_id))

    def test_unwritable_envelope_does_not_cause_a_resend(self) -> None:
        """If recording "delivered" fails, this process still never sends it again."""
        self.deliverer.script = {"later@remote.test": [LATER]}
        queue_id = self.enqueue(["ok@remote.test", "later@remote.test"])
        failing = self.spool.update

        def broken(entry: QueueEntry) -> defer.Deferred[None]:
            return defer.fail(OSError(28, "No space left on device"))

        self.spool.update = broken  # type: ignore[method-assign]
        self.start()
        self.flushLoggedErrors(OSError)
        self.spool.update = failing  # type: ignore[method-assign]
        self.clock.advance(3600)

        self.assertEqual(
            1, [r for rs in self.user_mail_sent() for r in rs].count("ok@remote.test")
        )
        self.assertEqual("delivered", self.state(queue_id, "ok@remote.test"))

    def test_stop_interrupts_without_recording_a_failure(self) -> None:
        """Stopping cuts deliveries in flight; their recipients stay as they were."""
        self.deliverer.script = {"bob@remote.test": [LATER]}
        self.deliverer.hang = defer.Deferred()
        queue_id = self.enqueue(["bob@remote.test"])
        self.start()
        assert self.relay is not None

        stopped = self.relay.stopService()

        self.assertTrue(self.deliverer.aborted)
        self.assertTrue(stopped.called)
        self.assertEqual("pending", self.state(queue_id, "bob@remote.test"))

    def test_entry_deleted_by_operator_is_not_recreated(self) -> None:
        """``queue delete`` during a delivery wins; the relayer does not write it back."""
        self.deliverer.hang = defer.Deferred()
        self.deliverer.script = {"bob@remote.test": [LATER]}
        queue_id = self.enqueue(["bob@remote.test"])
        self.start()

        admin.delete(self.spool, queue_id)
        assert self.deliverer.hang is not None
        hang, self.deliverer.hang = self.deliverer.hang, None
        hang.callback(False)
        self.clock.advance(0)

        self.assertFalse(os.path.exists(self.spool.envelope_path(queue_id)))
