"""Tests for ``mailsuite.users``: the password file and the login checker."""

from __future__ import annotations

import os
import stat
from typing import Any

from passlib.context import CryptContext
from passlib.hash import bcrypt, sha512_crypt
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from mailsuite import durable
from mailsuite.maillog import MailLog
from mailsuite.users import (
    PASSWORDS,
    PasswordChecker,
    SessionCredentials,
    UserDatabase,
    UserError,
)


def run_now(function: Any, *args: Any) -> defer.Deferred[Any]:
    """Stands in for the thread pool: runs the blocking check at once."""
    return defer.maybeDeferred(function, *args)


def capture_events(testcase: TestCase) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    testcase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class RecordingContext:
    """A CryptContext that remembers which hashes it was asked to verify."""

    def __init__(self, context: CryptContext = PASSWORDS) -> None:
        self.context = context
        self.verified: list[str] = []

    def verify(self, secret: Any, hashed: str) -> bool:
        self.verified.append(hashed)
        return bool(self.context.verify(secret, hashed))

    def verify_and_update(self, secret: Any, hashed: str) -> tuple[bool, str | None]:
        self.verified.append(hashed)
        result: tuple[bool, str | None] = self.context.verify_and_update(secret, hashed)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.context, name)


class DatabaseTestMixin:
    def new_db(self, **kwargs: Any) -> UserDatabase:
        folder = self.mktemp()  # type: ignore[attr-defined]
        return UserDatabase(os.path.join(folder, "users"), **kwargs)

    def read(self, db: UserDatabase) -> str:
        with open(db.path) as f:
            return f.read()


