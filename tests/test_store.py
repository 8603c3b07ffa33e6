"""The Maildir store: durable delivery, identities that persist, shared folders."""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from mailsuite import durable
from mailsuite.store import (
    FolderChanges,
    InvalidMailboxName,
    MailboxExists,
    MailboxNotEmpty,
    MessageGone,
    NoSuchMailbox,
    Store,
    TemporaryFailure,
)
from mailsuite.store.maildir import UniqueNames, _arrival_order, to_crlf

ADDRESS = "alice@example.test"


class RecordingDisk(durable.Disk):
    """A disk that records the order of durability calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def fsync(self, fd: int) -> None:
        self.calls.append(("fsync", str(fd)))
        super().fsync(fd)

    def fsync_directory(self, path: str) -> None:
        self.calls.append(("fsync_directory", os.path.basename(path)))
        super().fsync_directory(path)

    def rename(self, source: str, target: str) -> None:
        self.calls.append(("rename", os.path.basename(os.path.dirname(target))))
        super().rename(source, target)


class FullDisk(durable.Disk):
    """A disk whose file fsync fails as if the device were full."""

    def fsync(self, fd: int) -> None:
        raise OSError(28, "No space left on device")


class StoreTestCase(unittest.TestCase):
    def make_store(self, root: str | None = None, disk: durable.Disk = durable.DISK) -> Store:
        self.root = root or getattr(self, "root", None) or self.mktemp()
        return Store(self.root, reactor, disk)

    async def deliver_many(self, store: Store, count: int) -> list[str]:
        return list(
            await defer.gatherResults(
                [
                    defer.ensureDeferred(store.deliver(ADDRESS, b"Subject: %d\n\nbody\n" % i))
                    for i in range(count)
                ]
            )
        )


class DeliveryTests(StoreTestCase):
    def test_delivery_is_fsynced_renamed_and_directory_synced_in_order(self) -> defer.Deferred:
        """A message is fsynced in tmp/, renamed into new/, then new/ is fsynced."""
        disk = RecordingDisk()
        store = self.make_store(disk=disk)

        async def check() -> None:
            await store.deliver(ADDRESS, b"Subject: hi\r\n\r\nbody\r\n")

            kinds = [call[0] for call in disk.calls]
            self.assertEqual(["fsync", "rename", "fsync_directory"], kinds)
            self.assertEqual(("fsync_directory", "new"), disk.calls[-1])

        return defer.ensureDeferred(check())

    def test_delivery_failure_is_temporary_and_leaves_nothing(self) -> defer.Deferred:
        """A failed fsync gives a TemporaryFailure and no file in new/ or tmp/."""
        store = self.make_store(disk=FullDisk())

        async def check() -> None:
            with self.assertRaises(TemporaryFailure):
                await store.deliver(ADDRESS, b"Subject: hi\r\n\r\nbody\r\n")

            inbox = os.path.join(self.root, "example.test", "alice")
            self.assertEqual([], os.listdir(os.path.join(inbox, "new")))
            self.assertEqual([], os.listdir(os.path.join(inbox, "tmp")))

        return defer.ensureDeferred(check())

    def test_many_deliveries_in_one_second_get_distinct_names(self) -> defer.Deferred:
        """Two hundred concurrent deliveries from one process never collide."""
        store = self.make_store()

        async def check() -> None:
            keys = await self.deliver_many(store, 200)

            self.assertEqual(200, len(set(keys)))
            inbox = store.account(ADDRESS).folder("INBOX")
            self.assertEqual(200, len(inbox.messages))

        return defer.ensureDeferred(check())

    def test_delivery_stores_crlf_and_records_wire_size(self) -> defer.Deferred:
        """Bare LF is stored as CRLF, and the name carries the served size."""
        store = self.make_store()

        async def check() -> None:
            await store.deliver(ADDRESS, b"Subject: x\n\n.dot\nend\n")
            inbox = store.account(ADDRESS).folder("INBOX")
            message = inbox.messages[0]

            expected = b"Subject: x\r\n\r\n.dot\r\nend\r\n"
            self.assertEqual(expected, inbox.read(message))
            self.assertEqual(len(expected), inbox.wire_size(message))

        return defer.ensureDeferred(check())

    def test_delivery_reaches_open_folder_listeners(self) -> defer.Deferred:
        """A session holding the folder hears about new mail without polling."""
        store = self.make_store()
        inbox = store.account(ADDRESS).folder("INBOX", create_inbox=True)
        heard: list[FolderChanges] = []
        inbox.add_listener(lambda folder, changes: heard.append(changes))

        async def check() -> None:
            await store.deliver(ADDRESS, b"Subject: x\r\n\r\nhi\r\n")

            self.assertEqual(1, len(heard))
            self.assertEqual([1], [m.uid for m in heard[0].added])

        return defer.ensureDeferred(check())

    def test_unsafe_addresses_are_refused(self) -> None:
        """An address whose parts would leave the store is no mailbox at all."""
        store = self.make_store()

        for address in ["../x@example.test", "a@..", "a/b@example.test", ".x@e.test", "noat"]:
            self.assertRaises(NoSuchMailbox, store.account, address)


class IdentityTests(StoreTestCase):
    def test_uids_survive_restart_flags_and_moves(self) -> defer.Deferred:
        """UIDs and UIDVALIDITY stay the same across a restart and renames."""
        store = self.make_store()

        async def check() -> None:
            await self.deliver_many(store, 5)
            inbox = store.account(ADDRESS).folder("INBOX")
            before = {m.key: m.uid for m in inbox.messages}
            validity = inbox.uidvalidity
            inbox.set_flags(inbox.messages[0], ["\\Seen"])
            inbox.set_flags(inbox.messages[1], ["\\Flagged", "\\Answered"])

            reopened = self.make_store().account(ADDRESS).folder("INBOX")

            self.assertEqual(validity, reopened.uidvalidity)
            self.assertEqual(before, {m.key: m.uid for m in reopened.messages})
            self.assertEqual("S", reopened.get(1).letters)  # type: ignore[union-attr]
            self.assertEqual("FR", reopened.get(2).letters)  # type: ignore[union-attr]

        return defer.ensureDeferred(check())

    def test_other_programs_renames_keep_identity(self) -> defer.Deferred:
        """A file moved from new/ to cur/ by mutt keeps its UID; a new file gets the next."""
        store = self.make_store()

        async def check() -> None:
            await self.deliver_many(store, 3)
            inbox = store.account(ADDRESS).folder("INBOX")
            first = inbox.messages[0]
            os.rename(
                os.path.join(inbox.path, first.filename),
                os.path.join(inbox.path, "cur", first.key + ":2,S"),
            )
            with open(os.path.join(inbox.path, "new", "1.M1P1.procmail"), "wb") as f:
                f.write(b"Subject: from procmail\n\nhi\n")

            changes = inbox.refresh(force=True)

            self.assertEqual([first], changes.flags_changed)
            self.assertEqual(1, first.uid)
            self.assertEqual([4], [m.uid for m in changes.added])
            self.assertEqual(30, inbox.wire_size(changes.added[0]))

        return defer.ensureDeferred(check())

    def test_expunged_uids_are_never_reused(self) -> defer.Deferred:
        """After the highest message is expunged and the store restarts, UIDNEXT holds."""
        store = self.make_store()

        async def check() -> None:
            await self.deliver_many(store, 3)
            inbox = store.account(ADDRESS).folder("INBOX")
            self.assertEqual([3], inbox.expunge([3]))

            reopened = self.make_store().account(ADDRESS).folder("INBOX")
            message = await reopened.append(b"Subject: new\r\n\r\n")

            self.assertEqual(4, message.uid)
            self.assertEqual([1, 2, 4], [m.uid for m in reopened.messages])

        return defer.ensureDeferred(check())

    def test_lost_uid_list_changes_uidvalidity(self) -> defer.Deferred:
        """Only when the record is truly lost does UIDVALIDITY change."""
        store = self.make_store()

        async def check() -> None:
            await self.deliver_many(store, 2)
            inbox = store.account(ADDRESS).folder("INBOX")
            with open(inbox.uidlist.path, "w") as f:
                f.write("garbage\n")

            reopened = self.make_store().account(ADDRESS).folder("INBOX")

            self.assertNotEqual(inbox.uidvalidity, reopened.uidvalidity)
            self.assertEqual([1, 2], [m.uid for m in reopened.messages])

        return defer.ensureDeferred(check())

    def test_torn_last_line_of_uid_list_is_harmless(self) -> defer.Deferred:
        """A crash mid-append leaves a partial line; the rest of the record stands."""
        store = self.make_store()

        async def check() -> None:
            await self.deliver_many(store, 2)
            inbox = store.account(ADDRESS).folder("INBOX")
            with open(inbox.uidlist.path, "a") as f:
                f.write("+3 half-writ")

            reopened = self.make_store().account(ADDRESS).folder("INBOX")

            self.assertEqual(inbox.uidvalidity, reopened.uidvalidity)
            self.assertEqual([1, 2], [m.uid for m in reopened.messages])

        return defer.ensureDeferred(check())

    def test_compaction_keeps_identities(self) -> defer.Deferred:
        """Rewriting the log after many expunges keeps the live UIDs and UIDNEXT."""
        store = self.make_store()

        async def check() -> None:
            await self.deliver_many(store, 30)
            inbox = store.account(ADDRESS).folder("INBOX")
            inbox.uidlist._rewrite()
            inbox.expunge(range(1, 21))
            inbox.uidlist._rewrite()

            reopened = self.make_store().account(ADDRESS).folder("INBOX")

            self.assertEqual(list(range(21, 31)), [m.uid for m in reopened.messages])
            self.assertEqual(31, reopened.uidnext)

        return defer.ensureDeferred(check())

    def test_arrival_order_uses_numbers_not_text(self) -> None:
        """Q10 arrives after Q9 even though it sorts before it as text."""
        names = ["100.M5P1Q10.h", "100.M5P1Q9.h", "99.M999999P1Q1.h"]

        ordered = sorted(names, key=_arrival_order)

        self.assertEqual(["99.M999999P1Q1.h", "100.M5P1Q9.h", "100.M5P1Q10.h"], ordered)

    def test_unique_names_differ_within_a_microsecond(self) -> None:
        """The per-process counter separates names made at the same instant."""
        names = UniqueNames("host/with:odd")

        made = {names.next() for _ in range(1000)}

        self.assertEqual(1000, len(made))
        self.assertFalse(any("/" in n or ":" in n for n in made))


class FlagTests(StoreTestCase):
    def test_unknown_letters_are_kept(self) -> defer.Deferred:
        """Letters set by another program survive our flag changes."""
        store = self.make_store()

        async def check() -> None:
            inbox = store.account(ADDRESS).folder("INBOX", create_inbox=True)
            message = await inbox.append(b"Subject: x\r\n\r\n", "Sa")

            inbox.set_flags(message, ["\\Flagged"])

            self.assertEqual("Fa", message.letters)
            self.assertTrue(message.filename.endswith(":2,Fa"))

        return defer.ensureDeferred(check())

    def test_flag_change_notifies_listeners(self) -> defer.Deferred:
        """Sessions sharing a folder learn of each other's flag changes."""
        store = self.make_store()

        async def check() -> None:
            inbox = store.account(ADDRESS).folder("INBOX", create_inbox=True)
            message = await inbox.append(b"Subject: x\r\n\r\n")
            heard: list[FolderChanges] = []
            inbox.add_listener(lambda folder, changes: heard.append(changes))

            inbox.set_flags(message, ["\\Seen"])

            self.assertEqual([[message]], [c.flags_changed for c in heard])

        return defer.ensureDeferred(check())

    def test_reading_an_expunged_message_raises_message_gone(self) -> defer.Deferred:
        """A message removed by another program gives MessageGone, not OSError."""
        store = self.make_store()

        async def check() -> None:
            inbox = store.account(ADDRESS).folder("INBOX", create_inbox=True)
            message = await inbox.append(b"Subject: x\r\n\r\n")
            os.unlink(os.path.join(inbox.path, message.filename))

            self.assertRaises(MessageGone, inbox.read, message)
            self.assertRaises(MessageGone, inbox.set_flags, message, ["\\Seen"])

        return defer.ensureDeferred(check())


