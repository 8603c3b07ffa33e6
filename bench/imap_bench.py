"""IMAP: mailsuite beside Dovecot on the same mailbox, and memory per IDLE connection.

gen_maildir.py writes one realistic Maildir of 10,000 messages (100,000
more with ``--large``); both servers get a hard-linked copy as the INBOX of
``bench@bench.test`` (``big@bench.test`` for the large one) and check the
same argon2 password hash. imap_load.py then times, one client at a time:
SELECT, FETCH 1:* (UID FLAGS RFC822.SIZE), five header fields of every
message, every body (MB/s), UID SEARCH ALL / UNSEEN / SUBJECT / BODY, and
STORE (bulk, and single round trips). Each operation is its own
imap_load.py run (login and SELECT come with each), so an operation one
server refuses costs only that row.

imap_load.py has no APPEND, so this script has its own small asyncio
load: ``--appends`` messages of 10 KB (1,000; 100 with ``--quick``)
appended to the INBOX of ``append@bench.test`` (a user nothing else
touches), by 1 client and by 4 concurrent clients, each logged in before
the clock starts; messages/s and p50 APPEND latency. The INBOX is emptied
with STORE \\Deleted and EXPUNGE before each measurement, and counted
after it (a server that answers OK must have kept every message).

Before the rounds each server gets one untimed pass (SELECT, FETCH of flags
and headers), so both have built their indexes and caches: a warm server,
as a home server is most of the time.

Then idle_conns.py holds 1,000 logged-in connections in IDLE on each
server, all as ``idle@bench.test`` whose INBOX is empty (so the figure is
the cost of a connection, not of a mailbox), and reports the server's
memory per connection (RSS, and PSS, which shares Dovecot's forked
processes' pages fairly; for mailsuite, one process, RSS is the figure:
its PSS also drops whenever another process maps the same libraries). One
round by default (``--idle-rounds``): 1,000 argon2 logins take minutes.
mailsuite is restarted before each of these rounds: a Python process
keeps the memory it freed, so a process that has already served the FETCH
rounds would reuse it and look cheaper.

usage: python -m bench.imap_bench [--quick] [--large] [--rounds N] [--idle N] [--appends N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import time
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

#: imap_load.py operation -> the figures it yields (login and select come with each).
OPERATIONS = {
    "fetch_meta": ("fetch_meta_ms",),
    "fetch_hdrs": ("fetch_hdrs_ms",),
    "fetch_body": ("fetch_body_ms", "body_MBps_aggregate"),
    "search_all": ("search_all_ms",),
    "search_unseen": ("search_unseen_ms",),
    "search_subj": ("search_subj_ms",),
    "search_body": ("search_body_ms",),
    "store_bulk": ("store_bulk_ms",),
    "store_one": ("store_one_p50_ms",),
}

METRICS = (
    Metric("login_ms", "connect + LOGIN ms", higher_is_better=False, digits=2),
    Metric("select_ms", "SELECT INBOX ms", higher_is_better=False, digits=2),
    Metric("fetch_meta_ms", "FETCH 1:* (UID FLAGS RFC822.SIZE) ms", False, digits=2),
    Metric("fetch_hdrs_ms", "FETCH 1:* five header fields ms", False, digits=2),
    Metric("fetch_body_ms", "FETCH 1:* BODY.PEEK[] ms", False, digits=1),
    Metric("body_MBps_aggregate", "bodies MB/s", higher_is_better=True),
    Metric("search_all_ms", "UID SEARCH ALL ms", higher_is_better=False, digits=2),
    Metric("search_unseen_ms", "UID SEARCH UNSEEN ms", higher_is_better=False, digits=2),
    Metric("search_subj_ms", 'UID SEARCH SUBJECT "invoice" ms', False, digits=2),
    Metric("search_body_ms", 'UID SEARCH BODY "throughput" ms', False, digits=1),
    Metric("store_bulk_ms", "UID STORE 1:* +/-FLAGS.SILENT ms", False, digits=2),
    Metric("store_one_p50_ms", "single UID STORE p50 ms", False, digits=2),
)

IDLE_METRICS = (
    Metric("pss_per_conn_kb", "PSS per IDLE connection KB", higher_is_better=False),
    Metric("rss_per_conn_kb", "RSS per IDLE connection KB", higher_is_better=False),
    Metric("open_s", "time to open them all s", higher_is_better=False, digits=2),
)

#: Search results both servers must agree on (imap_load.py counts the hits).
HITS = ("search_all_hits", "search_unseen_hits", "search_subj_hits", "search_body_hits")

BIG_USER = f"big@{BENCH_DOMAIN}"
IDLE_USER = f"idle@{BENCH_DOMAIN}"
APPEND_USER = f"append@{BENCH_DOMAIN}"

APPEND_METRICS = (
    Metric("append_1_per_s", "APPEND msg/s, 1 client", higher_is_better=True),
    Metric("append_1_p50_ms", "APPEND p50 ms, 1 client", higher_is_better=False, digits=2),
    Metric("append_4_per_s", "APPEND msg/s, 4 clients", higher_is_better=True),
    Metric("append_4_p50_ms", "APPEND p50 ms, 4 clients", higher_is_better=False, digits=2),
)

#: Concurrent connections of the APPEND load, one measurement each.
APPEND_CLIENTS = (1, 4)

#: Octets per appended message (about; the header varies by a few).
APPEND_SIZE = 10_000

#: Untimed APPENDs before the rounds, so both servers have set up the INBOX.
APPEND_WARM_UP = 20

#: Seconds to wait for any one line from the server during the APPEND load.
APPEND_TIMEOUT = 120.0


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--messages", type=int, help="mailbox size (default 10000, 500 quick)")
    parser.add_argument(
        "--large", action="store_true", help="also a 100,000-message mailbox (slow to generate)"
    )
    parser.add_argument("--idle", type=int, help="idle IMAP connections (default 1000, 100 quick)")
    parser.add_argument(
        "--idle-rounds",
        type=int,
        default=1,
        help="rounds of the idle test (default 1: logging 1,000 users in takes minutes)",
    )
    parser.add_argument("--store-one", type=int, default=200, help="single STORE round trips")
    parser.add_argument(
        "--appends", type=int, help="10 KB messages to APPEND (default 1000, 100 quick)"
    )
    args = parser.parse_args()
    args.appends = args.appends or (100 if args.quick else 1000)
    args.messages = args.messages or (500 if args.quick else 10000)
    args.idle = args.idle or (100 if args.quick else 1000)
    return args


def mailboxes(args: argparse.Namespace) -> dict[str, int]:
    """User -> message count for every mailbox this run measures."""
    boxes = {BENCH_USER: args.messages}
    if args.large:
        boxes[BIG_USER] = 100_000
    return boxes


def main() -> int:
    args = parse_arguments()
    generators = Generators(args.shared)

    with workspace(args) as folder, contextlib.ExitStack() as stack:
        corpora = make_corpora(generators, folder, mailboxes(args))
        servers, failed = start_servers(args, folder, corpora, stack)
        servers = warm_up(generators, servers, failed, mailboxes(args))
        if not servers:
            raise BenchError("no server could be measured:\n" + "\n".join(failed))

        names = [s.name for s in servers]
        for user, count in mailboxes(args).items():
            figures = measure(args, generators, servers, user)
            title = f"IMAP, {count} messages, 1 client, {rounds(args)} round(s)"
            print_comparison(title, METRICS, names, figures)

        figures = measure_appends(args, servers)
        title = f"IMAP APPEND: {args.appends} messages of 10 KB, {rounds(args)} round(s)"
        print_comparison(title, APPEND_METRICS, names, figures)

        figures = measure_idle(args, generators, servers)
        title = f"IMAP IDLE: {args.idle} connections, {args.idle_rounds} round(s)"
        print_comparison(title, IDLE_METRICS, names, figures)

    for failure in failed:
        print(f"\nFAILED: {failure}")
    return 1 if failed else 0


def make_corpora(generators: Generators, folder: str, boxes: dict[str, int]) -> dict[str, str]:
    corpora = {}
    for user, count in boxes.items():
        corpora[user] = make_corpus(generators, os.path.join(folder, user.split("@")[0]), count)
    return corpora


def start_servers(
    args: argparse.Namespace,
    folder: str,
    corpora: dict[str, str],
    stack: contextlib.ExitStack,
) -> tuple[list[Any], list[str]]:
    """mailsuite and Dovecot, with the same mailboxes and password hashes."""
    servers: list[Any] = []
    failed: list[str] = []
    if wanted(args, "mailsuite"):
        suite = Mailsuite(folder, ["imap"], [*corpora, IDLE_USER, APPEND_USER])
        for user, corpus in corpora.items():
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

        def make() -> Dovecot:
            users = [*corpora, IDLE_USER, APPEND_USER]
            dovecot = Dovecot(folder, users, connections=args.idle + 50, hashes=hashes)
            for user, corpus in corpora.items():
                clone_maildir(corpus, dovecot.maildir(user))
            return dovecot

        peer = start_peer(stack, make, "dovecot")
        if peer is not None:
            say(f"dovecot checks passwords with {peer.hashing}")
            servers.append(peer)
    return servers, failed


def imap_port(server: Any) -> int:
    port: int = server.port("imap") if isinstance(server, Mailsuite) else server.imap_port
    return port


def warm_up(
    generators: Generators, servers: list[Any], failed: list[str], boxes: dict[str, int]
) -> list[Any]:
    """One untimed pass per mailbox; a server that fails it is left out."""
    working = []
    for server in servers:
        say(f"warming up {server.name}")
        try:
            for user, count in boxes.items():
                result = load(generators, server, user, "fetch_meta,fetch_hdrs", 0)
                if result.get("errors"):
                    raise BenchError(f"imap_load.py: {result.get('first_error')}")
                if result.get("exists") != count:
                    raise BenchError(f"SELECT said {result.get('exists')} EXISTS, not {count}")
            working.append(server)
        except BenchError as e:
            failed.append(f"{server.name} failed the warm-up: {e}{tail(server.log, 40)}")
            say(failed[-1])
    return working


def measure(
    args: argparse.Namespace, generators: Generators, servers: Sequence[Any], user: str
) -> Figures:
    """Each round runs every operation on every server, rotating who goes first."""
    figures = Figures()
    hits: dict[tuple[str, str], set[int]] = {}
    for number in range(rounds(args)):
        shift = number % len(servers)
        for server in [*servers[shift:], *servers[:shift]]:
            say(f"round {number + 1}: {server.name}, {user}")
            for operation, keys in OPERATIONS.items():
                result = run_operation(args, generators, server, user, operation, figures)
                if result is None:
                    continue
                if operation == "fetch_meta":
                    figures.add("login_ms", server.name, result.get("login_ms"))
                    figures.add("select_ms", server.name, result.get("select_ms"))
                for key in keys:
                    figures.add(key, server.name, result.get(key))
                for key in HITS:
                    if key in result:
                        hits.setdefault((key, server.name), set()).add(result[key])
    compare_hits(figures, hits)
    return figures


def run_operation(
    args: argparse.Namespace,
    generators: Generators,
    server: Any,
    user: str,
    operation: str,
    figures: Figures,
) -> dict[str, Any] | None:
    """One operation's run; a failure becomes a note under the table."""
    try:
        result = load(generators, server, user, operation, args.store_one)
    except BenchError as e:
        figures.notes.append(f"{server.name} {operation}: {e}")
        return None

    if result.get("errors"):
        figures.notes.append(f"{server.name} {operation}: {result.get('first_error')}")
        return None
    return result


