"""Durable SMTP intake: mailsuite's MX port beside Postfix and aiosmtpd.

Each server receives 10 KB messages for bench@bench.test over 1 and over 20
concurrent connections (smtp_load.py, no pipelining). The headline figure
is messages per second *delivered*: counted as files landing in the
recipient's Maildir, because Postfix answers 250 once the message is in its
queue and delivers afterwards. Server CPU per message (the process tree's
user + system time) is the figure least disturbed by a busy machine. The
disk's own limit for the same write-fsync-rename-fsync pattern
(fsync_rate.py) is printed first, for context.

usage: python -m bench.smtp_bench [--quick] [--rounds N] [--messages M]
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Sequence
from typing import Any

from bench.common import (
    BENCH_USER,
    LOOPBACK,
    BenchError,
    Figures,
    Generators,
    Metric,
    add_common_arguments,
    empty_maildir,
    print_comparison,
    rounds,
    run_main,
    say,
    tail,
    wanted,
    workspace,
)
from bench.peers import DEFAULT_AIOSMTPD_PYTHON, Aiosmtpd, Postfix, start_peer
from bench.suite import Mailsuite

METRICS = (
    Metric("delivered_per_s", "delivered msg/s", higher_is_better=True, digits=0),
    Metric("accepted_per_s", "accepted msg/s (250 after DATA)", higher_is_better=True, digits=0),
    Metric("server_cpu_ms_per_msg", "server CPU ms/msg", higher_is_better=False, digits=3),
    Metric("p50_ms", "latency p50 ms", higher_is_better=False, digits=2),
    Metric("p99_ms", "latency p99 ms", higher_is_better=False, digits=2),
)

CONCURRENCY = (1, 20)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--messages", type=int, help="per run (default 2000, 200 with --quick)")
    parser.add_argument("--size", type=int, default=10240, help="message size in bytes")
    parser.add_argument(
        "--aiosmtpd-python",
        default=DEFAULT_AIOSMTPD_PYTHON,
        help="a Python that can import aiosmtpd (default: %(default)s)",
    )
    parser.add_argument(
        "--aiosmtpd-mode",
        choices=("thread", "inline"),
        default="thread",
        help="aiosmtpd_maildir.py's mode: fsync in a thread pool or on the event loop",
    )
    args = parser.parse_args()
    args.messages = args.messages or (200 if args.quick else 2000)
    return args


def main() -> int:
    args = parse_arguments()
    generators = Generators(args.shared)

    with workspace(args) as folder, contextlib.ExitStack() as stack:
        print_fsync_limit(generators, folder, args.quick)
        servers, failed = start_servers(args, generators, folder, stack)
        if not servers:
            raise BenchError("no server could be started")

        servers = warm_up(generators, servers, failed)
        for connections in CONCURRENCY:
            figures = measure(args, generators, servers, connections)
            title = (
                f"SMTP intake, {args.size} B messages, {connections} connection(s), "
                f"{args.messages} messages per run, {rounds(args)} round(s)"
            )
            print_comparison(title, METRICS, [s.name for s in servers], figures)

    return report_failures(failed)


def print_fsync_limit(generators: Generators, folder: str, quick: bool) -> None:
    """The disk's durable-delivery rate on the folder the servers write into."""
    count, reps = ("200", "1") if quick else ("500", "3")
    print("Disk limit for Maildir delivery (write, fsync, rename, fsync the folder):")
    for threads in ("1", "4"):
        target = os.path.join(folder, f"fsync-{threads}")
        line = generators.text(
            "fsync_rate.py",
            [target, "--dirsync", "--threads", threads, "--count", count, "--reps", reps],
            timeout=300,
        )
        print(f"  {threads} thread(s): {line}")