class FolderTests(StoreTestCase):
    def test_default_folders_and_subscriptions(self) -> None:
        """First login makes Drafts, Sent, Trash and Junk, subscribed, with special use."""
        account = self.make_store().account(ADDRESS)

        account.ensure_default_folders()

        self.assertEqual(["INBOX", "Drafts", "Junk", "Sent", "Trash"], account.folder_names())
        self.assertEqual({"Drafts", "Sent", "Trash", "Junk"}, set(account.subscriptions()))
        self.assertEqual("\\Sent", account.special_use("Sent"))

    def test_create_rename_delete_with_children(self) -> None:
        """RENAME carries children along (RFC 3501 6.3.5); names with dots survive."""
        account = self.make_store().account(ADDRESS)
        account.ensure_default_folders()
        account.create_folder("Work/2024.q1")
        account.subscribe("Work/2024.q1")

        account.rename_folder("Work", "Archive")

        self.assertIn("Archive/2024.q1", account.folder_names())
        self.assertNotIn("Work", account.folder_names())
        self.assertIn("Archive/2024.q1", account.subscriptions())
        account.delete_folder("Archive/2024.q1")
        self.assertNotIn("Archive/2024.q1", account.folder_names())

    def test_folder_errors(self) -> None:
        """Existing, missing, INBOX and unusable names give store errors."""
        account = self.make_store().account(ADDRESS)
        account.ensure_default_folders()

        self.assertRaises(MailboxExists, account.create_folder, "Sent")
        self.assertRaises(MailboxExists, account.create_folder, "inbox")
        self.assertRaises(NoSuchMailbox, account.folder, "Nope")
        self.assertRaises(NoSuchMailbox, account.delete_folder, "Nope")
        self.assertRaises(MailboxNotEmpty, account.delete_folder, "INBOX")
        for bad in ["", "a//b", "/x", "x/", "tab\there"]:
            self.assertRaises(InvalidMailboxName, account.create_folder, bad)

    def test_names_never_escape_the_account(self) -> None:
        """Dots and slashes in names stay inside the user's directory."""
        account = self.make_store().account(ADDRESS)

        for name in ["..", "../../etc", "a/../..", ".", "x/./y", "INBOX/.."]:
            self.assertRaises(InvalidMailboxName, account.create_folder, name)
        account.create_folder("a..b/.hidden")

        self.assertEqual(["example.test"], os.listdir(self.root))
        self.assertEqual(["alice"], os.listdir(os.path.join(self.root, "example.test")))
        for entry in os.listdir(account.path):
            self.assertFalse(os.path.islink(os.path.join(account.path, entry)))
        self.assertIn("a..b/.hidden", account.folder_names())

    def test_rename_inbox_moves_messages_and_keeps_inbox(self) -> defer.Deferred:
        """RENAME INBOX moves its messages to the new folder and leaves INBOX empty."""
        store = self.make_store()

        async def check() -> None:
            await self.deliver_many(store, 3)
            account = store.account(ADDRESS)

            account.rename_folder("INBOX", "Old")

            self.assertEqual([], account.folder("INBOX").messages)
            self.assertEqual(3, len(account.folder("Old").messages))

        return defer.ensureDeferred(check())

    def test_copy_keeps_flags_and_date(self) -> defer.Deferred:
        """COPY gives new UIDs in the target with the same flags and arrival time."""
        store = self.make_store()

        async def check() -> None:
            account = store.account(ADDRESS)
            account.ensure_default_folders()
            inbox = account.folder("INBOX")
            original = await inbox.append(b"Subject: x\r\n\r\n", "S", internaldate=1_000_000_000)
            sent = account.folder("Sent")

            copies = await inbox.copy_to([original], sent)

            self.assertEqual([1], [m.uid for m in copies])
            self.assertEqual("S", copies[0].letters)
            self.assertEqual(1_000_000_000, sent.internaldate(copies[0]))

        return defer.ensureDeferred(check())


