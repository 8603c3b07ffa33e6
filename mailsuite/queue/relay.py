"""The relayer: takes due messages from the spool and delivers them.

Each scan reads the envelopes, starts every entry with something to do (a
recipient due, a bounce owed, nothing left), and sleeps until the next
retry time, at most ``SCAN_INTERVAL`` (so ``mailsuite queue retry`` from the
command line takes effect within a minute). ``kick()`` wakes it at once.

The relayer is registered as the spool's listener, so every ``enqueue`` (the
SMTP server's, or a bounce of ours) reaches it without the SMTP server
knowing it. A new entry is put on a ready list and started from there as a
slot frees, reading only its own envelope: listing the whole spool on every
enqueue and every finished delivery made a burst quadratic in the backlog.
The full scan still runs at every retry time and at least once a minute.

Crash safety. A recipient is recorded ``delivered`` durably as soon as the
remote's reply to the final dot arrives, before QUIT or anything else, and a
recipient recorded ``delivered`` is never sent again. If we crash between
the remote's 250 and our fsync, the message goes again after restart: that
window is inherent to SMTP (RFC 1047) and is kept as small as one envelope
write. Likewise a bounce is queued before the recipient is marked
``bounced``, so a crash in between can send one bounce twice, never none.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsuite.config import Config
from mailsuite.context import ServiceContext
from mailsuite.dkim import Signer, header_section
from mailsuite.queue import dsn, routes, states
from mailsuite.queue.delivery import (
    Deliverer,
    Interrupted,
    LocalUsers,
    OutboundMessage,
    password_file_problem,
)
from mailsuite.queue.mx import LazyResolver, MXResolver
from mailsuite.queue.spool import QueuedRecipient, QueueEntry
from mailsuite.queue.states import Outcome
from mailsuite.queue.tlsclient import ClientTLS
from mailsuite.store import StoreError, to_crlf

log = Logger()

#: Seconds between scans of the spool when nothing is due sooner.
SCAN_INTERVAL = 60.0
#: Messages being delivered at once (a burst of submissions waits for these).
MAX_ACTIVE = 32
#: Transactions (connections) open at once, over all messages; Postfix allows
#: 20 per destination by default.
MAX_CONNECTIONS = 20
#: The shortest sleep between scans that were not asked for with ``kick()``.
MIN_WAKE = 1.0
#: More Received: fields than this means a loop (RFC 5321 6.3 suggests 100;
#: real loops pass 50 long before a legitimate path does).
MAX_RECEIVED = 50


@dataclass
class MessageInfo:
    """What the relayer learns from the queued message before sending it."""

    size: int
    eight_bit: bool
    received: int
    header: bytes
    signature: bytes | None


class EntryGone(Exception):
    """The operator deleted the entry while it was being delivered."""


class RelayService(service.Service):
    """Delivers the spool's messages; a ``twisted.application`` service."""

    name = "relay"

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        deliverer: Deliverer | None = None,
        signer: Signer | None = None,
        local_users: LocalUsers | None = None,
    ) -> None:
        self.ctx = ctx
        self.config: Config = ctx.config
        self.reactor = ctx.reactor
        self.spool = ctx.spool
        self.maillog = ctx.maillog
        self.warnings = routes.check(self.config)
        self.local_users = local_users or _local_users(ctx)
        self.deliverer = deliverer or self._make_deliverer()
        self.signer = signer or Signer(self.config)
        self._active: dict[str, defer.Deferred[None]] = {}
        self._unsaved: dict[str, QueueEntry] = {}
        self._hold_until: dict[str, float] = {}
        self._remote: dict[tuple[str, str], str] = {}
        self._wake: Any = None
        self._wake_at: float | None = None
        #: Entries that may be due, oldest first, started as slots free up.
        self._ready: dict[str, None] = {}
        self._dispatch_call: Any = None
        #: Entries removed as soon as their last recipient was delivered.
        self._dropped: set[str] = set()
        self._connections = defer.DeferredSemaphore(MAX_CONNECTIONS)

    def _make_deliverer(self) -> Deliverer:
        resolver = MXResolver(LazyResolver(self.reactor, self.config.relay.nameservers))
        return Deliverer(
            self.config,
            self.reactor,
            resolver,
            ClientTLS(),
            store=self.ctx.store,
            local_users=self.local_users,
            reuse_connections=True,
        )

    # -- service life ---------------------------------------------------------

    def startService(self) -> None:
        """Clear what a crash left half-written, then resume the queue."""
        super().startService()
        if not hasattr(self.spool, "entries"):
            # A stand-in spool (tests of other parts) holds nothing to send.
            log.info("the spool cannot be listed; the relayer stays idle")
            return
        for warning in self.warnings:
            log.warn("{warning}", warning=warning)
        self._check_password_file()

        resume = getattr(self.deliverer, "resume", None)
        if resume is not None:
            resume()
        recover = getattr(self.spool, "recover", None)
        if recover is not None:
            recover()
        add_listener = getattr(self.spool, "add_listener", None)
        if add_listener is not None:
            add_listener(self._enqueued)
        self._schedule(0)

    def stopService(self) -> defer.Deferred[None]:
        """Stop scanning, cut open connections, wait for the records to be written."""
        super().stopService()
        remove_listener = getattr(self.spool, "remove_listener", None)
        if remove_listener is not None:
            remove_listener(self._enqueued)
        self._cancel_wake()
        if self._dispatch_call is not None and self._dispatch_call.active():
            self._dispatch_call.cancel()
        self._dispatch_call = None
        self.deliverer.abort_all()
        close = getattr(self.deliverer, "close", None)
        if close is not None:
            close()
        active = list(self._active.values())
        return defer.DeferredList(active, consumeErrors=True).addCallback(lambda _: None)

    def kick(self) -> None:
        """Look at the spool now: something was just queued."""
        self._schedule(0)

    def _enqueued(self, queue_id: str) -> None:
        self._ready[queue_id] = None
        self._dispatch_soon()

    def _check_password_file(self) -> None:
        relay = self.config.relay
        if relay.smarthost and relay.smarthost_user:
            problem = password_file_problem(relay.smarthost_password_file)
            if problem:
                log.warn("relay.smarthost_password_file: {problem}", problem=problem)

    # -- scheduling -----------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        if not self.running:
            return
        at = self.reactor.seconds() + max(delay, 0)
        if self._wake is not None and self._wake_at is not None and self._wake_at <= at:
            return
        self._cancel_wake()
        self._wake_at = at
        self._wake = self.reactor.callLater(max(delay, 0), self._scan)

    def _cancel_wake(self) -> None:
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        self._wake = None
        self._wake_at = None

    def _scan(self) -> None:
        self._wake = None
        self._wake_at = None
        now = self.reactor.seconds()
        try:
            entries = self._current_entries()
        except Exception:
            log.failure("cannot read the queue {path}", path=self.config.queue)
            self._schedule(SCAN_INTERVAL)
            return

        waiting = [e for e in entries if e.id not in self._active]
        for entry in waiting:
            if not self._wanted(entry, now):
                continue
            if len(self._active) < MAX_ACTIVE:
                self._ready.pop(entry.id, None)
                self._start(entry)
            else:
                self._ready[entry.id] = None

        self._schedule(self._next_wake(waiting, now) - now)

    def _wanted(self, entry: QueueEntry, now: float) -> bool:
        """Whether ``entry`` has something to do now and is not held back."""
        if self._hold_until.get(entry.id, 0) > now:
            return False
        return states.needs_attention(entry, now) or self._delay_notice_due(entry, now)

    def _dispatch_soon(self) -> None:
        if self.running and self._dispatch_call is None:
            self._dispatch_call = self.reactor.callLater(0, self._dispatch)

    def _dispatch(self) -> None:
        """Start ready entries while slots are free, each from its own envelope."""
        self._dispatch_call = None
        load = getattr(self.spool, "entry", None)
        if load is None:
            # A stand-in spool that can only be listed.
            self._ready.clear()
            self._scan()
            return

        now = self.reactor.seconds()
        while self._ready and len(self._active) < MAX_ACTIVE:
            queue_id = next(iter(self._ready))
            del self._ready[queue_id]
            if queue_id in self._active:
                continue
            try:
                entry = self._unsaved.get(queue_id) or load(queue_id)
            except Exception:
                log.failure("cannot read queue entry {id}", id=queue_id)
                continue
            if entry is not None and self._wanted(entry, now):
                self._start(entry)

    def _current_entries(self) -> list[QueueEntry]:
        """The spool's envelopes, with our unsaved changes laid over them."""
        entries = self.spool.entries()
        on_disk = {e.id for e in entries}
        for queue_id in list(self._unsaved):
            if queue_id not in on_disk:
                del self._unsaved[queue_id]
        return [self._unsaved.get(e.id, e) for e in entries]

    def _next_wake(self, entries: list[QueueEntry], now: float) -> float:
        """The next retry or delay-notice time, at most a scan interval away.

        Never "now": whatever is due now was started by this scan, or waits
        for a free slot, and a finished entry schedules a scan itself. So an
        entry that cannot be started cannot make the relayer spin.
        """
        wake = now + SCAN_INTERVAL
        for entry in entries:
            held = self._hold_until.get(entry.id, 0.0)
            if held > now:
                wake = min(wake, held)
                continue
            times = [r.next_attempt for r in entry.recipients if r.state in states.WAITING]
            if entry.sender and any(r.state == states.DEFERRED for r in entry.recipients):
                times.append(entry.created + self.config.relay.delay_notice)
            wake = min([wake, *times])
        return max(wake, now + MIN_WAKE)

    def _start(self, entry: QueueEntry) -> None:
        d = defer.ensureDeferred(self._process(entry))
        self._active[entry.id] = d

        def failed(failure: Any) -> None:
            if failure.check(EntryGone):
                log.info("queue entry {id} was deleted by the operator", id=entry.id)
                return
            log.failure("delivering queue entry {id} failed", failure, id=entry.id)
            self._hold_until[entry.id] = self.reactor.seconds() + SCAN_INTERVAL

        def finished(_: Any) -> None:
            del self._active[entry.id]
            self._dispatch_soon()
            if not all(r.state in states.DONE for r in entry.recipients):
                now = self.reactor.seconds()
                self._schedule(self._next_wake([entry], now) - now)

        d.addErrback(failed)
        d.addBoth(finished)

    # -- one entry ------------------------------------------------------------

    async def _process(self, entry: QueueEntry) -> None:
        """Deliver what is due, send the bounces and notices owed, drop it when done."""
        self._hold_until.pop(entry.id, None)
        now = self.reactor.seconds()
        due = [r for r in entry.recipients if states.due(r, now)]
        info: MessageInfo | None = None

        if due:
            info = await self._inspect(entry)
            await self._deliver_due(entry, due, info)

        if self.running:
            await self._notify(entry, info)

        if all(r.state in states.DONE for r in entry.recipients):
            if entry.id not in self._dropped:
                await self.spool.remove(entry.id)
                log.info("queue entry {id} is done", id=entry.id)
            self._forget(entry.id)

    async def _deliver_due(
        self, entry: QueueEntry, due: list[QueuedRecipient], info: MessageInfo
    ) -> None:
        now = self.reactor.seconds()
        addresses = list(dict.fromkeys(r.address for r in due))

        if info.received > MAX_RECEIVED:
            reply = f"554 5.4.6 mail loop: {info.received} Received: fields"
            await self._record(entry, {a: states.failed(reply) for a in addresses})
            return
        if now >= self._expires(entry):
            outcomes = {r.address: states.failed(states.expired_reply(r.last_reply)) for r in due}
            await self._record(entry, outcomes)
            return

        message = OutboundMessage(
            queue_id=entry.id,
            sender=entry.sender,
            path=self.spool.message_path(entry.id),
            size=info.size + len(info.signature or b""),
            eight_bit=info.eight_bit,
            prefix=info.signature or b"",
        )
        groups = routes.group(self.config, addresses)
        results = await defer.DeferredList(
            [
                defer.ensureDeferred(self._deliver_group(entry, destination, members, message))
                for destination, members in groups
            ],
            consumeErrors=True,
        )
        for _, result in results:
            if isinstance(result, Failure):
                result.raiseException()

    async def _deliver_group(
        self,
        entry: QueueEntry,
        destination: routes.Destination,
        recipients: list[str],
        message: OutboundMessage,
    ) -> None:
        recorded: set[str] = set()

        async def on_outcomes(outcomes: dict[str, Outcome]) -> None:
            # The remote answered the final dot: make it durable before QUIT.
            recorded.update(outcomes)
            await self._record(entry, outcomes)

        try:
            outcomes = await self._connections.run(
                lambda: defer.ensureDeferred(
                    self.deliverer.deliver(destination, recipients, message, on_outcomes)
                )
            )
        except Interrupted:
            return
        except EntryGone:
            raise
        except Exception:
            log.failure("delivery to {destination} failed", destination=str(destination))
            outcomes = {
                r: states.deferred("451 4.3.0 internal error while sending") for r in recipients
            }

        rest = {a: o for a, o in outcomes.items() if a not in recorded}
        if rest:
            await self._record(entry, rest)

    async def _record(self, entry: QueueEntry, outcomes: dict[str, Outcome]) -> None:
        """Apply ``outcomes`` to the envelope and write it durably at once."""
        now = self.reactor.seconds()
        expires = self._expires(entry)
        for recipient in entry.recipients:
            outcome = outcomes.get(recipient.address)
            if outcome is None or recipient.state not in states.WAITING:
                continue
            states.apply(recipient, outcome, now, self.config.relay.retry, expires)
            if outcome.remote:
                self._remote[(entry.id, recipient.address)] = outcome.remote
            self._log_outcome(entry, recipient, outcome)

        if all(r.state == states.DELIVERED for r in entry.recipients):
            # Removing the entry records the deliveries as durably as a
            # rewritten envelope would, in one directory fsync instead of
            # a file fsync, a rename and a directory fsync, and a removal.
            await self._drop(entry)
            return
        await self._save(entry)

    async def _drop(self, entry: QueueEntry) -> None:
        """Remove a fully delivered entry; on failure keep it in memory as delivered."""
        if not os.path.exists(self.spool.envelope_path(entry.id)):
            self._unsaved.pop(entry.id, None)
            raise EntryGone(entry.id)
        try:
            await self.spool.remove(entry.id)
        except Exception:
            self._unsaved[entry.id] = entry
            raise
        self._dropped.add(entry.id)
        log.info("queue entry {id} is done", id=entry.id)

    def _log_outcome(
        self, entry: QueueEntry, recipient: QueuedRecipient, outcome: Outcome
    ) -> None:
        reply = recipient.last_reply or outcome.reply
        if recipient.state == states.DELIVERED:
            self.maillog.delivered(
                queue_id=entry.id, recipient=recipient.address, reply=reply, tls=outcome.tls
            )
        elif recipient.state == states.FAILED:
            self.maillog.bounced(queue_id=entry.id, recipient=recipient.address, reply=reply)
        else:
            self.maillog.deferred(
                queue_id=entry.id,
                recipient=recipient.address,
                reply=reply,
                retry_at=recipient.next_attempt,
            )

    async def _save(self, entry: QueueEntry) -> None:
        """Write the envelope; on failure keep it in memory so nothing is resent."""
        if not os.path.exists(self.spool.envelope_path(entry.id)):
            self._unsaved.pop(entry.id, None)
            raise EntryGone(entry.id)
        try:
            await self.spool.update(entry)
        except Exception:
            self._unsaved[entry.id] = entry
            raise
        self._unsaved.pop(entry.id, None)

    # -- bounces and delay notices ----------------------------------------------

    async def _notify(self, entry: QueueEntry, info: MessageInfo | None) -> None:
        failed = [r for r in entry.recipients if r.state == states.FAILED]
        if failed:
            await self._bounce(entry, failed, info)

        now = self.reactor.seconds()
        if self._delay_notice_due(entry, now):
            delayed = [r for r in entry.recipients if r.state == states.DEFERRED]
            await self._send_report(entry, delayed, "delayed", info)
            for recipient in delayed:
                recipient.state = states.DELAYED
            await self._save(entry)

    async def _bounce(
        self, entry: QueueEntry, failed: list[QueuedRecipient], info: MessageInfo | None
    ) -> None:
        if not entry.sender:
            # RFC 5321 6.1 / RFC 3464: never a report about a report.
            log.info("no bounce for {id}: its sender is <>", id=entry.id)
        else:
            await self._send_report(entry, failed, "failed", info)
        for recipient in failed:
            recipient.state = states.BOUNCED
        await self._save(entry)

    def _delay_notice_due(self, entry: QueueEntry, now: float) -> bool:
        if not entry.sender:
            return False
        if now < entry.created + self.config.relay.delay_notice:
            return False
        return any(r.state == states.DEFERRED for r in entry.recipients)

    async def _send_report(
        self,
        entry: QueueEntry,
        recipients: list[QueuedRecipient],
        action: dsn.Action,
        info: MessageInfo | None,
    ) -> None:
        if info is None:
            info = await self._inspect(entry, sign=False)
        default_class = "4" if action == "delayed" else "5"
        now = self.reactor.seconds()
        report = dsn.Report(
            hostname=self.config.hostname,
            sender=entry.sender,
            queue_id=entry.id,
            arrival=entry.created,
            recipients=[
                dsn.RecipientReport(
                    address=r.address,
                    action=action,
                    status=states.status_code(r.last_reply, default_class),
                    diagnostic=r.last_reply,
                    remote_mta=self._remote.get((entry.id, r.address)),
                    last_attempt=now if r.attempts else None,
                )
                for r in recipients
            ],
            original_header=info.header,
            now=now,
            retry_until=self._expires(entry) if action == "delayed" else None,
        )
        await self._send_dsn(entry, dsn.build(report))

    async def _send_dsn(self, entry: QueueEntry, data: bytes) -> None:
        """To a local sender straight into the store, else through the queue."""
        sender = entry.sender
        if self.config.is_local_domain(routes.domain_of(sender)):
            address = self.local_users(sender)
            if address is None:
                log.warn(
                    "bounce for {id} dropped: no local user {sender}", id=entry.id, sender=sender
                )
                return
            try:
                await self.ctx.store.deliver(address, data)
            except StoreError as e:
                if e.temporary:
                    raise
                log.warn("bounce for {id} dropped: {error}", id=entry.id, error=str(e))
                return
            log.info("bounce for {id} stored for {sender}", id=entry.id, sender=address)
            return

        queue_id = await self.spool.enqueue("", [sender], data)
        self.maillog.queued(session="relay", sender="", recipients=[sender], queue_id=queue_id)
        self.kick()

    # -- the message itself -----------------------------------------------------

    async def _inspect(self, entry: QueueEntry, sign: bool = True) -> MessageInfo:
        path = self.spool.message_path(entry.id)
        signer = self.signer if sign else None
        pool = self.reactor.getThreadPool()
        try:
            info: MessageInfo = await threads.deferToThreadPool(
                self.reactor, pool, inspect_message, path, signer
            )
        except FileNotFoundError:
            raise EntryGone(entry.id) from None
        return info

    def _expires(self, entry: QueueEntry) -> float:
        return entry.created + self.config.relay.lifetime

    def _forget(self, queue_id: str) -> None:
        self._dropped.discard(queue_id)
        self._unsaved.pop(queue_id, None)
        self._hold_until.pop(queue_id, None)
        for key in [k for k in self._remote if k[0] == queue_id]:
            del self._remote[key]


def inspect_message(path: str, signer: Signer | None) -> MessageInfo:
    """Read the queued message once (blocking): size, 8-bit, loops, header, signature."""
    with open(path, "rb") as f:
        data = to_crlf(f.read())
    header = header_section(data)
    received = sum(1 for line in header.split(b"\r\n") if line[:9].lower() == b"received:")
    signature = signer.signature(data) if signer is not None else None
    return MessageInfo(
        size=len(data),
        eight_bit=not data.isascii(),
        received=received,
        header=header,
        signature=signature,
    )


def _local_users(ctx: ServiceContext) -> Callable[[str], str | None]:
    """The local user a bounce to ``address`` reaches: the user of that name,
    or the first local user an alias of that name delivers to."""
    db = getattr(ctx.checker, "db", None)
    canonical = getattr(db, "canonical", None)
    if canonical is None:
        return lambda address: address
    aliases = ctx.aliases

    def local_user(address: str) -> str | None:
        targets = aliases.expand(address) if aliases is not None else None
        for target in targets or [address]:
            user = canonical(target)
            if user is not None:
                return str(user)
        return None

    return local_user
