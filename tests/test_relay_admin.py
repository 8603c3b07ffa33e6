"""The operator's queue commands: list, show, retry, delete, summary, and the CLI."""

from __future__ import annotations

import argparse
import io
import os
from contextlib import redirect_stdout

from twisted.trial import unittest

from mailsuite.config import default_config
from mailsuite.queue import admin
from mailsuite.queue.spool import QueuedRecipient, QueueEntry, Spool, new_id

NOW = 1_800_000_000.0


class AdminTests(unittest.TestCase):
    def setUp(self) -> None:
        self.folder = self.mktemp()
        os.makedirs(self.folder)
        self.config = default_config(self.folder)
        self.spool = Spool(self.config.queue, None)

    def add(self, age: float, *recipients: QueuedRecipient) -> str:
        """Write an entry as the spool would, ``age`` seconds old."""
        entry = QueueEntry(new_id(NOW - age), "alice@example.com", NOW - age, list(recipients))
        with open(self.spool.message_path(entry.id), "wb") as f:
            f.write(b"From: alice@example.com\r\nSubject: queued\r\n\r\nbody\r\n")
        with open(self.spool.envelope_path(entry.id), "wb") as f:
            f.write(entry.to_json())
        return entry.id

    def test_list_shows_age_sender_and_each_recipient(self) -> None:
        """One line per message, one per recipient with state, attempts and reply."""
        queue_id = self.add(
            3 * 3600 + 720,
            QueuedRecipient("bob@remote.test", "deferred", 3, NOW + 600, "451 4.2.0 busy"),
        )
        lines = admin.list_lines(self.spool, NOW)

        self.assertEqual(f"{queue_id}   3h12m  <alice@example.com>", lines[0])
        self.assertEqual(
            "    bob@remote.test  deferred  attempts=3  next in 10m  451 4.2.0 busy", lines[1]
        )

    def test_summary(self) -> None:
        """N messages waiting, by kind, and the oldest age."""
        self.add(60, QueuedRecipient("a@remote.test"))
        self.add(7200, QueuedRecipient("b@remote.test", "deferred", 1, NOW))

        self.assertEqual(
            "2 messages waiting: 1 deferred, 1 pending; oldest 2h00m",
            admin.summary(self.spool, NOW),
        )
        self.assertEqual("the queue is empty", admin.summary(Spool(self.mktemp(), None), NOW))

    def test_show_has_envelope_and_header(self) -> None:
        """``show`` prints the envelope lines and the message header, no body."""
        queue_id = self.add(10, QueuedRecipient("a@remote.test"))
        text = admin.show(self.spool, queue_id, NOW)

        self.assertIn("a@remote.test  pending", text)
        self.assertIn("Subject: queued", text)
        self.assertNotIn("body", text)

    def test_retry_makes_waiting_recipients_due(self) -> None:
        """``retry`` sets next_attempt to now for waiting recipients only."""
        queue_id = self.add(
            10,
            QueuedRecipient("a@remote.test", "deferred", 2, NOW + 3000),
            QueuedRecipient("b@remote.test", "delivered", 1, NOW + 3000),
        )

        self.assertEqual(1, admin.retry(self.spool, None, NOW))
        entry = admin.find(self.spool, queue_id)
        self.assertEqual([NOW, NOW + 3000], [r.next_attempt for r in entry.recipients])

    def test_delete_removes_both_files(self) -> None:
        """``delete`` drops the envelope and the message, without a bounce."""
        queue_id = self.add(10, QueuedRecipient("a@remote.test"))
        admin.delete(self.spool, queue_id)

        self.assertEqual([], os.listdir(self.spool.path))

    def test_unknown_or_malformed_id(self) -> None:
        """A wrong id is a clear error, and never becomes a path."""
        self.assertRaises(admin.QueueError, admin.delete, self.spool, "20260101000000.00000000")
        self.assertRaises(admin.QueueError, admin.delete, self.spool, "../../etc/passwd")

    def test_cli_commands(self) -> None:
        """``register`` adds list/show/retry/delete/summary; handlers return exit codes."""
        self.add(10, QueuedRecipient("a@remote.test"))
        parser = argparse.ArgumentParser()
        admin.register(parser.add_subparsers())

        out = io.StringIO()
        with redirect_stdout(out):
            status = parser.parse_args(["queue", "summary"]).handler(
                parser.parse_args(["queue", "summary"]), self.config
            )
        self.assertEqual(0, status)
        self.assertIn("1 message waiting", out.getvalue())

        args = parser.parse_args(["queue", "show", "nonsense"])
        with redirect_stdout(io.StringIO()):
            self.assertEqual(1, args.handler(args, self.config))