class CrlfTests(unittest.TestCase):
    def test_to_crlf(self) -> None:
        """Bare LF and bare CR become CRLF; CRLF stays; the fast path returns the same object."""
        data = b"a\r\nb\r\n"

        self.assertIs(data, to_crlf(data))
        self.assertEqual(b"a\r\nb\r\nc\r\nd", to_crlf(b"a\nb\rc\r\nd"))


class ExpungeTests(StoreTestCase):
    def test_expunge_finds_a_file_renamed_by_another_program(self) -> defer.Deferred:
        """A message mutt flagged meanwhile is still removed, not resurrected under a new UID."""
        store = self.make_store()

        async def check() -> None:
            await self.deliver_many(store, 2)
            inbox = store.account(ADDRESS).folder("INBOX")
            first = inbox.messages[0]
            os.rename(
                os.path.join(inbox.path, first.filename),
                os.path.join(inbox.path, "cur", first.key + ":2,S"),
            )

            self.assertEqual([1], inbox.expunge([1]))

            inbox.refresh(force=True)
            self.assertEqual([2], [m.uid for m in inbox.messages])
            reopened = self.make_store().account(ADDRESS).folder("INBOX")
            self.assertEqual([2], [m.uid for m in reopened.messages])

        return defer.ensureDeferred(check())

    def test_disk_error_mid_expunge_keeps_state_consistent(self) -> defer.Deferred:
        """An I/O error on the second unlink is temporary; the first removal is recorded."""
        store = self.make_store()

        async def check() -> None:
            await self.deliver_many(store, 3)
            inbox = store.account(ADDRESS).folder("INBOX")
            doomed = inbox.messages[1].filename
            real_unlink = os.unlink

            def unlink(path: str) -> None:
                if path.endswith(doomed):
                    raise OSError(5, "Input/output error")
                real_unlink(path)

            self.patch(os, "unlink", unlink)

            with self.assertRaises(TemporaryFailure):
                inbox.expunge([1, 2, 3])

            self.assertEqual([2, 3], [m.uid for m in inbox.messages])
            self.assertIsNone(inbox.get(1))
            self.assertIsNotNone(inbox.get(2))

        return defer.ensureDeferred(check())
