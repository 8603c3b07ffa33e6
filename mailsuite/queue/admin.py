"""The operator's view of the queue: ``mailsuite queue list|show|retry|delete|summary``.

These work on the spool's files directly, beside a running server. A
running relayer rereads the envelopes at least once a minute, so ``retry``
takes effect within a minute; ``delete`` of an entry being delivered right
now wins, as the relayer never writes back an envelope that is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections import Counter

from mailsuite import durable
from mailsuite.config import Config
from mailsuite.dkim import header_section
from mailsuite.queue import states
from mailsuite.queue.spool import QueueEntry, Spool, check_id

EXIT_OK = 0
EXIT_FAILED = 1


class QueueError(Exception):
    """A queue command could not do what was asked; the text is for the operator."""


def open_spool(config: Config) -> Spool:
    return Spool(config.queue, None)


def find(spool: Spool, queue_id: str) -> QueueEntry:
    try:
        check_id(queue_id)
    except ValueError:
        raise QueueError(f"{queue_id!r} is not a queue id (see 'mailsuite queue list')")
    for entry in spool.entries():
        if entry.id == queue_id:
            return entry
    raise QueueError(f"there is no queue entry {queue_id}")


def age(seconds: float) -> str:
    """``2d3h``, ``3h12m``, ``45m``, ``10s``: short and sortable by eye."""
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def describe(entry: QueueEntry, now: float) -> list[str]:
    """An entry as a line for the message and one per recipient."""
    lines = [f"{entry.id}  {age(now - entry.created):>6}  <{entry.sender}>"]
    for r in entry.recipients:
        when = ""
        if r.state in states.WAITING:
            when = "due now" if r.next_attempt <= now else f"next in {age(r.next_attempt - now)}"
        reply = f"  {r.last_reply}" if r.last_reply else ""
        lines.append(f"    {r.address}  {r.state}  attempts={r.attempts}  {when}".rstrip() + reply)
    return lines


def list_lines(spool: Spool, now: float) -> list[str]:
    lines: list[str] = []
    for entry in spool.entries():
        lines.extend(describe(entry, now))
    return lines


def summary(spool: Spool, now: float) -> str:
    """ "N messages waiting: x deferred, y pending; oldest 3h12m"."""
    entries = spool.entries()
    if not entries:
        return "the queue is empty"
    kinds = Counter(_message_state(e) for e in entries)
    parts = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    oldest = age(now - min(e.created for e in entries))
    noun = "message" if len(entries) == 1 else "messages"
    return f"{len(entries)} {noun} waiting: {parts}; oldest {oldest}"


def _message_state(entry: QueueEntry) -> str:
    """A message is "deferred" once any recipient was tried and is still waiting."""
    found = {r.state for r in entry.recipients}
    if found & {states.DEFERRED, states.DELAYED}:
        return "deferred"
    if states.PENDING in found:
        return "pending"
    return "finishing"


def show(spool: Spool, queue_id: str, now: float) -> str:
    """The envelope and the message's header."""
    entry = find(spool, queue_id)
    with open(spool.message_path(queue_id), "rb") as f:
        header = header_section(f.read(256 * 1024))
    text = header.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
    return "\n".join([*describe(entry, now), "", text])


def retry(spool: Spool, queue_id: str | None, now: float) -> int:
    """Make waiting recipients (of one entry, or all) due now; returns how many."""
    entries = [find(spool, queue_id)] if queue_id else spool.entries()
    count = 0
    for entry in entries:
        waiting = [r for r in entry.recipients if r.state in states.WAITING]
        for recipient in waiting:
            recipient.next_attempt = now
        if waiting:
            durable.replace_file(spool.envelope_path(entry.id), entry.to_json())
            count += len(waiting)
    return count


def delete(spool: Spool, queue_id: str) -> None:
    """Remove an entry without delivering or bouncing it."""
    find(spool, queue_id)
    for path in (spool.envelope_path(queue_id), spool.message_path(queue_id)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    durable.DISK.fsync_directory(spool.path)


# -- mailsuite queue ... -----------------------------------------------------------


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mailsuite queue`` and its commands (cli.COMMAND_GROUPS)."""
    queue = groups.add_parser("queue", help="look at and manage the outbound queue")
    commands = queue.add_subparsers(title="queue commands", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="every queued message and its recipients")
    listing.set_defaults(handler=_list_command)

    show_parser = commands.add_parser("show", help="one message's envelope and header")
    show_parser.add_argument("id")
    show_parser.set_defaults(handler=_show_command)

    retry_parser = commands.add_parser("retry", help="try again now (one message, or all)")
    retry_parser.add_argument("id", nargs="?")
    retry_parser.set_defaults(handler=_retry_command)

    delete_parser = commands.add_parser("delete", help="drop a message without a bounce")
    delete_parser.add_argument("id")
    delete_parser.set_defaults(handler=_delete_command)

    summary_parser = commands.add_parser("summary", help="one line: how much waits, how old")
    summary_parser.set_defaults(handler=_summary_command)


def _run(action: str, config: Config, args: argparse.Namespace) -> int:
    if not os.path.isdir(config.queue):
        # Nothing was ever queued here; do not create the folder from the CLI.
        print(f"the queue is empty (there is no {config.queue} yet)")
        return EXIT_OK if action in ("list", "summary", "retry") else EXIT_FAILED
    spool = open_spool(config)
    now = time.time()
    try:
        if action == "list":
            lines = list_lines(spool, now)
            print("\n".join(lines) if lines else "the queue is empty")
            print(summary(spool, now))
        elif action == "show":
            print(show(spool, args.id, now))
        elif action == "retry":
            count = retry(spool, args.id, now)
            print(f"{count} recipients due now; a running server sends them within a minute")
        elif action == "delete":
            delete(spool, args.id)
            print(f"deleted {args.id}")
        else:
            print(summary(spool, now))
    except QueueError as e:
        print(f"mailsuite: {e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _list_command(args: argparse.Namespace, config: Config) -> int:
    return _run("list", config, args)


def _show_command(args: argparse.Namespace, config: Config) -> int:
    return _run("show", config, args)


def _retry_command(args: argparse.Namespace, config: Config) -> int:
    return _run("retry", config, args)


def _delete_command(args: argparse.Namespace, config: Config) -> int:
    return _run("delete", config, args)


def _summary_command(args: argparse.Namespace, config: Config) -> int:
    return _run("summary", config, args)
