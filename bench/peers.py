"""The peers mailsuite is measured against, each a private instance.

Postfix, aiosmtpd and Dovecot run on loopback high ports, with every
config, queue, state, log and mail file inside the benchmark's temporary
folder: the machine's own configuration (/etc/postfix, /etc/dovecot) and
any system instance are left alone. Each peer raises ``Skipped`` with a
reason when it is not installed, so a benchmark runs with what is there.

Postfix and Dovecot deliver and read mail as ``nobody`` (they refuse to do
it as root); the mail folders they use are given to that user.

``python -m bench.peers`` starts them all and waits for Ctrl-C, to try one
by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import subprocess
import time
from collections.abc import Iterator, Mapping
from typing import Any

from bench.common import (
    BENCH_DOMAIN,
    BENCH_PASSWORD,
    DEFAULT_SHARED,
    LOOPBACK,
    BenchError,
    Generators,
    Skipped,
    chown_tree,
    free_port,
    pid_alive,
    run_main,
    say,
    start_process,
    stop_process,
    tail,
    wait_for_ports,
    workspace,
)

#: The unprivileged user Postfix's virtual(8) and Dovecot's mail processes run as.
MAIL_USER = "nobody"

#: Where Debian puts the binaries.
POSTFIX = "/usr/sbin/postfix"
DOVECOT = "/usr/sbin/dovecot"

#: A separate virtualenv with aiosmtpd (not the project's .venv).
DEFAULT_AIOSMTPD_PYTHON = "/tmp/bench-peers-venv/bin/python"

INSTALL_HINT = {
    "postfix": "apt-get install postfix",
    "dovecot": "apt-get install dovecot-imapd dovecot-pop3d",
    "aiosmtpd": (
        f"python3 -m venv {os.path.dirname(os.path.dirname(DEFAULT_AIOSMTPD_PYTHON))}"
        f" && {os.path.dirname(DEFAULT_AIOSMTPD_PYTHON)}/pip install aiosmtpd"
    ),
}


def mail_ids() -> tuple[int, int]:
    entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# -- Postfix -------------------------------------------------------------------------

POSTFIX_MAIN_CF = """\
# A private Postfix for the benchmark: loopback only, no DNS, and mail for
# {domain} goes to Maildirs under {root}/mail by virtual(8). Nothing leaves.
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.{domain}
mydomain = {domain}
mydestination =
inet_interfaces = {loopback}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relay_domains =
relayhost =
default_transport = error:the benchmark sends no mail out
relay_transport = error:the benchmark sends no mail out
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = texthash:{root}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
biff = no
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
smtpd_banner = $myhostname ESMTP
"""

#: Added to main.cf for relay_bench: STARTTLS with the given pair (no AUTH,
#: no session cache).
POSTFIX_TLS_CF = """\
smtpd_tls_security_level = may
smtpd_tls_cert_file = {certificate}
smtpd_tls_key_file = {key}
"""

#: Added to main.cf for relay_bench: each relayed domain to a loopback sink.
POSTFIX_ROUTES_CF = """\
transport_maps = texthash:{root}/transport
"""

#: Debian's default services, without chroot (the queue folder is no chroot jail).
POSTFIX_MASTER_CF = """\
{loopback}:{port} inet n - n - - smtpd
pickup     unix n - n 60 1 pickup
cleanup    unix n - n - 0 cleanup
qmgr       unix n - n 300 1 qmgr
rewrite    unix - - n - - trivial-rewrite
bounce     unix - - n - 0 bounce
defer      unix - - n - 0 bounce
trace      unix - - n - 0 bounce
verify     unix - - n - 1 verify
flush      unix n - n 1000? 0 flush
proxymap   unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp       unix - - n - - smtp
relay      unix - - n - - smtp
showq      unix n - n - - showq
error      unix - - n - - error
retry      unix - - n - - error
discard    unix - - n - - discard
local      unix - n n - - local
virtual    unix - n n - - virtual
lmtp       unix - - n - - lmtp
anvil      unix - - n - 1 anvil
scache     unix - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
tlsmgr     unix - - n 1000? 1 tlsmgr
"""


class Postfix:
    """Postfix receiving on a loopback port and delivering into one Maildir.

    It queues first and delivers afterwards, so a benchmark counts the files
    that land in ``maildir``, not the 250 replies.

    For relay_bench, ``routes`` (domain -> loopback port) sends those domains
    to a sink with Postfix's ``smtp`` client, and ``tls`` (certificate, key
    paths) offers STARTTLS; clients in ``mynetworks`` relay without AUTH.
    """

    name = "postfix"

    def __init__(
        self,
        folder: str,
        user: str,
        routes: Mapping[str, int] | None = None,
        tls: tuple[str, str] | None = None,
    ) -> None:
        if not os.path.exists(POSTFIX):
            raise Skipped(f"Postfix is not installed ({INSTALL_HINT['postfix']})")

        self.root = os.path.join(folder, "postfix")
        self.config_dir = os.path.join(self.root, "etc")
        self.port = free_port()
        self.user = user
        localpart = user.split("@")[0]
        self.maildir = os.path.join(self.root, "mail", BENCH_DOMAIN, localpart)
        self.log = os.path.join(self.root, "maillog")
        self.routes = dict(routes or {})
        self.tls = tls
        self.pid: int | None = None

    def start(self) -> None:
        self._configure()
        done = self._postfix("start")
        if done.returncode != 0:
            raise BenchError(f"postfix start failed:\n{done.stdout}{done.stderr}{tail(self.log)}")

        self.pid = self._master_pid()
        wait_for_ports([self.port], "postfix", self.log)
        say(f"postfix: pid {self.pid}, smtp on {LOOPBACK}:{self.port}")

    def stop(self) -> None:
        """``postfix stop``; its master is no child of ours, so wait for it to go."""
        pid = self.pid or self._master_pid()
        if pid is None:
            return

        self._postfix("stop")
        if not self._wait_gone(pid, 20):
            self._postfix("abort")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        self.pid = None

    def _configure(self) -> None:
        uid, gid = mail_ids()
        values = {"root": self.root, "domain": BENCH_DOMAIN, "loopback": LOOPBACK}
        write(
            os.path.join(self.config_dir, "main.cf"),
            POSTFIX_MAIN_CF.format(uid=uid, gid=gid, **values)
            + self._tls_cf()
            + self._routes_cf(),
        )
        write(
            os.path.join(self.config_dir, "master.cf"),
            POSTFIX_MASTER_CF.format(port=self.port, **values),
        )
        localpart = self.user.split("@")[0]
        write(os.path.join(self.root, "vmailbox"), f"{self.user} {BENCH_DOMAIN}/{localpart}/\n")

        # Like /var/spool/postfix and /var/lib/postfix: root's, and the mail owner's.
        os.makedirs(os.path.join(self.root, "queue"), mode=0o755, exist_ok=True)
        data = os.path.join(self.root, "data")
        os.makedirs(data, mode=0o700, exist_ok=True)
        postfix = pwd.getpwnam("postfix")
        os.chown(data, postfix.pw_uid, postfix.pw_gid)

        mail = os.path.join(self.root, "mail")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.maildir, sub), exist_ok=True)
        chown_tree(mail, uid, gid)
        os.chmod(self.root, 0o755)

    def _tls_cf(self) -> str:
        if self.tls is None:
            return ""
        certificate, key = self.tls
        return POSTFIX_TLS_CF.format(certificate=certificate, key=key)

    def _routes_cf(self) -> str:
        """main.cf lines for the routes (none without), after writing the transport map."""
        if not self.routes:
            return ""

        transport = "".join(
            f"{domain} smtp:[{LOOPBACK}]:{port}\n" for domain, port in self.routes.items()
        )
        write(os.path.join(self.root, "transport"), transport)
        return POSTFIX_ROUTES_CF.format(root=self.root)

    def _postfix(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", self.config_dir, command],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def _master_pid(self) -> int | None:
        path = os.path.join(self.root, "queue", "pid", "master.pid")
        try:
            with open(path) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


# -- aiosmtpd -------------------------------------------------------------------------


class Aiosmtpd:
    """The team's aiosmtpd_maildir.py: durable Maildir delivery before each 250."""

    name = "aiosmtpd"

    def __init__(
        self, folder: str, generators: Generators, python: str, mode: str = "thread"
    ) -> None:
        if not _has_aiosmtpd(python):
            raise Skipped(
                f"aiosmtpd is not importable by {python} ({INSTALL_HINT['aiosmtpd']};"
                " or pass --aiosmtpd-python)"
            )

        self.root = os.path.join(folder, "aiosmtpd")
        self.maildir = os.path.join(self.root, "Maildir")
        self.log = os.path.join(self.root, "aiosmtpd.log")
        self.port = free_port()
        self.argv = [
            python,
            generators.path("aiosmtpd_maildir.py"),
            self.maildir,
            "--port",
            str(self.port),
            "--mode",
            mode,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.mode = mode

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        self.process = start_process(self.argv, self.log)
        wait_for_ports([self.port], "aiosmtpd", self.log, self.process)
        say(f"aiosmtpd: pid {self.pid}, smtp on {LOOPBACK}:{self.port}, mode {self.mode}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


def _has_aiosmtpd(python: str) -> bool:
    if not os.path.exists(python):
        return False
    done = subprocess.run([python, "-c", "import aiosmtpd"], capture_output=True, timeout=60)
    return done.returncode == 0


# -- Dovecot -------------------------------------------------------------------------

DOVECOT_CONF = """\
# A private Dovecot for the benchmark: loopback only, plaintext logins (no
# TLS), users from a passwd-file, Maildirs under {root}/mail.
base_dir = {root}/run
state_dir = {root}/state
instance_name = mailsuite-bench-{port_imap}
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap pop3
listen = {loopback}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:~
mail_uid = {uid}
mail_gid = {gid}
default_process_limit = {processes}
default_client_limit = {clients}
default_vsz_limit = 1G
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
protocol imap {{
  mail_max_userip_connections = {clients}
}}
protocol pop3 {{
  mail_max_userip_connections = {clients}
}}
service imap-login {{
  inet_listener imap {{
    address = {loopback}
    port = {port_imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {loopback}
    port = {port_pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service anvil {{
  client_limit = {anvil_clients}
}}
"""


#: Crypt-style hash prefixes Dovecot's passwd-file understands, and its names for them.
DOVECOT_SCHEMES = {
    "$argon2id$": "ARGON2ID",
    "$argon2i$": "ARGON2I",
    "$2b$": "BLF-CRYPT",
    "$2y$": "BLF-CRYPT",
    "$6$": "SHA512-CRYPT",
}


class Dovecot:
    """Dovecot IMAP and POP3 over Maildirs under ``mail/<domain>/<user>``.

    Users log in with the same names as on mailsuite (``bench@bench.test``);
    the short form ``bench`` works too. ``connections`` sizes the process
    and per-user limits, which Dovecot keeps low by default (100 processes,
    10 sessions per user and address) and an idle-connection test passes.
    """

    name = "dovecot"

    def __init__(
        self,
        folder: str,
        users: list[str],
        connections: int = 100,
        hashes: Mapping[str, str] | None = None,
    ) -> None:
        if not os.path.exists(DOVECOT):
            raise Skipped(f"Dovecot is not installed ({INSTALL_HINT['dovecot']})")

        self.root = os.path.join(folder, "dovecot")
        self.config = os.path.join(self.root, "dovecot.conf")
        self.log = os.path.join(self.root, "dovecot.log")
        self.users = users
        self.connections = connections
        self.hashes = dict(hashes or {})
        self.pop3_port = free_port()
        self.imap_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def maildir(self, user: str) -> str:
        """Where ``user``'s Maildir is; fill it before ``start``, or call ``own_mail``."""
        localpart, domain = user.split("@")
        return os.path.join(self.root, "mail", domain, localpart)

    def start(self) -> None:
        self._configure()
        argv = [DOVECOT, "-F", "-c", self.config]
        self.process = start_process(argv, os.path.join(self.root, "dovecot.out"))
        ports = [self.imap_port, self.pop3_port]
        wait_for_ports(ports, "dovecot", self.log, self.process)
        say(f"dovecot: pid {self.pid}, imap on {self.imap_port}, pop3 on {self.pop3_port}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)
            self.process = None

    def own_mail(self) -> None:
        """Give the mail folders to the mail user, after copying messages in."""
        uid, gid = mail_ids()
        chown_tree(os.path.join(self.root, "mail"), uid, gid)

    def _configure(self) -> None:
        uid, gid = mail_ids()
        for sub in ("run", "state"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        for user in self.users:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(self.maildir(user), sub), exist_ok=True)
        self.own_mail()
        os.chmod(self.root, 0o755)

        write(os.path.join(self.root, "passwd"), self._passwd(uid, gid))
        write(self.config, self._conf(uid, gid))

    def _passwd(self, uid: int, gid: int) -> str:
        lines = []
        for user in self.users:
            home = self.maildir(user)
            entry = f"{self.password(user)}:{uid}:{gid}::{home}::"
            lines.append(f"{user}:{entry}")
            lines.append(f"{user.split('@')[0]}:{entry}")
        return "\n".join(lines) + "\n"

    def password(self, user: str) -> str:
        """mailsuite's own hash of the user's password when known, else plain text.

        Verifying an argon2 hash costs tens of milliseconds of CPU, so login
        figures compare like with like only when both servers check the same hash.
        """
        found = self.hashes.get(user, "")
        for prefix, scheme in DOVECOT_SCHEMES.items():
            if found.startswith(prefix):
                return f"{{{scheme}}}{found}"
        return f"{{PLAIN}}{BENCH_PASSWORD}"

    @property
    def hashing(self) -> str:
        """Which password scheme the users have, for the report."""
        schemes = {self.password(u).split("}")[0][1:] for u in self.users}
        return ", ".join(sorted(schemes))

    def _conf(self, uid: int, gid: int) -> str:
        clients = max(1000, 2 * self.connections)
        return DOVECOT_CONF.format(
            root=self.root,
            loopback=LOOPBACK,
            uid=uid,
            gid=gid,
            port_imap=self.imap_port,
            port_pop3=self.pop3_port,
            processes=self.connections + 100,
            clients=clients,
            anvil_clients=clients + 100,
        )


# -- starting peers ---------------------------------------------------------------


def start_peer(stack: contextlib.ExitStack, make: Any, name: str) -> Any:
    """Build and start a peer, stopped when ``stack`` closes; None if it cannot run.

    A peer that fails is skipped with the reason, so mailsuite is still measured.
    """
    try:
        peer = make()
    except Skipped as e:
        say(f"skipping {name}: {e}")
        return None

    stack.callback(peer.stop)
    try:
        peer.start()
    except BenchError as e:
        say(f"skipping {name}, it did not start: {e}")
        return None
    return peer


@contextlib.contextmanager
def all_peers(args: argparse.Namespace) -> Iterator[list[Any]]:
    generators = Generators(args.shared)
    with workspace(args) as folder, contextlib.ExitStack() as stack:
        peers = [
            start_peer(stack, lambda: Postfix(folder, "bench@bench.test"), "postfix"),
            start_peer(
                stack,
                lambda: Aiosmtpd(folder, generators, args.aiosmtpd_python),
                "aiosmtpd",
            ),
            start_peer(stack, lambda: Dovecot(folder, ["bench@bench.test"]), "dovecot"),
        ]
        yield [p for p in peers if p is not None]


def main() -> int:
    """Start every peer and wait, so one can be tried with a real client."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", default=DEFAULT_SHARED)
    parser.add_argument("--aiosmtpd-python", default=DEFAULT_AIOSMTPD_PYTHON)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--seconds", type=float, default=3600, help="stop after this long")
    args = parser.parse_args()

    with all_peers(args) as peers:
        for peer in peers:
            print(f"{peer.name}: pid {peer.pid}, root {peer.root}")
        print("running; Ctrl-C stops them all", flush=True)
        time.sleep(args.seconds)
    return 0


if __name__ == "__main__":
    run_main(main)