def compare_hits(figures: Figures, hits: dict[tuple[str, str], set[int]]) -> None:
    """A note when the servers' search results differ (a correctness hint)."""
    for key in HITS:
        found = {server: values for (k, server), values in hits.items() if k == key}
        if len({frozenset(v) for v in found.values()}) > 1:
            text = ", ".join(f"{s} {sorted(v)}" for s, v in found.items())
            figures.notes.append(f"{key} differ: {text}")


def load(
    generators: Generators, server: Any, user: str, operations: str, store_one: int
) -> dict[str, Any]:
    """One imap_load.py run of ``operations`` (comma-separated); its result line."""
    arguments = ["--host", LOOPBACK, "--port", str(imap_port(server)), "-n", "1"]
    arguments += ["--user", user, "--password", BENCH_PASSWORD, "--reps", "1"]
    arguments += ["--ops", f"login,select,{operations},logout", "--store-one", str(store_one)]

    try:
        run = generators.run("imap_load.py", arguments, timeout=1800)
    except BenchError as e:
        raise BenchError(str(e).splitlines()[-1] if str(e) else "imap_load.py failed")
    if not run.runs:
        raise BenchError(f"imap_load.py printed no result:\n{run.output}")
    return run.runs[0]


def measure_idle(
    args: argparse.Namespace, generators: Generators, servers: Sequence[Any]
) -> Figures:
    """idle_conns.py once per round per server; mailsuite fresh every round."""
    figures = Figures()
    for number in range(max(1, args.idle_rounds)):
        for server in servers:
            if isinstance(server, Mailsuite):
                server.restart()
            say(f"round {number + 1}: {server.name}, {args.idle} idle connections")
            result = idle(generators, server, args.idle)
            for metric in IDLE_METRICS:
                figures.add(metric.key, server.name, result.get(metric.key))
            if result.get("errors") or result.get("alive_after_settle") != args.idle:
                figures.notes.append(
                    f"{server.name}: {result.get('opened')} opened,"
                    f" {result.get('alive_after_settle')} alive, {result.get('errors')} errors;"
                    f" first: {result.get('first_error')}"
                )
    return figures


