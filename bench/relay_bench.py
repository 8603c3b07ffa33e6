"""Relay throughput: submission to a remote sink's 250, mailsuite beside Postfix.

Twenty submitters (``--connections``) each open one session, STARTTLS, and
then send 10 KB messages for ``rcpt@sink.test`` until ``--messages`` are sent
(1,000 a round, 100 with ``--quick``). Both servers relay ``sink.test`` to
one shared sink on loopback, a small asyncio SMTP server in this file that
answers 250 to every message at once (it writes nothing) and notes when it
acknowledged each one. The headline figure is messages per second from the
first MAIL FROM to the sink's acknowledgement of the last message; beside it
the submission-only rate (to the last 250 after DATA), each message's relay
latency (its 250 to the submitter until the sink's 250), and the server's
CPU per message (its whole process tree, user + system, from the first MAIL
FROM until the sink has everything).

What is the same and what is not:

- **TLS**: both servers offer STARTTLS with the same self-signed P-256
  certificate (made with ``openssl`` for the run); every submission session
  uses it (no certificate check, loopback). Both relay to the sink in the
  clear: the sink offers no STARTTLS.
- **AUTH**: mailsuite's submission port requires it, so the submitters log
  in there with AUTH PLAIN (``bench@bench.test`` / ``pass``). The private
  Postfix has no SASL back end (it would need Dovecot's or Cyrus's), so it
  relays for clients in ``mynetworks`` (127.0.0.0/8) without AUTH. Every
  session connects, STARTTLSes and logs in *before* the clock starts, so
  the figures hold only the messages, not the 20 logins.
- **Next hop**: mailsuite through ``[relay.routes]`` (no MX lookup),
  Postfix through a transport map (``smtp:[127.0.0.1]:PORT``). Each uses its
  own defaults for concurrency towards the sink (mailsuite: 8 messages and
  16 connections at once; Postfix: up to 20 connections, slow start from 5,
  connection reuse when busy) and for durability (both fsync the queued
  message before the 250).

The sink is bounded (line length, message size, connections, idle time) and
listens on 127.0.0.1 only; it is this module run as ``--serve-sink PORT``,
in a process of its own so that it takes no CPU from the submitters.

usage: python -m bench.relay_bench [--quick] [--rounds N] [--messages M]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common import (
    BENCH_PASSWORD,
    BENCH_USER,
    LOOPBACK,
    REPO,
    BenchError,
    Figures,
    Metric,
    add_common_arguments,
    free_port,
    print_comparison,
    rounds,
    run_main,
    say,
    start_process,
    stop_process,
    tail,
    wait_for_ports,
    wanted,
    workspace,
)
from bench.peers import Postfix, start_peer
from bench.suite import Mailsuite

METRICS = (
    Metric("relayed_per_s", "relayed msg/s (to sink's 250)", higher_is_better=True, digits=0),
    Metric("submitted_per_s", "submitted msg/s (250 after DATA)", higher_is_better=True, digits=0),
    Metric("relay_p50_ms", "relay latency p50 ms", higher_is_better=False, digits=0),
    Metric("relay_p99_ms", "relay latency p99 ms", higher_is_better=False, digits=0),
    Metric("server_cpu_ms_per_msg", "server CPU ms/msg", higher_is_better=False, digits=2),
)

#: The domain both servers relay to the sink.
SINK_DOMAIN = "sink.test"
RECIPIENT = f"rcpt@{SINK_DOMAIN}"

#: The header the sink reads to match its acknowledgements to submissions.
ID_HEADER = b"X-Bench-Id"

#: Untimed messages that start every server's processes and caches.
WARM_UP = 50

#: The sink's bounds: it serves only the servers this benchmark starts.
SINK_MAX_LINE = 4096
SINK_MAX_MESSAGE = 16 * 1024 * 1024
SINK_MAX_CONNECTIONS = 200
SINK_IDLE_TIMEOUT = 300.0

#: Seconds between questions to the sink while the last messages are relayed.
POLL_INTERVAL = 0.02


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--messages", type=int, help="per run (default 1000, 100 with --quick)")
    parser.add_argument("--size", type=int, default=10240, help="message size in bytes")
    parser.add_argument("--connections", type=int, default=20, help="concurrent submitters")
    parser.add_argument(
        "--wait",
        type=float,
        default=300,
        help="seconds to wait for the sink to have every message (default: %(default)s)",
    )
    parser.add_argument("--serve-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.messages = args.messages or (100 if args.quick else 1000)
    return args


def main() -> int:
    args = parse_arguments()
    if args.serve_sink:
        with contextlib.suppress(KeyboardInterrupt):  # SIGTERM from the benchmark
            asyncio.run(serve_sink(args.serve_sink))
        return 0

    with workspace(args) as folder, contextlib.ExitStack() as stack:
        sink = Sink(folder)
        stack.callback(sink.stop)
        sink.start()

        servers, failed = start_servers(args, folder, sink.port, stack)
        servers = warm_up(servers, sink, args.size, failed)
        if not servers:
            raise BenchError("no server could be measured" + "".join(f"\n{f}" for f in failed))

        figures = measure(args, servers, sink)
        title = (
            f"Relay, {args.size} B messages, {args.connections} submitters over STARTTLS,"
            f" {args.messages} messages per run, {rounds(args)} round(s)"
        )
        print_comparison(title, METRICS, [s.name for s in servers], figures)

    for failure in failed:
        print(f"\nFAILED: {failure}")
    return 1 if failed else 0


# -- the servers ----------------------------------------------------------------


@dataclass
class Target:
    """A server as the submitters see it."""

    name: str
    port: int
    pid: int | None
    #: (user, password) for AUTH PLAIN, or None to send without logging in.
    login: tuple[str, str] | None
    log: str


def start_servers(
    args: argparse.Namespace, folder: str, sink_port: int, stack: contextlib.ExitStack
) -> tuple[list[Target], list[str]]:
    """mailsuite's submission port and Postfix's smtpd, both relaying sink.test to the sink."""
    certificate, key = make_certificate(folder)
    routes = {SINK_DOMAIN: sink_port}
    servers: list[Target] = []
    failed: list[str] = []

    if wanted(args, "mailsuite"):
        suite = Mailsuite(folder, ["submission"], routes=routes)
        stack.callback(suite.stop)
        try:
            install_certificate(suite.root, certificate, key)
            suite.start()
            login = (BENCH_USER, BENCH_PASSWORD)
            port = suite.port("submission")
            servers.append(Target(suite.name, port, suite.pid, login, suite.log))
        except BenchError as e:
            failed.append(f"mailsuite did not start: {e}")
            say(failed[-1])

    if wanted(args, "postfix"):
        make = lambda: Postfix(folder, BENCH_USER, routes=routes, tls=(certificate, key))  # noqa: E731
        postfix = start_peer(stack, make, "postfix")
        if postfix is not None:
            servers.append(Target(postfix.name, postfix.port, postfix.pid, None, postfix.log))
    return servers, failed


def make_certificate(folder: str) -> tuple[str, str]:
    """One self-signed P-256 certificate (the kind mailsuite makes) for both servers."""
    tls = os.path.join(folder, "tls")
    os.makedirs(tls, exist_ok=True)
    certificate, key = os.path.join(tls, "cert.pem"), os.path.join(tls, "key.pem")
    argv = [
        "openssl", "req", "-x509", "-nodes", "-days", "30",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", key, "-out", certificate, "-subj", "/CN=mail.bench.test",
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as e:
        raise BenchError("openssl is needed to make the servers' certificate") from e
    if done.returncode != 0:
        raise BenchError(f"openssl failed: {' '.join(argv)}\n{done.stderr}")
    return certificate, key


def install_certificate(root: str, certificate: str, key: str) -> None:
    """Give mailsuite the shared pair where its config looks (``tls/`` beside it)."""
    tls = os.path.join(root, "tls")
    os.makedirs(tls, exist_ok=True)
    for source, name in ((certificate, "cert.pem"), (key, "key.pem")):
        with open(source, "rb") as f:
            data = f.read()
        path = os.path.join(tls, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(data)


def warm_up(servers: list[Target], sink: Sink, size: int, failed: list[str]) -> list[Target]:
    """An untimed burst per server; one that does not relay all of it is left out."""
    working = []
    for server in servers:
        say(f"warming up {server.name}")
        result = run(server, sink.port, WARM_UP, size, connections=5, wait=60)
        if result["errors"] or result["relayed"] != WARM_UP:
            failed.append(
                f"{server.name} did not relay {WARM_UP} warm-up messages: {result['accepted']}"
                f" accepted, {result['relayed']} at the sink, first error:"
                f" {result['first_error']}{tail(server.log, 40)}"
            )
            say(failed[-1])
            continue
        working.append(server)
    return working


def measure(args: argparse.Namespace, servers: Sequence[Target], sink: Sink) -> Figures:
    """Each round runs every server once, starting with a different one each time."""
    figures = Figures()
    for number in range(rounds(args)):
        shift = number % len(servers)
        for server in [*servers[shift:], *servers[:shift]]:
            say(f"round {number + 1}: {server.name}")
            result = run(server, sink.port, args.messages, args.size, args.connections, args.wait)
            say(f"  {summary(result)}")
            record(figures, server.name, result)
    return figures


def summary(result: dict[str, Any]) -> str:
    shown = ("accepted", "relayed", "relayed_per_s", "submitted_per_s", "server_cpu_ms_per_msg")
    return ", ".join(f"{k} {result.get(k)}" for k in shown)


def record(figures: Figures, name: str, result: dict[str, Any]) -> None:
    for metric in METRICS:
        figures.add(metric.key, name, result.get(metric.key))

    if result["errors"]:
        figures.notes.append(
            f"{name}: {result['errors']} submission error(s) of {result['messages']};"
            f" first: {result['first_error']}"
        )
    if result["relayed"] < result["accepted"]:
        figures.notes.append(
            f"{name}: only {result['relayed']} of {result['accepted']} accepted messages"
            " reached the sink within the wait"
        )
    if result["duplicates"]:
        figures.notes.append(f"{name}: the sink got {result['duplicates']} message(s) twice")


def run(
    server: Target, sink_port: int, messages: int, size: int, connections: int, wait: float
) -> dict[str, Any]:
    """One timed run against ``server``: its figures and counts."""
    load = Load(server, sink_port, messages, size, connections, wait)
    try:
        return asyncio.run(load.run())
    except (OSError, asyncio.IncompleteReadError, SMTPError) as e:
        raise BenchError(f"{server.name}: {e!r}{tail(server.log, 40)}") from e


# -- the submitters ---------------------------------------------------------------


class SMTPError(Exception):
    """A reply the submitter did not expect; the message holds it."""


@dataclass
class Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass
class Load:
    """``connections`` logged-in sessions sending ``messages`` between them."""

    server: Target
    sink_port: int
    messages: int
    size: int
    connections: int
    wait: float
    accepted: dict[int, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    async def run(self) -> dict[str, Any]:
        sessions = await asyncio.gather(*(self.open() for _ in range(self.connections)))
        control = await SinkControl.open(self.sink_port)
        await control.reset()

        queue: asyncio.Queue[int] = asyncio.Queue()
        for number in range(self.messages):
            queue.put_nowait(number)
        cpu_before, started = cpu_seconds(self.server.pid), time.monotonic()
        await asyncio.gather(*(self.submit(s, queue) for s in sessions))

        acknowledged = await control.wait_for(len(self.accepted), started + self.wait)
        cpu = cpu_seconds(self.server.pid) - cpu_before
        duplicates = await control.duplicates()
        await control.close()
        for session in sessions:
            await self.quit(session)
        return self.figures(started, acknowledged, cpu, duplicates)

    async def open(self) -> Session:
        """Connect, EHLO, STARTTLS, EHLO again and log in if the server wants it."""
        reader, writer = await asyncio.open_connection(LOOPBACK, self.server.port)
        session = Session(reader, writer)
        await expect(session, None, 220)
        if b"STARTTLS" not in await expect(session, b"EHLO submitter.bench.test", 250):
            raise SMTPError(f"{self.server.name} offers no STARTTLS")

        await expect(session, b"STARTTLS", 220)
        await writer.start_tls(client_tls())
        await expect(session, b"EHLO submitter.bench.test", 250)
        if self.server.login:
            user, password = self.server.login
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            await expect(session, f"AUTH PLAIN {token}".encode(), 235)
        return session

    async def submit(self, session: Session, queue: asyncio.Queue[int]) -> None:
        """Send messages from ``queue`` until it is empty; note each one's 250."""
        while not queue.empty():
            number = queue.get_nowait()
            try:
                await expect(session, f"MAIL FROM:<{BENCH_USER}>".encode(), 250)
                await expect(session, f"RCPT TO:<{RECIPIENT}>".encode(), 250, 251)
                await expect(session, b"DATA", 354)
                session.writer.write(message(number, self.size))
                await expect(session, None, 250)
                self.accepted[number] = time.monotonic()
            except SMTPError as e:
                self.errors.append(str(e))
                await expect(session, b"RSET", 250)

    async def quit(self, session: Session) -> None:
        with contextlib.suppress(OSError, SMTPError, asyncio.IncompleteReadError):
            await expect(session, b"QUIT", 221)
        session.writer.close()

    def figures(
        self, started: float, acknowledged: dict[int, float], cpu: float, duplicates: int
    ) -> dict[str, Any]:
        relayed = [n for n in self.accepted if n in acknowledged]
        latencies = sorted(acknowledged[n] - self.accepted[n] for n in relayed)
        result: dict[str, Any] = {
            "messages": self.messages,
            "accepted": len(self.accepted),
            "relayed": len(relayed),
            "errors": len(self.errors),
            "first_error": self.errors[0] if self.errors else None,
            "duplicates": duplicates,
        }
        if self.accepted:
            last = max(self.accepted.values())
            result["submitted_per_s"] = len(self.accepted) / (last - started)
        if relayed and len(relayed) == len(self.accepted):
            last = max(acknowledged[n] for n in relayed)
            result["relayed_per_s"] = len(relayed) / (last - started)
            result["relay_p50_ms"] = 1000 * percentile(latencies, 0.50)
            result["relay_p99_ms"] = 1000 * percentile(latencies, 0.99)
            if self.server.pid:
                result["server_cpu_ms_per_msg"] = 1000 * cpu / len(relayed)
        return result