class UserDatabaseTests(DatabaseTestMixin, TestCase):
    """Adding, finding, changing and removing users in the file."""

    def test_missing_file_is_empty(self) -> None:
        """A server started before any user was added has no users, and no error."""
        db = self.new_db()

        self.assertEqual([], db.addresses())
        self.assertFalse(db.exists("alice@example.com"))

    def test_add_stores_argon2_and_lowercase_domain(self) -> None:
        """New users get an argon2 hash; the domain is lowercased, the local part kept."""
        db = self.new_db()

        stored = db.add("Alice@Example.COM", "secret")

        self.assertEqual("Alice@example.com", stored)
        line = self.read(db)
        self.assertTrue(line.startswith("Alice@example.com:$argon2"))
        self.assertTrue(line.endswith("\n"))

    def test_canonical_ignores_case_keeps_spelling(self) -> None:
        """Any spelling finds the user, and the stored spelling comes back."""
        db = self.new_db()
        db.add("Alice@example.com", "secret")

        self.assertEqual("Alice@example.com", db.canonical("ALICE@EXAMPLE.COM"))
        self.assertTrue(db.exists("alice@example.com"))
        self.assertIsNone(db.canonical("bob@example.com"))

    def test_add_duplicate_refused(self) -> None:
        """An address already present, in any case, cannot be added twice."""
        db = self.new_db()
        db.add("alice@example.com", "secret")

        self.assertRaises(UserError, db.add, "ALICE@example.com", "other")

        self.assertEqual(["alice@example.com"], db.addresses())

    def test_add_refuses_unusable_addresses(self) -> None:
        """Addresses the store could not make a folder for never reach the file."""
        db = self.new_db()

        for bad in ("alice", "@example.com", "alice@", "a b@example.com", "a/b@example.com",
                    ".hidden@example.com", "a:b@example.com"):  # fmt: skip
            self.assertRaises(UserError, db.add, bad, "secret")

        self.assertEqual([], db.addresses())

    def test_set_password(self) -> None:
        """A new password replaces the old one; the old one stops working."""
        db = self.new_db()
        db.add("alice@example.com", "old")

        db.set_password("ALICE@example.com", "new")

        entry = db.lookup("alice@example.com")
        assert entry is not None
        self.assertTrue(PASSWORDS.verify("new", entry[1]))
        self.assertFalse(PASSWORDS.verify("old", entry[1]))

    def test_delete(self) -> None:
        """A deleted user is gone from the file; others stay in order."""
        db = self.new_db()
        for address in ("a@example.com", "b@example.com", "c@example.com"):
            db.add(address, "secret")

        db.delete("B@example.com")

        self.assertEqual(["a@example.com", "c@example.com"], db.addresses())

    def test_unknown_user_changes_refused(self) -> None:
        """Changing or deleting someone not in the file is an error, not a silent no-op."""
        db = self.new_db()
        db.add("alice@example.com", "secret")

        self.assertRaises(UserError, db.set_password, "bob@example.com", "x")
        self.assertRaises(UserError, db.delete, "bob@example.com")

    def test_file_mode_0600(self) -> None:
        """Password hashes are readable by the server's user only."""
        db = self.new_db()

        db.add("alice@example.com", "secret")

        self.assertEqual(0o600, stat.S_IMODE(os.stat(db.path).st_mode))

    def test_write_is_atomic(self) -> None:
        """A write that fails before the rename leaves the old file whole and in use."""
        db = self.new_db()
        db.add("alice@example.com", "secret")
        before = self.read(db)

        def broken_rename(source: str, target: str) -> None:
            raise OSError(28, "No space left on device")

        self.patch(durable.DISK, "rename", broken_rename)
        self.assertRaises(OSError, db.add, "bob@example.com", "secret")

        self.assertEqual(before, self.read(db))
        self.assertEqual(["alice@example.com"], db.addresses())

    def test_comments_and_bad_lines_survive_writes(self) -> None:
        """Lines we do not understand are the operator's: a write keeps them as they were."""
        db = self.new_db()
        db.add("alice@example.com", "secret")
        with open(db.path, "a") as f:
            f.write("# a comment\n\nno hash here\n")

        db.add("bob@example.com", "secret")

        lines = self.read(db).splitlines()
        self.assertEqual(["# a comment", "", "no hash here"], lines[1:4])
        self.assertEqual(["alice@example.com", "bob@example.com"], db.addresses())

    def test_malformed_lines_skipped_with_warning(self) -> None:
        """A malformed line is skipped with a warning naming its line, not a crash."""
        events = capture_events(self)
        db = self.new_db()
        os.makedirs(os.path.dirname(db.path))
        hashed = PASSWORDS.hash("secret")
        with open(db.path, "w") as f:
            f.write(
                f"# users\nnot a user line\nbob@example.com:nonsense\nalice@example.com:{hashed}\n"
            )

        self.assertEqual(["alice@example.com"], db.addresses())

        warnings = [e for e in events if e.get("log_level") == LogLevel.warn and "line" in e]
        self.assertEqual([2, 3], [e["line"] for e in warnings])
        self.assertIn("line 2", formatEvent(warnings[0]))

    def test_duplicate_line_warned(self) -> None:
        """An address listed twice logs in with its first line only, with a warning."""
        events = capture_events(self)
        db = self.new_db()
        os.makedirs(os.path.dirname(db.path))
        first, second = PASSWORDS.hash("one"), PASSWORDS.hash("two")
        with open(db.path, "w") as f:
            f.write(f"alice@example.com:{first}\nALICE@example.com:{second}\n")

        self.assertEqual(("alice@example.com", first), db.lookup("Alice@example.com"))
        self.assertEqual(["alice@example.com"], db.addresses())

        warnings = [e for e in events if e.get("log_level") == LogLevel.warn and "line" in e]
        self.assertEqual([2], [e["line"] for e in warnings])

    def test_reload_when_file_changes(self) -> None:
        """A user added by another process (``mailsuite user add``) is seen without restart."""
        server = self.new_db()
        server.add("alice@example.com", "secret")
        self.assertFalse(server.exists("bob@example.com"))

        UserDatabase(server.path).add("bob@example.com", "secret")

        self.assertTrue(server.exists("bob@example.com"))

    def test_reload_when_only_inode_changes(self) -> None:
        """A replacement with the same size and mtime is still noticed, by its inode."""
        db = self.new_db()
        db.add("alice@example.com", "secret")
        self.assertTrue(db.exists("alice@example.com"))
        st = os.stat(db.path)
        other = self.read(db).replace("alice@", "carol@")

        durable.replace_file(db.path, other.encode())
        os.utime(db.path, ns=(st.st_atime_ns, st.st_mtime_ns))

        self.assertEqual(["carol@example.com"], db.addresses())

    def test_replace_hash_respects_concurrent_change(self) -> None:
        """A login-time upgrade does not overwrite a password changed meanwhile."""
        db = self.new_db()
        db.add("alice@example.com", "old")
        entry = db.lookup("alice@example.com")
        assert entry is not None
        db.set_password("alice@example.com", "new")

        replaced = db.replace_hash("alice@example.com", entry[1], PASSWORDS.hash("old"))

        self.assertFalse(replaced)
        current = db.lookup("alice@example.com")
        assert current is not None
        self.assertTrue(PASSWORDS.verify("new", current[1]))


