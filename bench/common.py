"""What every benchmark shares: the load generators, a temporary folder,
child processes that are always stopped, and the side-by-side table.

Benchmarks are not tests. Nothing here checks a figure against a
threshold; the scripts measure mailsuite and its peers with the same load
generator in one run, round by round (each server once per round, so a
burst of load from elsewhere on the machine hits all of them alike), and
print each figure beside the peer's with the ratio mailsuite / peer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

#: The repository these scripts live in.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Where the team's load generators are: ``<repo>/../shared/bench``.
DEFAULT_SHARED = os.path.join(os.path.dirname(REPO), "shared", "bench")

#: Every server in a benchmark listens here, and every generator talks here.
LOOPBACK = "127.0.0.1"

#: The account every benchmark reads and writes, on mailsuite and on Dovecot.
BENCH_DOMAIN = "bench.test"
BENCH_USER = f"bench@{BENCH_DOMAIN}"
BENCH_PASSWORD = "pass"


class BenchError(Exception):
    """The benchmark cannot go on; the message says what failed."""


class Skipped(Exception):
    """A peer is not installed or cannot run here; the message says why."""


# -- command line ---------------------------------------------------------------


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark script takes."""
    parser.add_argument(
        "--shared",
        default=DEFAULT_SHARED,
        help="folder holding the load generators (default: %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds; each runs every server once (default 3, 1 with --quick)",
    )
    parser.add_argument(
        "--only",
        help="comma-separated servers to run (e.g. mailsuite,dovecot); default all",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (configs and logs)"
    )
    parser.add_argument(
        "--tmp", default=None, help="where to make the temporary folder (default: $TMPDIR)"
    )


def rounds(args: argparse.Namespace) -> int:
    if args.rounds is not None:
        return max(1, args.rounds)
    return 1 if args.quick else 3


def wanted(args: argparse.Namespace, server: str) -> bool:
    """Whether ``--only`` (if given) names ``server``."""
    if not args.only:
        return True
    return server in {s.strip() for s in args.only.split(",")}


def run_main(main: Callable[[], int]) -> NoReturn:
    """Run ``main`` so that Ctrl-C and SIGTERM still clean up, then exit.

    SIGTERM and SIGINT become KeyboardInterrupt, so the ``with`` blocks that
    own the servers and the temporary folder unwind in both cases.
    """

    def interrupted(signum: int, frame: Any) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    # Also when started in the background, where the shell ignores SIGINT.
    signal.signal(signal.SIGINT, interrupted)
    try:
        status = main()
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped and temporary files removed", file=sys.stderr)
        status = 130
    except BenchError as e:
        print(f"\nbenchmark failed: {e}", file=sys.stderr)
        status = 1
    sys.exit(status)


def say(text: str) -> None:
    """Progress for the operator, on stderr so that stdout holds the tables."""
    print(text, file=sys.stderr, flush=True)


# -- the temporary folder --------------------------------------------------------