def idle(generators: Generators, server: Any, count: int) -> dict[str, Any]:
    arguments = ["--proto", "imap", "--host", LOOPBACK, "--port", str(imap_port(server))]
    arguments += ["--pid", str(server.pid), "--n", str(count), "--reps", "1"]
    arguments += ["--user", IDLE_USER, "--password", BENCH_PASSWORD]
    run = generators.run("idle_conns.py", arguments, timeout=1800)
    if not run.runs:
        raise BenchError(f"idle_conns.py printed no result:\n{run.output}")
    return run.runs[0]


# -- APPEND: a load of our own (imap_load.py has none) ------------------------------


class ImapClient:
    """Just enough IMAP for the APPEND load: LOGIN, APPEND, SELECT, STORE, EXPUNGE.

    Literals are synchronizing (wait for the ``+``), as imaplib and
    Thunderbird send them, so both servers see the same exchange. Every
    read has a deadline, so a server that stops answering fails the run
    instead of hanging it.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.tags = itertools.count(1)

    @classmethod
    async def login(cls, port: int, user: str) -> ImapClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(LOOPBACK, port, limit=1 << 20), APPEND_TIMEOUT
        )
        client = cls(reader, writer)
        greeting = await client.line()
        if not greeting.startswith(b"* OK"):
            raise BenchError(f"greeting: {greeting!r}")
        await client.command(f'LOGIN "{user}" "{BENCH_PASSWORD}"'.encode())
        return client

    async def line(self) -> bytes:
        line = await asyncio.wait_for(self.reader.readline(), APPEND_TIMEOUT)
        if not line.endswith(b"\n"):
            raise BenchError(f"connection closed (last bytes {line[-80:]!r})")
        return line

    async def command(self, text: bytes, literal: bytes | None = None) -> list[bytes]:
        """Send one command (with its literal); the untagged replies, or BenchError."""
        tag = b"a%d" % next(self.tags)
        if literal is None:
            self.writer.write(tag + b" " + text + b"\r\n")
        else:
            self.writer.write(tag + b" " + text + b" {%d}\r\n" % len(literal))
            await self.continuation(tag)
            self.writer.write(literal + b"\r\n")

        untagged = []
        while not (line := await self.line()).startswith(tag + b" "):
            untagged.append(line)
        if not line.startswith(tag + b" OK"):
            raise BenchError(f"{text[:40]!r}: {line.strip()!r}")
        return untagged

    async def continuation(self, tag: bytes) -> None:
        while not (line := await self.line()).startswith(b"+"):
            if line.startswith(tag + b" "):
                raise BenchError(f"literal refused: {line.strip()!r}")

    async def logout(self) -> None:
        with contextlib.suppress(BenchError, OSError, TimeoutError):
            await self.command(b"LOGOUT")
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def append_message(number: int) -> bytes:
    """A plain-text message of about APPEND_SIZE octets, unique per ``number``."""
    header = (
        f"From: Bench Sender <sender@{BENCH_DOMAIN}>\r\n"
        f"To: <{APPEND_USER}>\r\n"
        f"Subject: append benchmark message {number}\r\n"
        f"Date: Fri, 04 Dec 2026 12:00:00 +0000\r\n"
        f"Message-ID: <append-{number}@{BENCH_DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog; throughput, latency, fsync.\r\n"
    return header + line * ((APPEND_SIZE - len(header)) // len(line))


async def append_many(client: ImapClient, numbers: range) -> list[float]:
    """APPEND each message in turn; each one's seconds from command to tagged OK."""
    latencies = []
    for number in numbers:
        message = append_message(number)
        started = time.perf_counter()
        await client.command(rb"APPEND INBOX (\Seen)", message)
        latencies.append(time.perf_counter() - started)
    return latencies


