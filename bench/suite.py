"""mailsuite itself, run for a benchmark the way an operator runs it.

A TOML configuration in the benchmark's temporary folder puts the store,
the users file, the queue and the TLS files there too, and opens only the
listeners the benchmark asks for, on free loopback ports. It lets loopback
clients log in without TLS (the load generators speak none) and answers a
failed login at once. Outbound mail goes to a closed loopback port, so
nothing can leave the machine; a benchmark that relays names its own
loopback sink per domain (``relay.routes``). Users are added with the real
command, ``mailsuite --config CFG user add ADDRESS`` (password on stdin),
and the server is the real ``twistd -n --pidfile= mailsuite --config CFG``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from bench.common import (
    BENCH_PASSWORD,
    BENCH_USER,
    LOOPBACK,
    REPO,
    BenchError,
    free_port,
    say,
    start_process,
    stop_process,
    wait_for_ports,
)

LISTENERS = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")

VENV_BIN = os.path.join(REPO, ".venv", "bin")

CONFIG = """\
# mailsuite for a benchmark; every path is relative to this file.
hostname = "mail.bench.test"
domains = ["bench.test"]
store = "store"
users = "users"
queue = "queue"

[tls]
certificate = "tls/cert.pem"
key = "tls/key.pem"

[listen]
{listen}

[auth]
# The load generators speak no TLS; Dovecot trusts loopback the same way.
plaintext_on_loopback = true
failure_delay = 0

[relay]
# Nothing leaves the machine: port 9 on loopback is closed.
smarthost = "tcp:host=127.0.0.1:port=9"
nameservers = ["127.0.0.1:53"]

[relay.routes]
# Domains a benchmark relays to, each to a sink of its own on loopback.
{routes}
"""


class Mailsuite:
    """One twistd process serving ``services`` (listener names) on loopback."""

    name = "mailsuite"

    def __init__(
        self,
        folder: str,
        services: Sequence[str],
        users: Sequence[str] = (BENCH_USER,),
        routes: Mapping[str, int] | None = None,
    ) -> None:
        self.root = os.path.join(folder, "mailsuite")
        self.config = os.path.join(self.root, "mailsuite.toml")
        self.store = os.path.join(self.root, "store")
        self.log = os.path.join(self.root, "twistd.log")
        self.users = list(users)
        #: Relay destination domain -> loopback port (``relay.routes``), for relay_bench.
        self.routes = dict(routes or {})
        self.ports = {name: free_port() for name in services}
        self.process: subprocess.Popen[bytes] | None = None
        self._configured = False

    @property
    def pid(self) -> int | None:
        """The twistd process (it does not fork): for CPU and memory figures."""
        return self.process.pid if self.process else None

    def port(self, service: str) -> int:
        return self.ports[service]

    def maildir(self, user: str) -> str:
        """The user's INBOX in the store: ``<store>/<domain>/<localpart>``."""
        localpart, domain = user.split("@")
        return os.path.join(self.store, domain, localpart)

    def start(self) -> None:
        if not self._configured:
            self._configure()

        self.process = start_process(self._twistd(), self.log, env=_env(), cwd=self.root)
        wait_for_ports(list(self.ports.values()), "mailsuite", self.log, self.process)
        listening = ", ".join(f"{k} on {v}" for k, v in self.ports.items())
        say(f"mailsuite: pid {self.pid}, {listening}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)
            self.process = None

    def restart(self) -> None:
        """A fresh process on the same files (memory figures need one per repetition)."""
        self.stop()
        self.start()

    def _configure(self) -> None:
        os.makedirs(self.store, exist_ok=True)
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(CONFIG.format(listen=self._listen(), routes=self._routes()))

        for user in self.users:
            self._add_user(user)
        self._configured = True

    def _listen(self) -> str:
        lines = []
        for name in LISTENERS:
            port = self.ports.get(name)
            endpoints = f'"tcp:{port}:interface={LOOPBACK}"' if port else ""
            lines.append(f"{name} = [{endpoints}]")
        return "\n".join(lines)

    def _routes(self) -> str:
        lines = []
        for domain, port in self.routes.items():
            lines.append(f'"{domain}" = "tcp:host={LOOPBACK}:port={port}"')
        return "\n".join(lines)

    def _add_user(self, user: str) -> None:
        argv = [*_mailsuite_command(), "--config", self.config, "user", "add", user]
        done = subprocess.run(
            argv,
            input=BENCH_PASSWORD + "\n",
            capture_output=True,
            text=True,
            env=_env(),
            timeout=120,
        )
        if done.returncode != 0:
            raise BenchError(
                f"adding {user} failed (status {done.returncode}): {' '.join(argv)}\n"
                f"{done.stdout}{done.stderr}"
            )

    def _twistd(self) -> list[str]:
        twistd = os.path.join(VENV_BIN, "twistd")
        if not os.path.exists(twistd):
            raise BenchError(f"{twistd} does not exist: create the project's .venv first")
        return [twistd, "-n", "--pidfile=", "mailsuite", "--config", self.config]

    def password_hashes(self) -> dict[str, str]:
        """Each user's password hash from the users file (``address:hash`` lines).

        A peer given these checks passwords at the same cost as mailsuite.
        """
        hashes = {}
        with open(os.path.join(self.root, "users"), encoding="utf-8") as f:
            for line in f:
                address, _, hashed = line.strip().partition(":")
                if hashed and not address.startswith("#"):
                    hashes[address] = hashed
        return hashes


def _mailsuite_command() -> list[str]:
    """The installed ``mailsuite`` script, or its module when not installed."""
    script = os.path.join(VENV_BIN, "mailsuite")
    if os.path.exists(script):
        return [script]
    python = os.path.join(VENV_BIN, "python")
    return [python, "-c", "import sys; from mailsuite.cli import main; sys.exit(main())"]


def _env() -> dict[str, str]:
    """This environment, with the repository importable (it may not be installed)."""
    env = dict(os.environ)
    paths = [REPO, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PYTHONSTARTUP", None)
    return env


if __name__ == "__main__":
    sys.exit("run a benchmark (python -m bench.smtp_bench); this module only starts mailsuite")