async def expect(session: Session, command: bytes | None, *codes: int) -> bytes:
    """Send ``command`` (if any) and read the whole reply; SMTPError unless one of ``codes``."""
    if command is not None:
        session.writer.write(command + b"\r\n")
    lines = []
    while True:
        line = await session.reader.readline()
        if not line:
            raise SMTPError(f"connection closed after {command!r}")
        lines.append(line)
        if line[3:4] != b"-":
            break
    reply = b"".join(lines)
    if not line[:3].isdigit() or int(line[:3]) not in codes:
        raise SMTPError(f"{command!r} answered {reply!r}")
    return reply


def client_tls() -> ssl.SSLContext:
    """TLS without certificate checks: the servers are ours, on loopback."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


#: Filler lines (no leading dot, so no dot-stuffing), one body per size.
_BODIES: dict[int, bytes] = {}
_LINE = b"relay bench lorem ipsum dolor sit amet consectetur adipiscing elit sed do\r\n"


def message(number: int, size: int) -> bytes:
    """A plain-text message of about ``size`` bytes, with its number in X-Bench-Id."""
    header = (
        f"From: <{BENCH_USER}>\r\nTo: <{RECIPIENT}>\r\nSubject: relay bench {number}\r\n"
        f"Message-ID: <{number}.{time.time_ns()}@submitter.bench.test>\r\n"
        "Date: Fri, 04 Dec 2026 12:00:00 +0000\r\n"
        f"{ID_HEADER.decode()}: {number}\r\n\r\n"
    ).encode()
    if size not in _BODIES:
        _BODIES[size] = _LINE * max(1, (size - len(header)) // len(_LINE))
    return header + _BODIES[size] + b".\r\n"


def percentile(ordered: Sequence[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (and their reaped children)."""
    if pid is None:
        return 0.0
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                children.setdefault(int(_stat(int(name))[1]), []).append(int(name))

    ticks, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            ticks += sum(int(x) for x in _stat(current)[11:15])
        todo.extend(children.get(current, []))
    return ticks / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (fields 3 onwards)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