def start_servers(
    args: argparse.Namespace,
    generators: Generators,
    folder: str,
    stack: contextlib.ExitStack,
) -> tuple[list[Any], list[str]]:
    """mailsuite first, then each peer that is installed; failures are listed."""
    servers: list[Any] = []
    failed: list[str] = []
    if wanted(args, "mailsuite"):
        suite = Mailsuite(folder, ["smtp"])
        stack.callback(suite.stop)
        try:
            suite.start()
            servers.append(suite)
        except BenchError as e:
            failed.append(f"mailsuite did not start: {e}")
            say(failed[-1])

    makers = {
        "postfix": lambda: Postfix(folder, BENCH_USER),
        "aiosmtpd": lambda: Aiosmtpd(folder, generators, args.aiosmtpd_python, args.aiosmtpd_mode),
    }
    for name, make in makers.items():
        if wanted(args, name):
            peer = start_peer(stack, make, name)
            if peer is not None:
                servers.append(peer)
    return servers, failed


def smtp_port(server: Any) -> int:
    port: int = server.port("smtp") if isinstance(server, Mailsuite) else server.port
    return port


def maildir(server: Any) -> str:
    path: str = server.maildir(BENCH_USER) if isinstance(server, Mailsuite) else server.maildir
    return path


def warm_up(generators: Generators, servers: list[Any], failed: list[str]) -> list[Any]:
    """A short untimed burst, so every server has its processes and caches up.

    A server that does not deliver all of it is left out of the measurement
    (and listed as failed) rather than holding every run up for the full wait.
    """
    working = []
    for server in servers:
        say(f"warming up {server.name}")
        result = load(generators, server, connections=5, messages=50, wait=30)
        if result.get("errors") or result.get("delivered") != 50:
            failed.append(
                f"{server.name} did not take 50 warm-up messages: {result.get('ok')} accepted,"
                f" {result.get('delivered')} delivered, first error:"
                f" {result.get('first_error')}{server_log(server)}"
            )
            say(failed[-1])
            continue
        empty_maildir(maildir(server))
        working.append(server)
    return working


def server_log(server: Any) -> str:
    return tail(getattr(server, "log", None), 40)


def measure(
    args: argparse.Namespace, generators: Generators, servers: Sequence[Any], connections: int
) -> Figures:
    """Each round runs every server once, starting with a different one each time."""
    figures = Figures()
    for number in range(rounds(args)):
        shift = number % len(servers)
        for server in [*servers[shift:], *servers[:shift]]:
            say(f"round {number + 1}: {server.name}, {connections} connection(s)")
            result = load(generators, server, connections, args.messages, args.size)
            record(figures, server.name, result, connections)
            empty_maildir(maildir(server))
    return figures


def load(
    generators: Generators,
    server: Any,
    connections: int,
    messages: int,
    size: int = 10240,
    wait: float = 120,
) -> dict[str, Any]:
    """One smtp_load.py run against ``server``; its result line."""
    arguments = [
        "--host",
        LOOPBACK,
        "--port",
        str(smtp_port(server)),
        "-n",
        str(connections),
        "-m",
        str(messages),
        "-s",
        str(size),
        "--rcpt",
        BENCH_USER,
        "--maildir",
        maildir(server),
        "--server-pid",
        str(server.pid),
        "--reps",
        "1",
        "--wait",
        str(wait),
        "--json",
    ]
    run = generators.run("smtp_load.py", arguments, timeout=900)
    if not run.runs:
        raise BenchError(f"smtp_load.py printed no result:\n{run.output}")
    return run.runs[0]


def record(figures: Figures, name: str, result: dict[str, Any], connections: int) -> None:
    for metric in METRICS:
        figures.add(metric.key, name, result.get(metric.key))

    if result.get("errors"):
        figures.notes.append(
            f"{name}: {result['errors']} error(s) of {result['m']} at {connections} connection(s);"
            f" first: {result.get('first_error')}"
        )
    if result.get("delivered", 0) < result.get("ok", 0):
        figures.notes.append(
            f"{name}: only {result.get('delivered')} of {result['ok']} accepted messages"
            " reached the Maildir within the wait"
        )


def report_failures(failed: list[str]) -> int:
    for failure in failed:
        print(f"\nFAILED: {failure}")
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main)
