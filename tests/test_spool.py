"""The outbound spool: durable, readable entries that survive crashes cleanly."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial import unittest

from mailsuite import durable
from mailsuite.queue.spool import QueueEntry, Spool, check_id, new_id
from mailsuite.store.errors import TemporaryFailure

MESSAGE = b"Received: from x\r\n\tby y; date\r\nSubject: hi\r\n\r\nbody\r\n"


class RecordingDisk(durable.Disk):
    """Records durability calls in order; can fail one kind of call."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def _record(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail:
            raise OSError(5, "Input/output error")

    def fsync(self, fd: int) -> None:
        self._record("fsync")
        super().fsync(fd)

    def fsync_directory(self, path: str) -> None:
        self._record("fsync_directory")
        super().fsync_directory(path)

    def rename(self, source: str, target: str) -> None:
        self._record("rename")
        super().rename(source, target)


class SpoolTestCase(unittest.TestCase):
    def make_spool(self, disk: durable.Disk = durable.DISK) -> Spool:
        self.path = getattr(self, "path", None) or self.mktemp()
        return Spool(self.path, reactor, disk)

    def files(self) -> list[str]:
        return sorted(os.listdir(self.path))


class EnqueueTests(SpoolTestCase):
    async def test_message_and_envelope_on_disk(self) -> None:
        """One .eml with the exact bytes and one readable JSON envelope per message."""
        spool = self.make_spool()

        queue_id = await spool.enqueue(
            "alice@example.org", ["b@x.example", "c@y.example"], MESSAGE
        )

        self.assertEqual([f"{queue_id}.eml", f"{queue_id}.json"], self.files())
        self.assertEqual(MESSAGE, spool.read_message(queue_id))
        with open(spool.envelope_path(queue_id), encoding="utf-8") as f:
            record = json.load(f)
        created = record["created"]
        self.assertEqual(
            {
                "id": queue_id,
                "sender": "alice@example.org",
                "created": created,
                "recipients": [
                    {
                        "address": address,
                        "state": "pending",
                        "attempts": 0,
                        "next_attempt": created,
                        "last_reply": None,
                    }
                    for address in ("b@x.example", "c@y.example")
                ],
            },
            record,
        )

    async def test_durable_before_it_fires(self) -> None:
        """Message fsynced, envelope fsynced and renamed, then the folder fsynced."""
        disk = RecordingDisk()
        spool = self.make_spool(disk)

        await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)

        self.assertEqual(["fsync", "fsync", "rename", "fsync_directory"], disk.calls)

    async def test_readable_by_a_person(self) -> None:
        """The envelope is indented UTF-8 JSON; the null sender is "" and UTF-8 stays UTF-8."""
        spool = self.make_spool()

        queue_id = await spool.enqueue("", ["jösé@exämple.org"], MESSAGE)

        with open(spool.envelope_path(queue_id), "rb") as f:
            text = f.read().decode("utf-8")
        self.assertIn('\n  "sender": "",\n', text)
        self.assertIn('"address": "jösé@exämple.org"', text)

    async def test_failed_message_write_leaves_nothing(self) -> None:
        """A disk error is TemporaryFailure, and no half entry stays behind."""
        spool = self.make_spool(RecordingDisk(fail="fsync"))

        with self.assertRaises(TemporaryFailure):
            await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)

        self.assertEqual([], self.files())

    async def test_failed_envelope_rename_leaves_nothing(self) -> None:
        """If the envelope cannot be committed, the message file goes too."""
        spool = self.make_spool(RecordingDisk(fail="rename"))

        with self.assertRaises(TemporaryFailure):
            await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)

        self.assertEqual([], self.files())

    async def test_failed_folder_sync_removes_the_entry(self) -> None:
        """Not acknowledged means not sent: a failed folder fsync removes the entry."""
        spool = self.make_spool(RecordingDisk(fail="fsync_directory"))

        with self.assertRaises(TemporaryFailure):
            await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)

        self.assertEqual([], self.files())

    async def test_listeners_hear_of_committed_entries(self) -> None:
        """Listeners are told the id once the entry is durable; a failing one is logged."""
        spool = self.make_spool()
        heard: list[tuple[str, list[str]]] = []

        def broken(queue_id: str) -> None:
            raise RuntimeError("listener bug")

        spool.add_listener(lambda queue_id: heard.append((queue_id, self.files())))
        spool.add_listener(broken)
        queue_id = await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)
        spool.remove_listener(broken)
        await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)

        self.assertEqual((queue_id, [f"{queue_id}.eml", f"{queue_id}.json"]), heard[0])
        self.assertEqual(2, len(heard))
        self.assertEqual(1, len(self.flushLoggedErrors(RuntimeError)))

    def test_no_recipients(self) -> None:
        """An entry without recipients is a caller's bug."""
        self.assertRaises(ValueError, self.make_spool().enqueue, "a@b.example", [], MESSAGE)