# -- the sink -------------------------------------------------------------------------


class Sink:
    """This module's ``--serve-sink``, in a process of its own on a loopback port."""

    def __init__(self, folder: str) -> None:
        self.port = free_port()
        self.log = os.path.join(folder, "sink.log")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "bench.relay_bench", "--serve-sink", str(self.port)]
        env = dict(os.environ, PYTHONPATH=REPO)
        self.process = start_process(argv, self.log, env=env, cwd=REPO)
        wait_for_ports([self.port], "sink", self.log, self.process)
        say(f"sink: pid {self.process.pid}, smtp on {LOOPBACK}:{self.port}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


class SinkControl:
    """The benchmark's own session with the sink: XRESET, XCOUNT, XTIMES."""

    def __init__(self, session: Session) -> None:
        self.session = session

    @classmethod
    async def open(cls, port: int) -> SinkControl:
        reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=SINK_MAX_MESSAGE)
        control = cls(Session(reader, writer))
        await expect(control.session, None, 220)
        return control

    async def reset(self) -> None:
        await expect(self.session, b"XRESET", 250)

    async def wait_for(self, count: int, deadline: float) -> dict[int, float]:
        """When the sink acknowledged each message, once it has ``count`` (or at the deadline)."""
        while time.monotonic() < deadline:
            reply = await expect(self.session, b"XCOUNT", 250)
            if int(reply[4:].split()[0]) >= count:
                break
            await asyncio.sleep(POLL_INTERVAL)
        reply = await expect(self.session, b"XTIMES", 250)
        return {int(k): v for k, v in json.loads(reply[4:])["acknowledged"].items()}

    async def duplicates(self) -> int:
        reply = await expect(self.session, b"XTIMES", 250)
        found: int = json.loads(reply[4:])["duplicates"]
        return found

    async def close(self) -> None:
        await expect(self.session, b"QUIT", 221)
        self.session.writer.close()