@contextlib.contextmanager
def workspace(args: argparse.Namespace) -> Iterator[str]:
    """A fresh temporary folder, removed at the end unless ``--keep``.

    It is world-searchable: Postfix and Dovecot deliver and read mail as an
    unprivileged user, who must be able to reach their folders inside it.
    """
    path = tempfile.mkdtemp(prefix="mailsuite-bench-", dir=args.tmp)
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        if args.keep:
            say(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def make_corpus(generators: Generators, folder: str, count: int) -> str:
    """A generated Maildir of ``count`` realistic messages (gen_maildir.py), read once.

    Reading every file after writing it puts the corpus in the page cache,
    so the first server measured does not pay for cold reads that the
    others (sharing the same inodes, see ``clone_maildir``) would not.
    """
    corpus = os.path.join(folder, "corpus")
    say(f"generating {count} messages with gen_maildir.py")
    say("  " + generators.text("gen_maildir.py", [corpus, "--count", str(count)], timeout=3600))
    for name in os.listdir(os.path.join(corpus, "cur")):
        with open(os.path.join(corpus, "cur", name), "rb") as f:
            f.read()
    return corpus


def clone_maildir(source: str, destination: str) -> None:
    """Copy a Maildir as hard links: cheap, and every server reads the same bytes.

    Maildir servers never rewrite a message file, they only rename it, so
    sharing inodes between copies cannot leak one server's changes into another's.
    """
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    shutil.copytree(source, destination, copy_function=os.link, dirs_exist_ok=True)


def chown_tree(path: str, uid: int, gid: int) -> None:
    """Give a whole tree to ``uid``:``gid`` (for peers that run as a mail user)."""
    os.chown(path, uid, gid)
    for folder, subfolders, files in os.walk(path):
        for name in subfolders + files:
            os.chown(os.path.join(folder, name), uid, gid)


def count_messages(maildir: str) -> int:
    """Files in a Maildir's new/ and cur/."""
    total = 0
    for sub in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError):
            total += len(os.listdir(os.path.join(maildir, sub)))
    return total


def empty_maildir(maildir: str) -> None:
    """Remove delivered messages, so every round starts with the same folder size."""
    for sub in ("new", "cur"):
        folder = os.path.join(maildir, sub)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(folder):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))


# -- processes and ports --------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def wait_for_ports(
    ports: Sequence[int],
    name: str,
    log: str | None = None,
    process: subprocess.Popen[bytes] | None = None,
    timeout: float = 30,
) -> None:
    """Wait until every port accepts connections, or fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while not all(port_open(p) for p in ports):
        if process is not None and process.poll() is not None:
            raise BenchError(f"{name} exited with status {process.returncode}{tail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(
                f"{name} did not listen on {list(ports)} within {timeout}s{tail(log)}"
            )
        time.sleep(0.1)


def tail(path: str | None, lines: int = 30) -> str:
    """The end of a log file, indented, for an error message."""
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        text = f.readlines()[-lines:]
    return f"\n--- last lines of {path}:\n" + "".join("    " + line for line in text)


def start_process(
    argv: Sequence[str],
    log: str,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    stdin: bytes | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server in its own process group, output into ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM the server, so it stops its own children; then SIGKILL what is left.

    Only the group leader gets SIGTERM: a master process (Dovecot's, twistd)
    shuts its children down in order, and complains when they die under it.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            say(f"pid {process.pid} ignored SIGTERM for {timeout:.0f}s; killing it")

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- the load generators ----------------------------------------------------------


@dataclass
class GeneratorRun:
    """What one run of a load generator printed: its repetitions and median."""

    runs: list[dict[str, Any]]
    median: dict[str, Any]
    output: str


class Generators:
    """The shared load generators, run with this Python (they need only the stdlib)."""

    NAMES = (
        "smtp_load.py",
        "pop3_load.py",
        "imap_load.py",
        "idle_conns.py",
        "gen_maildir.py",
        "fsync_rate.py",
        "aiosmtpd_maildir.py",
    )

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)
        missing = [n for n in self.NAMES if not os.path.isfile(self.path(n))]
        if missing:
            raise BenchError(
                f"the load generators are not in {self.folder} (missing: {', '.join(missing)});"
                " pass --shared with the folder that holds smtp_load.py and the others"
            )

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def run(self, name: str, arguments: Sequence[str], timeout: float) -> GeneratorRun:
        """Run one generator to the end and parse its ``run``/``MEDIAN`` lines."""
        argv = [sys.executable, self.path(name), *arguments]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"{name} took longer than {timeout:.0f}s: {' '.join(argv)}") from e

        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise BenchError(
                f"{name} failed with status {done.returncode}: {' '.join(argv)}\n{output}"
            )
        return parse_generator_output(output)

    def text(self, name: str, arguments: Sequence[str], timeout: float) -> str:
        """Run a generator whose output is a line of text (gen_maildir, fsync_rate)."""
        argv = [sys.executable, self.path(name), *arguments]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise BenchError(f"{name} failed: {' '.join(argv)}\n{done.stdout}{done.stderr}")
        return done.stdout.strip()


def parse_generator_output(output: str) -> GeneratorRun:
    """Parse ``run K: {json}``, bare ``{json}`` and ``MEDIAN {json}`` lines."""
    runs: list[dict[str, Any]] = []
    median: dict[str, Any] = {}
    for line in output.splitlines():
        if line.startswith("MEDIAN "):
            median = json.loads(line[len("MEDIAN ") :])
        elif line.startswith("run ") and ": {" in line:
            runs.append(json.loads(line.split(": ", 1)[1]))
        elif line.startswith("{"):
            runs.append(json.loads(line))
    return GeneratorRun(runs=runs, median=median, output=output)


# -- figures and the table ------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One row of a comparison table."""

    key: str
    label: str
    higher_is_better: bool
    digits: int = 1


