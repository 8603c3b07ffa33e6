"""POP3 download: mailsuite beside Dovecot on the same 10,000-message maildrop.

gen_maildir.py writes one realistic Maildir (2-50 KB messages, a third
MIME multipart); every mailbox on both servers is a hard-linked copy of it,
so both serve exactly the same bytes from the same page cache.
pop3_load.py logs in, runs STAT and UIDL, then RETRs every message and
QUITs without DELE:

- 1 user: ``bench@bench.test``;
- 10 users at once: ``bench1@bench.test`` .. ``bench10@bench.test``, each
  with their own copy (ten family members, not one mailbox ten times),
  on both servers.

Before the rounds each server gets one untimed session per mailbox (login,
STAT, UIDL, one RETR), so both have built their indexes and size caches:
what is measured is a warm server, as a home server is most of the time.

usage: python -m bench.pop3_bench [--quick] [--rounds N] [--messages K]
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from typing import Any

from bench.common import (
    BENCH_DOMAIN,
    BENCH_PASSWORD,
    BENCH_USER,
    LOOPBACK,
    BenchError,
    Figures,
    Generators,
    Metric,
    add_common_arguments,
    clone_maildir,
    make_corpus,
    print_comparison,
    rounds,
    run_main,
    say,
    tail,
    wanted,
    workspace,
)
from bench.peers import Dovecot, start_peer
from bench.suite import Mailsuite

METRICS = (
    Metric("MBps", "download MB/s (all users, login to QUIT)", higher_is_better=True),
    Metric("retr_MBps", "MB/s in the RETR phase", higher_is_better=True),
    Metric("msgs_per_s", "messages/s (all users)", higher_is_better=True, digits=0),
    Metric("retr_s", "RETR all, s (median user)", higher_is_better=False, digits=2),
    Metric("login_ms", "USER+PASS ms", higher_is_better=False, digits=2),
    Metric("stat_ms", "STAT ms", higher_is_better=False, digits=2),
    Metric("uidl_ms", "UIDL ms", higher_is_better=False, digits=2),
)

#: Concurrent users, and the login pattern pop3_load.py expands ({i} = 1..N).
CASES = ((1, BENCH_USER), (10, f"bench{{i}}@{BENCH_DOMAIN}"))


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--messages", type=int, help="maildrop size (default 10000, 500 quick)")
    args = parser.parse_args()
    args.messages = args.messages or (500 if args.quick else 10000)
    return args


def users() -> list[str]:
    """Every mailbox either case logs in to."""
    many = max(n for n, _ in CASES)
    return [BENCH_USER, *(f"bench{i}@{BENCH_DOMAIN}" for i in range(1, many + 1))]


def main() -> int:
    args = parse_arguments()
    generators = Generators(args.shared)

    with workspace(args) as folder, contextlib.ExitStack() as stack:
        corpus = make_corpus(generators, folder, args.messages)
        servers, failed = start_servers(args, folder, corpus, stack)
        servers = warm_up(generators, servers, failed, args.messages)
        if not servers:
            raise BenchError("no server could be measured:\n" + "\n".join(failed))

        for count, pattern in CASES:
            figures = measure(args, generators, servers, count, pattern)
            title = (
                f"POP3 download of {args.messages} messages, {count} user(s) at once,"
                f" {rounds(args)} round(s)"
            )
            print_comparison(title, METRICS, [s.name for s in servers], figures)

    for failure in failed:
        print(f"\nFAILED: {failure}")
    return 1 if failed else 0


def start_servers(
    args: argparse.Namespace, folder: str, corpus: str, stack: contextlib.ExitStack
) -> tuple[list[Any], list[str]]:
    """mailsuite and Dovecot, each with a copy of the corpus in every mailbox."""
    servers: list[Any] = []
    failed: list[str] = []
    if wanted(args, "mailsuite"):
        suite = Mailsuite(folder, ["pop3"], users())
        for user in users():
            clone_maildir(corpus, suite.maildir(user))
        stack.callback(suite.stop)
        try:
            suite.start()
            servers.append(suite)
        except BenchError as e:
            failed.append(f"mailsuite did not start: {e}")
            say(failed[-1])

    if wanted(args, "dovecot"):
        hashes = servers[0].password_hashes() if servers else {}
        peer = start_peer(stack, lambda: make_dovecot(folder, corpus, hashes), "dovecot")
        if peer is not None:
            say(f"dovecot checks passwords with {peer.hashing}")
            servers.append(peer)
    return servers, failed


def make_dovecot(folder: str, corpus: str, hashes: dict[str, str]) -> Dovecot:
    """Dovecot with the same mailboxes and, when known, mailsuite's password hashes."""
    dovecot = Dovecot(folder, users(), hashes=hashes)
    for user in users():
        clone_maildir(corpus, dovecot.maildir(user))
    return dovecot