async def append_load(port: int, clients: int, count: int) -> dict[str, float]:
    """``count`` APPENDs split over ``clients`` connections logged in beforehand.

    The clock runs from the first APPEND to the last tagged OK, so the
    (argon2) logins are not in the rate.
    """
    sessions = await asyncio.gather(*(ImapClient.login(port, APPEND_USER) for _ in range(clients)))
    try:
        shares = [range(i, count, clients) for i in range(clients)]
        started = time.perf_counter()
        latencies = await asyncio.gather(
            *(append_many(s, r) for s, r in zip(sessions, shares, strict=True))
        )
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(s.logout() for s in sessions))

    every = [t for one in latencies for t in one]
    return {"per_s": count / elapsed, "p50_ms": statistics.median(every) * 1000}


async def clear_inbox(port: int) -> int:
    """Expunge every message of the APPEND user's INBOX; how many there were.

    Done through IMAP, untimed, so each server keeps its indexes in step
    and every measurement starts from an empty INBOX.
    """
    client = await ImapClient.login(port, APPEND_USER)
    try:
        untagged = await client.command(b"SELECT INBOX")
        exists = [int(u.split()[1]) for u in untagged if u.rstrip().endswith(b" EXISTS")]
        found = exists[-1] if exists else 0
        if found:
            await client.command(rb"STORE 1:* +FLAGS.SILENT (\Deleted)")
            await client.command(b"EXPUNGE")
        return found
    finally:
        await client.logout()