@dataclass
class Figures:
    """Values per (metric, server), one per round, and notes about failures."""

    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, metric: str, server: str, value: float | None) -> None:
        if value is not None:
            self.values.setdefault((metric, server), []).append(float(value))

    def median(self, metric: str, server: str) -> float | None:
        found = self.values.get((metric, server))
        return statistics.median(found) if found else None

    def spread(self, metric: str, server: str) -> float | None:
        """(max - min) / median over the rounds: how noisy this figure was."""
        found = self.values.get((metric, server))
        if not found or len(found) < 2 or statistics.median(found) == 0:
            return None
        return (max(found) - min(found)) / statistics.median(found)

    def round_ratios(self, metric: str, subject: str, peer: str) -> list[float]:
        """mailsuite / peer per round, for rounds where both have a value."""
        mine = self.values.get((metric, subject), [])
        theirs = self.values.get((metric, peer), [])
        return [a / b for a, b in zip(mine, theirs, strict=False) if b]


def print_comparison(
    title: str,
    metrics: Sequence[Metric],
    servers: Sequence[str],
    figures: Figures,
    subject: str = "mailsuite",
) -> None:
    """The table: one column per server, then mailsuite / peer for each peer.

    A cell shows the median over rounds and, with two or more rounds, the
    spread (max - min over the median). A ratio cell shows the ratio of the
    medians and, with two or more rounds, the range of per-round ratios.
    """
    peers = [s for s in servers if s != subject]
    headers = ["metric", "better", *servers, *(f"{subject}/{p}" for p in peers)]
    rows = []
    for m in metrics:
        row = [m.label, "higher" if m.higher_is_better else "lower"]
        row += [cell(figures, m, s) for s in servers]
        row += [ratio_cell(figures, m, subject, p) for p in peers]
        rows.append(row)

    print()
    print(title)
    print_table(headers, rows)
    for note in figures.notes:
        print(f"  note: {note}")
    sys.stdout.flush()


def cell(figures: Figures, metric: Metric, server: str) -> str:
    value = figures.median(metric.key, server)
    if value is None:
        return "-"
    text = f"{value:,.{metric.digits}f}"
    spread = figures.spread(metric.key, server)
    return text if spread is None else f"{text} ±{spread * 50:.0f}%"


def ratio_cell(figures: Figures, metric: Metric, subject: str, peer: str) -> str:
    mine = figures.median(metric.key, subject)
    theirs = figures.median(metric.key, peer)
    if mine is None or theirs is None or theirs == 0:
        return "-"
    per_round = figures.round_ratios(metric.key, subject, peer)
    text = f"{mine / theirs:.2f}"
    if len(per_round) >= 2:
        text += f" ({min(per_round):.2f}-{max(per_round):.2f})"
    return text


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain-text table; the first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [str(cells[0]).ljust(widths[0])]
        parts += [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts)

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