class ReadingTests(SpoolTestCase):
    async def test_entries_survive_a_restart(self) -> None:
        """A new Spool on the same folder finds every entry, oldest first."""
        spool = self.make_spool()
        first = await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)
        second = await spool.enqueue("e@f.example", ["g@h.example"], MESSAGE)

        entries = self.make_spool().entries()

        self.assertEqual([first, second], [e.id for e in entries])
        self.assertEqual("e@f.example", entries[1].sender)

    async def test_unchanged_envelopes_are_not_parsed_again(self) -> None:
        """Listing the queue after every delivery stays cheap: only changed files are read."""
        spool = self.make_spool()
        first = await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)
        await spool.enqueue("e@f.example", ["g@h.example"], MESSAGE)
        spool.entries()
        parsed: list[bytes] = []
        real = QueueEntry.from_json
        self.patch(QueueEntry, "from_json", staticmethod(lambda d: parsed.append(d) or real(d)))
        changed = spool.entries()[0]
        changed.recipients[0].state = "deferred"
        await spool.update(changed)

        entries = spool.entries()

        self.assertEqual(1, len(parsed))
        self.assertEqual(first, json.loads(parsed[0])["id"])
        self.assertEqual("deferred", entries[0].recipients[0].state)

    async def test_uncommitted_and_corrupt_entries_are_skipped(self) -> None:
        """A message without envelope is not an entry; a corrupt envelope is logged, kept."""
        spool = self.make_spool()
        good = await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)
        lone = new_id(0)
        with open(spool.message_path(lone), "wb") as f:
            f.write(MESSAGE)
        corrupt = new_id(1)
        with open(spool.message_path(corrupt), "wb") as f:
            f.write(MESSAGE)
        with open(spool.envelope_path(corrupt), "wb") as f:
            f.write(b'{"id": ')

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        self.assertEqual([good], [e.id for e in spool.entries()])
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(corrupt, errors[0]["path"].rsplit("/", 1)[1][: -len(".json")])
        self.assertTrue(os.path.exists(spool.envelope_path(corrupt)))

    def test_ids_cannot_escape_the_folder(self) -> None:
        """Only ids of the spool's own form become paths."""
        spool = self.make_spool()
        for bad in ("../../etc/passwd", "", "20261204120000.DEADBEEF", "x.json"):
            self.assertRaises(ValueError, spool.message_path, bad)
        self.assertEqual("20261204120000.deadbeef", check_id("20261204120000.deadbeef"))

    def test_malformed_envelopes(self) -> None:
        """An envelope that is not an object, lacks fields or has wrong types is refused."""
        recipients = [{"address": "a@b"}]
        records: list[object] = [
            [],
            {"id": "x"},
            {"id": 1, "sender": "", "created": 0, "recipients": recipients},
            {"id": "x", "sender": "", "created": 0, "recipients": []},
            {"id": "x", "sender": "", "created": 0, "recipients": [{"to": "a@b"}]},
        ]
        for record in records:
            data = json.dumps(record).encode()
            self.assertRaises(ValueError, QueueEntry.from_json, data)


class ChangeTests(SpoolTestCase):
    async def test_update_is_durable_and_in_order(self) -> None:
        """Back-to-back updates of one entry all apply, the last one wins on disk."""
        spool = self.make_spool()
        queue_id = await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)
        [entry] = spool.entries()

        entry.recipients[0].state = "deferred"
        entry.recipients[0].attempts = 1
        entry.recipients[0].last_reply = "451 4.3.0 try later"
        first = spool.update(entry)
        second_entry = QueueEntry.from_json(entry.to_json())
        second_entry.recipients[0].attempts = 2
        await spool.update(second_entry)
        await first

        [loaded] = self.make_spool().entries()
        self.assertEqual(queue_id, loaded.id)
        self.assertEqual(
            ("deferred", 2, "451 4.3.0 try later"),
            (
                loaded.recipients[0].state,
                loaded.recipients[0].attempts,
                loaded.recipients[0].last_reply,
            ),
        )
        self.assertEqual([f"{queue_id}.eml", f"{queue_id}.json"], self.files())

    async def test_remove(self) -> None:
        """A removed entry is gone, both files."""
        spool = self.make_spool()
        queue_id = await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)

        await spool.remove(queue_id)

        self.assertEqual([], self.files())
        self.assertEqual([], spool.entries())

    async def test_remove_waits_for_an_update_in_flight(self) -> None:
        """An envelope write still running cannot put a removed entry back."""
        spool = self.make_spool()
        queue_id = await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)
        [entry] = spool.entries()

        entry.recipients[0].state = "delivered"
        update = spool.update(entry)
        await spool.remove(queue_id)
        await update

        self.assertEqual([], self.files())

    async def test_one_entry_by_id(self) -> None:
        """entry() reads one committed envelope; an unknown or half entry is None."""
        spool = self.make_spool()
        queue_id = await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)

        found = spool.entry(queue_id)

        assert found is not None
        self.assertEqual(["c@d.example"], [r.address for r in found.recipients])
        self.assertIsNone(spool.entry("20260101000000.00000000"))
        os.unlink(spool.message_path(queue_id))
        self.assertIsNone(spool.entry(queue_id))
        self.assertRaises(ValueError, spool.entry, "../etc/passwd")


class RecoverTests(SpoolTestCase):
    async def test_recover_removes_only_unacknowledged_files(self) -> None:
        """Lone halves and temporary files go; complete entries and other files stay."""
        spool = self.make_spool()
        kept = await spool.enqueue("a@b.example", ["c@d.example"], MESSAGE)
        leftovers = [
            f"{new_id(0)}.eml",
            f"{new_id(1)}.json",
            f"{new_id(2)}.json.tmp",
            f"{kept}.json.tmp.1234",
        ]
        for name in [*leftovers, "README"]:
            with open(os.path.join(self.path, name), "wb") as f:
                f.write(b"x")

        removed = self.make_spool().recover()

        self.assertEqual(sorted(leftovers), removed)
        self.assertEqual(sorted(["README", f"{kept}.eml", f"{kept}.json"]), self.files())
