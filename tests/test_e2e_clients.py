"""Real mail clients against the real suite: mbsync, mutt, fetchmail, swaks, curl.

Each test starts the suite in-process on loopback (``tests/support.py``) and
runs the Debian-packaged client as a subprocess in a thread, with its own
HOME and a config that trusts only the suite's generated certificate. A test
is skipped, saying which program is missing, when its client is not
installed (``apt-get install isync mutt tmux fetchmail swaks curl``).

The clients connect to ``localhost``: fetchmail and mbsync check the
certificate's DNS name, not its IP address entries.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from typing import Any

from twisted.internet import threads
from twisted.trial import unittest

from tests.support import RunningSuite, start_suite

ADDRESS = "alice@example.com"
PASSWORD = "client s3cret"
HOST = "localhost"
RUN_TIMEOUT = 20


def message(subject: str, sender: str = "bob@example.net") -> bytes:
    return (
        f"From: {sender}\r\nTo: {ADDRESS}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 2 Jan 2023 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@t>\r\n"
        f"\r\nBody of {subject}\r\n"
    ).encode()


#: The Debian package of each client program.
PACKAGES = {"mbsync": "isync"}


def require(*programs: str) -> None:
    """Skip the test, naming what to install, unless every program is on PATH."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        packages = " ".join(PACKAGES.get(p, p) for p in missing)
        raise unittest.SkipTest(f"{', '.join(missing)} not on PATH (apt-get install {packages})")