@dataclass
class SinkState:
    """What the sink acknowledged since the last XRESET."""

    acknowledged: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0
    connections: int = 0


async def serve_sink(port: int) -> None:
    """Answer 250 to everything on ``127.0.0.1:port`` and note when each message ended."""
    state = SinkState()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            if state.connections > SINK_MAX_CONNECTIONS:
                writer.write(b"421 4.7.0 too many connections\r\n")
                return
            await asyncio.wait_for(sink_session(state, reader, writer), SINK_IDLE_TIMEOUT)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            state.connections -= 1
            writer.close()

    server = await asyncio.start_server(connected, LOOPBACK, port, limit=SINK_MAX_MESSAGE)
    async with server:
        await server.serve_forever()


#: The sink's replies to everything but DATA, the end of a message and its own commands.
SINK_REPLIES = {
    b"HELO": b"250 sink.test\r\n",
    b"EHLO": b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 16777216\r\n",
    b"MAIL": b"250 2.1.0 ok\r\n",
    b"RCPT": b"250 2.1.5 ok\r\n",
    b"RSET": b"250 2.0.0 ok\r\n",
    b"NOOP": b"250 2.0.0 ok\r\n",
}


async def sink_session(
    state: SinkState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One SMTP session with the sink; the whole session is bounded by SINK_IDLE_TIMEOUT."""
    writer.write(b"220 sink.test ESMTP benchmark sink\r\n")
    while True:
        line = await reader.readline()
        if not line or len(line) > SINK_MAX_LINE:
            return
        verb = line.split(None, 1)[0].upper() if line.strip() else b""
        if verb == b"QUIT":
            writer.write(b"221 2.0.0 bye\r\n")
            return
        if verb == b"DATA":
            writer.write(b"354 end with <CRLF>.<CRLF>\r\n")
            await writer.drain()
            writer.write(await sink_data(state, reader))
        else:
            writer.write(sink_reply(state, verb))
        await writer.drain()


def sink_reply(state: SinkState, verb: bytes) -> bytes:
    if verb in SINK_REPLIES:
        return SINK_REPLIES[verb]
    if verb == b"XRESET":
        state.acknowledged.clear()
        state.duplicates = 0
        return b"250 reset\r\n"
    if verb == b"XCOUNT":
        return f"250 {len(state.acknowledged)}\r\n".encode()
    if verb == b"XTIMES":
        found = {"acknowledged": state.acknowledged, "duplicates": state.duplicates}
        return f"250 {json.dumps(found)}\r\n".encode()
    return b"502 5.5.1 not implemented\r\n"


async def sink_data(state: SinkState, reader: asyncio.StreamReader) -> bytes:
    """Read the message (bounded by the reader's limit) and note its X-Bench-Id."""
    first = await reader.readline()
    data = first if first == b".\r\n" else first + await reader.readuntil(b"\r\n.\r\n")
    now = time.monotonic()

    number = bench_id(data)
    if number is not None:
        if number in state.acknowledged:
            state.duplicates += 1
        else:
            state.acknowledged[number] = now
    return b"250 2.0.0 taken\r\n"


def bench_id(data: bytes) -> int | None:
    header = data.split(b"\r\n\r\n", 1)[0]
    for line in header.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == ID_HEADER.lower() and value.strip().isdigit():
            return int(value)
    return None


if __name__ == "__main__":
    run_main(main)