def pop3_port(server: Any) -> int:
    port: int = server.port("pop3") if isinstance(server, Mailsuite) else server.pop3_port
    return port


def warm_up(
    generators: Generators, servers: list[Any], failed: list[str], messages: int
) -> list[Any]:
    """One untimed session per mailbox; a server that fails it is left out."""
    working = []
    for server in servers:
        say(f"warming up {server.name}: every mailbox once")
        try:
            for count, pattern in CASES:
                result = load(generators, server, count, pattern, retr_max=1)
                check(result, count, messages, retr=1)
            working.append(server)
        except BenchError as e:
            failed.append(f"{server.name} failed the warm-up: {e}{tail(server.log, 40)}")
            say(failed[-1])
    return working


def check(result: dict[str, Any], users: int, messages: int, retr: int) -> None:
    """Every user logged in and saw the whole maildrop."""
    if result.get("errors") or result.get("ok_users") != users:
        raise BenchError(
            f"{result.get('ok_users')} of {users} users succeeded;"
            f" first error: {result.get('first_error')}"
        )
    if result.get("messages") != messages:
        raise BenchError(f"STAT said {result.get('messages')} messages, expected {messages}")
    if result.get("retrieved_total") != users * retr:
        raise BenchError(f"retrieved {result.get('retrieved_total')}, expected {users * retr}")


def measure(
    args: argparse.Namespace,
    generators: Generators,
    servers: Sequence[Any],
    count: int,
    pattern: str,
) -> Figures:
    """Each round runs every server once, starting with a different one each time."""
    figures = Figures()
    for number in range(rounds(args)):
        shift = number % len(servers)
        for server in [*servers[shift:], *servers[:shift]]:
            say(f"round {number + 1}: {server.name}, {count} user(s)")
            result = load(generators, server, count, pattern)
            try:
                check(result, count, args.messages, retr=args.messages)
            except BenchError as e:
                figures.notes.append(f"{server.name}, round {number + 1}: {e}")
            if result.get("retr_s"):
                # All users' bytes over the median user's RETR time: the
                # download rate without the logins (argon2) and UIDL.
                result["retr_MBps"] = result["MB"] / result["retr_s"]
            for metric in METRICS:
                figures.add(metric.key, server.name, result.get(metric.key))
    return figures


def load(
    generators: Generators,
    server: Any,
    count: int,
    pattern: str,
    retr_max: int | None = None,
) -> dict[str, Any]:
    """One pop3_load.py run; its result line."""
    arguments = ["--host", LOOPBACK, "--port", str(pop3_port(server)), "-n", str(count)]
    arguments += ["--user", pattern, "--password", BENCH_PASSWORD, "--reps", "1"]
    if retr_max is not None:
        arguments += ["--retr-max", str(retr_max)]

    run = generators.run("pop3_load.py", arguments, timeout=1800)
    if not run.runs:
        raise BenchError(f"pop3_load.py printed no result:\n{run.output}")
    return run.runs[0]


if __name__ == "__main__":
    run_main(main)