def append_run(server: Any, clients: int, count: int) -> dict[str, float]:
    """One APPEND measurement, then a check that every message is there."""
    port = imap_port(server)
    result = asyncio.run(append_load(port, clients, count))
    found = asyncio.run(clear_inbox(port))
    if found != count:
        raise BenchError(f"{count} APPENDs answered OK but SELECT found {found} messages")
    return result


def measure_appends(args: argparse.Namespace, servers: Sequence[Any]) -> Figures:
    """1 and 4 clients per round on every server, rotating who goes first."""
    figures = Figures()
    working = warm_up_appends(servers, figures)
    for number in range(rounds(args)):
        shift = number % len(working) if working else 0
        for server in [*working[shift:], *working[:shift]]:
            for clients in APPEND_CLIENTS:
                say(f"round {number + 1}: {server.name}, {args.appends} APPENDs x {clients}")
                try:
                    result = append_run(server, clients, args.appends)
                except (BenchError, OSError, TimeoutError) as e:
                    figures.notes.append(
                        f"{server.name} APPEND, {clients} client(s): {failure(e)}"
                    )
                    continue
                figures.add(f"append_{clients}_per_s", server.name, result["per_s"])
                figures.add(f"append_{clients}_p50_ms", server.name, result["p50_ms"])
    return figures


def warm_up_appends(servers: Sequence[Any], figures: Figures) -> list[Any]:
    """An untimed empty-and-append pass; a server that fails it is left out of the table."""
    working = []
    for server in servers:
        say(f"warming up {server.name} for APPEND")
        try:
            asyncio.run(clear_inbox(imap_port(server)))
            append_run(server, 1, APPEND_WARM_UP)
            working.append(server)
        except (BenchError, OSError, TimeoutError) as e:
            figures.notes.append(f"{server.name} failed the APPEND warm-up: {failure(e)}")
            say(figures.notes[-1])
    return working


def failure(error: Exception) -> str:
    """An exception as a note (a timeout's own text is empty)."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


if __name__ == "__main__":
    run_main(main)