class ClientTestCase(unittest.TestCase):
    """The suite with one user and a scratch HOME for the client's files."""

    async def started(self) -> RunningSuite:
        self.suite = await start_suite(self)
        self.suite.add_user(ADDRESS, PASSWORD)
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)
        return self.suite

    def write(self, name: str, text: str, mode: int = 0o600) -> str:
        path = os.path.join(self.home, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    async def run_client(
        self, *argv: str, stdin: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a client in a thread (the reactor keeps serving it), HOME = scratch."""
        env = {**os.environ, "HOME": self.home, "LC_ALL": "C.UTF-8"}

        def run() -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                argv, input=stdin, capture_output=True, env=env, timeout=RUN_TIMEOUT
            )

        result: subprocess.CompletedProcess[bytes] = await threads.deferToThread(run)
        return result

    async def deliver(self, *subjects: str) -> None:
        for subject in subjects:
            await self.suite.context.store.deliver(ADDRESS, message(subject))

    def folder(self, name: str = "INBOX") -> Any:
        folder = self.suite.context.store.account(ADDRESS).folder(name)
        folder.refresh(force=True)
        return folder

    def subjects(self, name: str = "INBOX") -> list[str]:
        folder = self.folder(name)
        found = []
        for m in folder.messages:
            for line in folder.read(m).split(b"\r\n"):
                if line.startswith(b"Subject: "):
                    found.append(line[9:].decode())
        return found

    def assert_ran(
        self, result: subprocess.CompletedProcess[bytes], ok: tuple[int, ...] = (0,)
    ) -> None:
        self.assertIn(result.returncode, ok, (result.stdout[-2000:], result.stderr[-2000:]))


class MbsyncTests(ClientTestCase):
    """Issue 3: mbsync syncs a mailbox both ways over IMAPS."""

    def setUp(self) -> None:
        require("mbsync")

    def config(self) -> str:
        local = os.path.join(self.home, "mail")
        os.makedirs(local, exist_ok=True)  # mbsync creates folders, not the store
        return self.write(
            "mbsyncrc",
            f"IMAPAccount suite\nHost {HOST}\nPort {self.suite.port('imaps')}\n"
            f'User {ADDRESS}\nPass "{PASSWORD}"\nSSLType IMAPS\n'
            f"CertificateFile {self.suite.cert_path}\n\n"
            "IMAPStore suite-remote\nAccount suite\n\n"
            f"MaildirStore suite-local\nPath {local}/\nInbox {local}/INBOX\n"
            "SubFolders Verbatim\n\n"
            "Channel suite\nFar :suite-remote:\nNear :suite-local:\nPatterns *\n"
            "Create Both\nExpunge Both\nSyncState *\n",
        )

    def local(self, pattern: str) -> list[str]:
        return sorted(glob.glob(os.path.join(self.home, "mail", pattern)))

    def snapshot(self) -> list[str]:
        return sorted(
            os.path.relpath(os.path.join(d, f), self.home)
            for d, _, files in os.walk(os.path.join(self.home, "mail"))
            for f in files
        )

    async def test_two_way_sync_then_a_sync_with_nothing_to_do(self) -> None:
        """New mail, flags and deletions flow both ways; a repeat sync transfers nothing."""
        await self.started()
        await self.deliver("first", "second")
        rc = self.config()

        self.assert_ran(await self.run_client("mbsync", "-c", rc, "suite"))
        self.assertEqual(2, len(self.local("INBOX/*/*")))

        first, second = self.local("INBOX/new/*")
        os.rename(
            first,
            os.path.join(os.path.dirname(first), "..", "cur", os.path.basename(first) + "FS"),
        )
        os.rename(
            second,
            os.path.join(os.path.dirname(second), "..", "cur", os.path.basename(second) + "T"),
        )
        os.makedirs(os.path.join(self.home, "mail", "Sent", "cur"), exist_ok=True)
        with open(os.path.join(self.home, "mail", "Sent", "cur", "1.local:2,S"), "wb") as f:
            f.write(message("written offline", sender=ADDRESS).replace(b"\r\n", b"\n"))
        await self.deliver("third")

        self.assert_ran(await self.run_client("mbsync", "-c", rc, "suite"))

        inbox = self.folder()
        self.assertEqual(["first", "third"], self.subjects())
        self.assertEqual({"\\Flagged", "\\Seen"}, set(inbox.messages[0].flags))
        self.assertEqual(["written offline"], self.subjects("Sent"))
        self.assertEqual(2, len(self.local("INBOX/*/*")))

        before, uidnext = self.snapshot(), inbox.uidnext
        result = await self.run_client("mbsync", "-Dn", "-c", rc, "suite")

        self.assert_ran(result)
        sent = [line for line in result.stdout.splitlines() if line.startswith(b">>> ")]
        self.assertTrue([line for line in sent if b"SELECT" in line], result.stdout[-2000:])
        for verb in (b"APPEND", b"STORE", b"EXPUNGE", b"BODY.PEEK[]"):
            self.assertEqual([], [line for line in sent if verb in line])
        self.assertEqual(before, self.snapshot())
        self.assertEqual(uidnext, self.folder().uidnext)


class MuttTests(ClientTestCase):
    """Issue 3: mutt reads a mailbox over IMAPS (through tmux) and sends in batch mode."""

    def setUp(self) -> None:
        require("mutt")

    def muttrc(self) -> str:
        return self.write(
            "muttrc",
            f'set folder="imaps://alice%40example.com@{HOST}:{self.suite.port("imaps")}/"\n'
            f'set spoolfile="+INBOX"\nset imap_pass="{PASSWORD}"\n'
            f'set ssl_ca_certificates_file="{self.suite.cert_path}"\n'
            f'set certificate_file="{self.home}/certs"\nset ssl_force_tls=yes\n'
            'set header_cache=""\nset message_cachedir=""\nset sort=date\n'
            'set index_format="IDX %4C %s"\nset move=no\nset mark_old=no\n'
            "set wait_key=no\nset pager_stop=yes\nset imap_check_subscribed=no\n",
        )

    async def test_reads_the_inbox_over_imaps(self) -> None:
        """mutt lists the INBOX, shows a message's body, and marks it seen on the server."""
        require("tmux")  # mutt reads only at a terminal; tmux is that terminal
        await self.started()
        await self.deliver("mutt one", "mutt two")
        rc = self.muttrc()
        socket_name = f"mailsuite-test-{os.getpid()}-{id(self)}"
        tmux = ["tmux", "-L", socket_name]
        self.addCleanup(subprocess.run, [*tmux, "kill-server"], capture_output=True)

        def drive() -> tuple[str, str]:
            subprocess.run(
                [
                    *tmux,
                    "-f",
                    "/dev/null",
                    "new-session",
                    "-d",
                    "-x",
                    "160",
                    "-y",
                    "40",
                    "env",
                    f"HOME={self.home}",
                    "mutt",
                    "-n",
                    "-F",
                    rc,
                ],
                check=True,
                timeout=RUN_TIMEOUT,
            )
            index = wait_for_screen(tmux, "mutt two")
            send_keys(tmux, "1", "Enter", "Enter")
            pager = wait_for_screen(tmux, "Body of mutt one")
            send_keys(tmux, "q", "q")
            return index, pager

        index, pager = await threads.deferToThread(drive)
        self.assertIn("IDX    1 mutt one", index)
        self.assertIn("Subject: mutt one", pager)

        await self.wait_until_seen()
        self.assertEqual(["\\Seen"], list(self.folder().messages[0].flags))

    async def test_sends_in_batch_mode_over_submissions_and_starttls(self) -> None:
        """``mutt -s`` with ``smtp_url`` sends over port 465-style TLS and over STARTTLS."""
        suite = await self.started()
        rc = self.muttrc()
        for scheme, listener in (("smtps", "submissions"), ("smtp", "submission")):
            url = f"{scheme}://alice%40example.com@{HOST}:{suite.port(listener)}/"
            with open(rc, "a", encoding="utf-8") as f:
                f.write(f'set smtp_url="{url}"\nset smtp_pass="{PASSWORD}"\n')
                f.write(f'set from="{ADDRESS}"\nset record=""\n')

            result = await self.run_client(
                "mutt",
                "-n",
                "-F",
                rc,
                "-s",
                f"mutt via {listener}",
                "--",
                ADDRESS,
                stdin=b"sent by mutt\n",
            )

            self.assert_ran(result)
        self.assertEqual(["mutt via submissions", "mutt via submission"], self.subjects())

    async def wait_until_seen(self) -> None:
        """mutt stores \\Seen when it leaves the mailbox; wait for that session."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while "\\Seen" not in self.folder().messages[0].flags and time.monotonic() < deadline:
            await threads.deferToThread(time.sleep, 0.1)


def send_keys(tmux: list[str], *keys: str) -> None:
    subprocess.run([*tmux, "send-keys", "-t", "0", *keys], check=True, timeout=RUN_TIMEOUT)


def wait_for_screen(tmux: list[str], text: str) -> str:
    """The tmux pane's text once it shows ``text`` (an interactive client, so we poll)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    screen = ""
    while time.monotonic() < deadline:
        screen = subprocess.run(
            [*tmux, "capture-pane", "-p", "-t", "0"], capture_output=True, timeout=RUN_TIMEOUT
        ).stdout.decode(errors="replace")
        if text in screen:
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared on mutt's screen:\n{screen}")


class FetchmailTests(ClientTestCase):
    """fetchmail --keep, as a family's cron job runs it."""

    def setUp(self) -> None:
        require("fetchmail")

    def rc(self, name: str, port: int, security: str) -> str:
        out = os.path.join(self.home, name)
        os.makedirs(out)
        return self.write(
            f"{name}.rc",
            f"set no syslog\npoll {HOST} with proto POP3 port {port} uidl\n"
            f'  user "{ADDRESS}" there with password "{PASSWORD}" is "x" here\n'
            f"  {security} sslcertck sslcertfile {self.suite.cert_path} keep\n"
            f"  mda \"/bin/sh -c 'cat > {out}/msg.$$$$'\"\n",
        )

    async def fetch_twice(self, name: str, port: int, security: str) -> None:
        rc, ids = self.rc(name, port, security), os.path.join(self.home, f"{name}.ids")
        argv = ("fetchmail", "--keep", "-f", rc, "-i", ids, "--nosyslog")

        self.assert_ran(await self.run_client(*argv))
        fetched = sorted(glob.glob(os.path.join(self.home, name, "msg.*")))
        again = await self.run_client(*argv)

        self.assertEqual(2, len(fetched))
        bodies = set()
        for path in fetched:
            with open(path, "rb") as f:
                bodies.add(f.read().split(b"\n\n", 1)[1])
        self.assertEqual({b"Body of pop one\n", b"Body of pop two\n"}, bodies)
        self.assert_ran(again, ok=(1,))  # 1: no new mail
        self.assertEqual(fetched, sorted(glob.glob(os.path.join(self.home, name, "msg.*"))))
        self.assertEqual(2, len(self.folder().messages))

    async def test_keep_over_stls_twice(self) -> None:
        """Over pop3 with STLS: everything once, nothing the second time, nothing deleted."""
        await self.started()
        await self.deliver("pop one", "pop two")
        await self.fetch_twice("stls", self.suite.port("pop3"), "sslproto tls1.2+")

    async def test_keep_over_pop3s_twice(self) -> None:
        """Over pop3s: everything once, nothing the second time, nothing deleted."""
        await self.started()
        await self.deliver("pop one", "pop two")
        await self.fetch_twice("pop3s", self.suite.port("pop3s"), "ssl")


class SwaksTests(ClientTestCase):
    """swaks, the SMTP test tool, as a user and as a stranger."""

    def setUp(self) -> None:
        require("swaks")

    async def test_submission_with_starttls_and_auth(self) -> None:
        """swaks --tls --auth on submission delivers to the user's own INBOX."""
        suite = await self.started()

        result = await self.run_client(
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(suite.port("submission")),
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            suite.cert_path,
            "--tls-sni",
            HOST,
            "--auth",
            "PLAIN",
            "--auth-user",
            ADDRESS,
            "--auth-password",
            PASSWORD,
            "--from",
            ADDRESS,
            "--to",
            ADDRESS,
            "--header",
            "Subject: swaks submission",
        )

        self.assert_ran(result)
        self.assertEqual(["swaks submission"], self.subjects())

    async def test_mx_from_a_stranger(self) -> None:
        """swaks to the MX without TLS or AUTH delivers to a local user."""
        suite = await self.started()

        result = await self.run_client(
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(suite.port("smtp")),
            "--from",
            "stranger@example.net",
            "--to",
            ADDRESS,
            "--header",
            "Subject: swaks mx",
        )

        self.assert_ran(result)
        self.assertEqual(["swaks mx"], self.subjects())


class CurlTests(ClientTestCase):
    """curl's IMAP, POP3 and SMTP support, TLS required."""

    def setUp(self) -> None:
        require("curl")

    def curl(self, url: str, *extra: str) -> tuple[str, ...]:
        return (
            "curl",
            "-sS",
            "--max-time",
            str(RUN_TIMEOUT),
            "--cacert",
            self.suite.cert_path,
            "-u",
            f"{ADDRESS}:{PASSWORD}",
            *extra,
            url,
        )

    async def test_imaps_list_and_fetch_by_uid(self) -> None:
        """imaps://: LIST shows the folders, ;UID=2 fetches exactly that message."""
        suite = await self.started()
        await self.deliver("curl one", "curl two")
        base = f"imaps://127.0.0.1:{suite.port('imaps')}"

        listing = await self.run_client(*self.curl(f"{base}/"))
        fetched = await self.run_client(*self.curl(f"{base}/INBOX;UID=2"))
        starttls = await self.run_client(
            *self.curl(f"imap://127.0.0.1:{suite.port('imap')}/INBOX;UID=1", "--ssl-reqd")
        )

        for result in (listing, fetched, starttls):
            self.assert_ran(result)
        self.assertIn(b'* LIST (\\HasNoChildren) "/" INBOX', listing.stdout)
        self.assertIn(b'\\Sent) "/" Sent', listing.stdout)
        self.assertEqual(message("curl two"), fetched.stdout)
        self.assertEqual(message("curl one"), starttls.stdout)

    async def test_pop3s_and_pop3_with_stls(self) -> None:
        """pop3s:// lists sizes and retrieves; pop3:// --ssl-reqd upgrades with STLS."""
        suite = await self.started()
        await self.deliver("curl pop")

        listing = await self.run_client(*self.curl(f"pop3s://127.0.0.1:{suite.port('pop3s')}/"))
        retrieved = await self.run_client(
            *self.curl(f"pop3://127.0.0.1:{suite.port('pop3')}/1", "--ssl-reqd")
        )

        self.assert_ran(listing)
        self.assert_ran(retrieved)
        self.assertEqual(f"1 {len(message('curl pop'))}\r\n".encode(), listing.stdout)
        self.assertEqual(message("curl pop"), retrieved.stdout)

    async def test_smtp_submission_requires_and_gets_tls(self) -> None:
        """smtp:// --ssl-reqd submits with STARTTLS and AUTH; the user gets the message."""
        suite = await self.started()
        mail = self.write("mail.eml", message("curl smtp", sender=ADDRESS).decode())

        result = await self.run_client(
            *self.curl(
                f"smtp://127.0.0.1:{suite.port('submission')}",
                "--ssl-reqd",
                "--mail-from",
                ADDRESS,
                "--mail-rcpt",
                ADDRESS,
                "-T",
                mail,
            )
        )

        self.assert_ran(result)
        self.assertEqual(["curl smtp"], self.subjects())