class PasswordCheckerTests(DatabaseTestMixin, TestCase):
    """Logging in: the canonical address on success, a slow refusal otherwise."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.context = RecordingContext()
        self.db = self.new_db(context=self.context)
        self.db.add("Alice@example.com", "secret")
        self.checker = PasswordChecker(self.db, self.clock, 2.0, MailLog(), run_in_thread=run_now)

    def login(self, username: bytes | str, password: bytes | str) -> defer.Deferred[Any]:
        return self.checker.requestAvatarId(UsernamePassword(username, password))

    def assertRefusedAfterDelay(self, d: defer.Deferred[Any]) -> None:
        self.assertNoResult(d)
        self.clock.advance(1.999)
        self.assertNoResult(d)

        self.clock.advance(0.001)

        self.failureResultOf(d, UnauthorizedLogin)

    def test_success_gives_canonical_address(self) -> None:
        """Any spelling of the address logs in, and the avatar id is the stored spelling."""
        d = self.login(b"ALICE@EXAMPLE.COM", b"secret")

        self.assertEqual("Alice@example.com", self.successResultOf(d))

    def test_text_credentials(self) -> None:
        """Usernames and passwords given as str work as well as bytes."""
        d = self.login("alice@example.com", "secret")

        self.assertEqual("Alice@example.com", self.successResultOf(d))

    def test_wrong_password_refused_after_delay(self) -> None:
        """A wrong password fails with UnauthorizedLogin, and not before failure_delay."""
        self.assertRefusedAfterDelay(self.login(b"alice@example.com", b"wrong"))

    def test_unknown_user_refused_after_delay(self) -> None:
        """An unknown user is refused exactly like a wrong password."""
        self.assertRefusedAfterDelay(self.login(b"nobody@example.com", b"secret"))

    def test_unknown_user_verifies_dummy_hash(self) -> None:
        """An unknown user costs one hash verification too, so timing does not tell."""
        self.login(b"nobody@example.com", b"secret")

        self.assertEqual(1, len(self.context.verified))
        self.assertTrue(self.context.verified[0].startswith("$argon2"))

    def test_username_without_at_refused(self) -> None:
        """A bare local part is not a username here, even if it matches a user."""
        self.assertRefusedAfterDelay(self.login(b"Alice", b"secret"))

    def test_non_utf8_username_refused(self) -> None:
        """A username that is not UTF-8 is refused, not an exception."""
        self.assertRefusedAfterDelay(self.login(b"\xffalice@example.com", b"secret"))

    def test_zero_delay(self) -> None:
        """With failure_delay 0 the refusal comes on the next reactor turn."""
        checker = PasswordChecker(self.db, self.clock, 0, MailLog(), run_in_thread=run_now)
        d = checker.requestAvatarId(UsernamePassword(b"alice@example.com", b"wrong"))

        self.clock.advance(0)

        self.failureResultOf(d, UnauthorizedLogin)

    def test_failure_logged_without_password(self) -> None:
        """auth_failed names the user, protocol and session, never the password."""
        events = capture_events(self)
        credentials = SessionCredentials(b"alice@example.com", b"hunter2-secret", "imap", "s42")

        self.checker.requestAvatarId(credentials)

        failed = [e for e in events if e.get("mail_event") == "auth_failed"]
        self.assertEqual(1, len(failed))
        self.assertEqual(
            ("imap", "s42", "alice@example.com"),
            (failed[0]["protocol"], failed[0]["session"], failed[0]["username"]),
        )
        for event in events:
            self.assertNotIn("hunter2", formatEvent(event))
            self.assertNotIn("hunter2", repr(event))

    def test_success_not_logged_as_failure(self) -> None:
        """A good login writes no auth_failed event."""
        events = capture_events(self)

        self.login(b"alice@example.com", b"secret")

        self.assertEqual([], [e for e in events if e.get("mail_event") == "auth_failed"])

    def test_unreadable_file_is_an_error_not_a_refusal(self) -> None:
        """A file we cannot read fails at once with the error, for a "try later" reply."""
        os.unlink(self.db.path)
        os.mkdir(self.db.path)

        d = self.login(b"alice@example.com", b"secret")

        self.failureResultOf(d, IsADirectoryError)

    def test_runs_in_reactor_thread_pool(self) -> None:
        """Without an injected runner, the check runs in the reactor's thread pool."""
        calls: list[str] = []

        class Pool:
            def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any) -> None:
                calls.append("pool")
                on_result(True, f(*args))

        class Reactor(task.Clock):
            def getThreadPool(self) -> Pool:
                return Pool()

            def callFromThread(self, f: Any, *args: Any) -> None:
                f(*args)

        checker = PasswordChecker(self.db, Reactor(), 2.0, MailLog())
        d = checker.requestAvatarId(UsernamePassword(b"alice@example.com", b"secret"))

        self.assertEqual("Alice@example.com", self.successResultOf(d))
        self.assertEqual(["pool"], calls)


class UpgradeTests(DatabaseTestMixin, TestCase):
    """Hashes imported from other servers still work and become argon2 on login."""

    def login_with_hash(self, hashed: str, password: bytes) -> tuple[Any, str]:
        db = self.new_db()
        os.makedirs(os.path.dirname(db.path))
        with open(db.path, "w") as f:
            f.write(f"alice@example.com:{hashed}\n")
        clock = task.Clock()
        checker = PasswordChecker(db, clock, 0, MailLog(), run_in_thread=run_now)

        d = checker.requestAvatarId(UsernamePassword(b"alice@example.com", password))
        clock.advance(0)

        result: list[Any] = []
        d.addBoth(result.append)
        return result[0], self.read(db)

    def test_bcrypt_upgraded(self) -> None:
        """A bcrypt hash logs in, and the file then holds an argon2 hash that verifies."""
        result, text = self.login_with_hash(bcrypt.using(rounds=4).hash("secret"), b"secret")

        self.assertEqual("alice@example.com", result)
        self.assertTrue(text.startswith("alice@example.com:$argon2"))
        self.assertTrue(PASSWORDS.verify("secret", text.strip().rpartition(":")[2]))

    def test_sha512_crypt_upgraded(self) -> None:
        """A SHA-512-crypt hash logs in and is replaced by argon2."""
        result, text = self.login_with_hash(
            sha512_crypt.using(rounds=1000).hash("secret"), b"secret"
        )

        self.assertEqual("alice@example.com", result)
        self.assertTrue(text.startswith("alice@example.com:$argon2"))

    def test_failed_upgrade_still_logs_in(self) -> None:
        """If the upgraded hash cannot be written, the user still gets in on the old one."""

        def broken_rename(source: str, target: str) -> None:
            raise OSError(28, "No space left on device")

        self.patch(durable.DISK, "rename", broken_rename)
        hashed = bcrypt.using(rounds=4).hash("secret")

        result, text = self.login_with_hash(hashed, b"secret")

        self.assertEqual("alice@example.com", result)
        self.assertEqual(f"alice@example.com:{hashed}\n", text)
        self.assertEqual(1, len(self.flushLoggedErrors(OSError)))

    def test_wrong_password_keeps_old_hash(self) -> None:
        """Only a successful login upgrades; a wrong guess leaves the file alone."""
        hashed = bcrypt.using(rounds=4).hash("secret")

        result, text = self.login_with_hash(hashed, b"wrong")

        self.assertIsInstance(result, Failure)
        self.assertEqual(f"alice@example.com:{hashed}\n", text)
