"""Delivering one message to one destination: which hosts, in which order, how.

For an MX destination: the MX hosts in order, each of their addresses in
turn, moving on when a connection fails or a host answers 4xx to the
greeting, EHLO or MAIL (RFC 5321 5.1). For a route or the smarthost: the one
endpoint. For a domain of ours: the store. The result is an ``Outcome`` per
recipient; once a host has taken MAIL, its replies decide.

With ``reuse_connections`` a connection whose transaction ended cleanly is
kept for ``IDLE_TIME`` seconds and the next message to the same endpoint,
with the same TLS and login requirements, starts on it at MAIL, as Postfix
does. If such a connection turns out dead before any reply, nothing was
decided, and the message goes on a fresh connection at once.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any

from twisted.internet import defer, endpoints, error, threads
from twisted.internet.abstract import isIPv6Address
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from mailsuite.config import Config
from mailsuite.queue import states
from mailsuite.queue.client import (
    Envelope,
    HostFailure,
    Login,
    ReplyReader,
    Security,
    Session,
    Timeouts,
    Transaction,
    TransactionResult,
)
from mailsuite.queue.mx import DNSFailure, MXResolver
from mailsuite.queue.routes import Destination, parse_endpoint
from mailsuite.queue.states import Outcome
from mailsuite.queue.tlsclient import ClientTLS
from mailsuite.store import NoSuchMailbox, StoreError

log = Logger()

#: Seconds to wait for a TCP connection to an MX address.
CONNECT_TIMEOUT = 30
#: Addresses tried for one destination in one attempt, at most.
MAX_ADDRESSES = 10
#: Seconds an idle connection is kept for the next message (Postfix: 2).
IDLE_TIME = 5.0
#: Idle connections kept at once, over all destinations.
MAX_IDLE = 20

#: What a kept connection is good for: endpoint, host name, TLS, login.
SessionKey = tuple[Any, ...]

#: Outcomes reported as soon as a remote has answered the final dot, before
#: the connection is closed; the relayer makes them durable there.
OutcomeHook = Callable[[dict[str, Outcome]], Awaitable[None]]

#: ``canonical(address)``: the stored spelling of a local user, or None.
LocalUsers = Callable[[str], str | None]


class Interrupted(Exception):
    """The relayer is stopping; nothing was decided for these recipients."""


@dataclass
class OutboundMessage:
    """A queued message, ready to be sent."""

    queue_id: str
    sender: str
    path: str
    #: Octets as sent: CRLF line ends, the prefix included.
    size: int
    eight_bit: bool
    #: Header lines sent before the message (the DKIM signature).
    prefix: bytes = b""


class Deliverer:
    """Sends one message to one destination; knows hosts, TLS and credentials."""

    def __init__(
        self,
        config: Config,
        reactor: Any,
        resolver: MXResolver,
        tls: ClientTLS,
        store: Any = None,
        local_users: LocalUsers | None = None,
        timeouts: Timeouts | None = None,
        reuse_connections: bool = False,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.resolver = resolver
        self.tls = tls
        self.store = store
        self.local_users = local_users or (lambda address: address)
        self.timeouts = timeouts or Timeouts()
        self._readers: set[ReplyReader] = set()
        self._stopping = False
        self.reuse_connections = reuse_connections
        self._idle: dict[SessionKey, list[tuple[Session, Any]]] = {}

    # -- seams tests replace ------------------------------------------------

    def endpoint_for_address(self, address: str, port: int) -> Any:
        """The endpoint of one MX address; tests point it at loopback."""
        if isIPv6Address(address):
            return endpoints.TCP6ClientEndpoint(self.reactor, address, port, CONNECT_TIMEOUT)
        return endpoints.TCP4ClientEndpoint(self.reactor, address, port, CONNECT_TIMEOUT)

    def endpoint_from_string(self, description: str) -> Any:
        return endpoints.clientFromString(self.reactor, description)

    # -- life -----------------------------------------------------------------

    def abort_all(self) -> None:
        """Cut every open connection (the relayer is stopping)."""
        self._stopping = True
        for reader in list(self._readers):
            reader.abort()
        for key in list(self._idle):
            for session, timer in self._idle.pop(key):
                if timer.active():
                    timer.cancel()
                session.reader.abort()

    def close(self) -> None:
        """Stop the resolver's timers (the relayer stopped)."""
        self.resolver.close()

    def resume(self) -> None:
        """Allow connections again (the relayer started again)."""
        self._stopping = False

    # -- delivering -----------------------------------------------------------

    async def deliver(
        self,
        destination: Destination,
        recipients: list[str],
        message: OutboundMessage,
        on_outcomes: OutcomeHook,
    ) -> dict[str, Outcome]:
        """An outcome for every recipient; ``Interrupted`` if we are stopping."""
        if destination.kind == "local":
            return await self._to_store(recipients, message)
        if destination.kind == "mx":
            return await self._to_mx(destination.name, recipients, message, on_outcomes)

        info = parse_endpoint(destination.endpoint)
        endpoint = self.endpoint_from_string(destination.endpoint)
        if destination.kind == "smarthost":
            security = self._smarthost_security(info.host, info.implicit_tls)
            login = self._smarthost_login()
        else:
            security = self._mx_security(destination.name, info.host, info.implicit_tls)
            login = None

        key = (destination.endpoint,)
        try:
            return await self._attempt(
                info.host, endpoint, security, login, recipients, message, on_outcomes, key
            )
        except HostFailure as failure:
            return _all(recipients, failure.reply, failure.temporary)

    async def _to_mx(
        self, domain: str, recipients: list[str], message: OutboundMessage, hook: OutcomeHook
    ) -> dict[str, Outcome]:
        try:
            mail_hosts = await self.resolver.mail_hosts(domain)
        except DNSFailure as e:
            return _all(recipients, e.reply, e.temporary)

        failures: list[HostFailure] = []
        tried = 0
        for host in mail_hosts.hosts:
            try:
                addresses = await self.resolver.addresses(host, mail_hosts.implicit)
            except DNSFailure as e:
                if mail_hosts.implicit and not e.temporary:
                    return _all(recipients, e.reply, False)
                failures.append(HostFailure(e.reply, e.temporary, spoke=False))
                continue

            security = self._mx_security(domain, host, False)
            for address in addresses[: MAX_ADDRESSES - tried]:
                tried += 1
                endpoint = self.endpoint_for_address(address, self.config.relay.port)
                key = (address, self.config.relay.port)
                try:
                    return await self._attempt(
                        host, endpoint, security, None, recipients, message, hook, key
                    )
                except HostFailure as failure:
                    log.info(
                        "{host} [{address}] failed for {domain}: {reply}",
                        host=host,
                        address=address,
                        domain=domain,
                        reply=failure.reply,
                    )
                    failures.append(failure)
            if tried >= MAX_ADDRESSES:
                break

        return _after_all_hosts_failed(domain, recipients, failures)

    async def _attempt(
        self,
        host: str,
        endpoint: Any,
        security: Security,
        login: Login | None,
        recipients: list[str],
        message: OutboundMessage,
        hook: OutcomeHook,
        key: SessionKey,
    ) -> dict[str, Outcome]:
        """One connection; on a failed STARTTLS, one more in the clear if allowed."""
        try:
            return await self._transaction(
                host, endpoint, security, login, recipients, message, hook, key
            )
        except HostFailure as failure:
            if not (failure.tls_failed and self._may_fall_back(security, login)):
                raise
            log.warn(
                "TLS with {host} failed; resending in the clear (relay.tls_fallback)", host=host
            )

        clear = Security(opportunistic=False)
        return await self._transaction(
            host, endpoint, clear, login, recipients, message, hook, key
        )

    def _may_fall_back(self, security: Security, login: Login | None) -> bool:
        return self.config.relay.tls_fallback and not security.required and login is None

    async def _transaction(
        self,
        host: str,
        endpoint: Any,
        security: Security,
        login: Login | None,
        recipients: list[str],
        message: OutboundMessage,
        hook: OutcomeHook,
        key: SessionKey,
    ) -> dict[str, Outcome]:
        key = (*key, host, security.implicit, security.opportunistic, security.required)
        key = (*key, login.user if login is not None else None)
        session = self._take_idle(key)
        if session is not None:
            try:
                return await self._run_transaction(
                    host, session.reader, security, login, recipients, message, hook, key, session
                )
            except _DeadSession:
                log.info("kept connection to {host} was closed; opening another", host=host)

        reader = await self._connect(host, endpoint)
        return await self._run_transaction(
            host, reader, security, login, recipients, message, hook, key, None
        )

    async def _run_transaction(
        self,
        host: str,
        reader: ReplyReader,
        security: Security,
        login: Login | None,
        recipients: list[str],
        message: OutboundMessage,
        hook: OutcomeHook,
        key: SessionKey,
        session: Session | None,
    ) -> dict[str, Outcome]:
        self._readers.add(reader)

        async def report(result: TransactionResult) -> None:
            await hook(_outcomes(result))

        envelope = Envelope(
            sender=message.sender,
            recipients=recipients,
            open_message=functools.partial(_open_binary, message.path),
            size=message.size,
            prefix=message.prefix,
            eight_bit=message.eight_bit,
        )
        transaction = Transaction(
            reader,
            host=host,
            helo_name=self.config.hostname,
            envelope=envelope,
            security=security,
            login=login,
            on_result=report,
            timeouts=self.timeouts,
            session=session,
            keep_open=self.reuse_connections,
        )
        try:
            result = await transaction.run()
        except HostFailure:
            if self._stopping:
                raise Interrupted() from None
            if session is not None and not transaction.answered:
                raise _DeadSession() from None
            raise
        finally:
            self._readers.discard(reader)
        if transaction.kept is not None:
            self._keep(key, transaction.kept)
        return _outcomes(result)

    # -- kept connections -------------------------------------------------------

    def _take_idle(self, key: SessionKey) -> Session | None:
        """A kept connection for ``key`` still fit for MAIL, or None."""
        kept = self._idle.get(key)
        while kept:
            session, timer = kept.pop()
            if timer.active():
                timer.cancel()
            if session.reader.idle_clean:
                return session
            session.reader.abort()
        self._idle.pop(key, None)
        return None

    def _keep(self, key: SessionKey, session: Session) -> None:
        if self._stopping or sum(len(k) for k in self._idle.values()) >= MAX_IDLE:
            _quit_quietly(session)
            return
        timer = self.reactor.callLater(IDLE_TIME, self._expire, key, session)
        self._idle.setdefault(key, []).append((session, timer))

    def _expire(self, key: SessionKey, session: Session) -> None:
        """Nothing more to send there for a while: say QUIT and close."""
        kept = self._idle.get(key, [])
        self._idle[key] = [(s, t) for s, t in kept if s is not session]
        if not self._idle[key]:
            del self._idle[key]
        _quit_quietly(session)

    async def _connect(self, host: str, endpoint: Any) -> ReplyReader:
        if self._stopping:
            raise Interrupted()
        reader = ReplyReader(self.reactor)
        try:
            await endpoint.connect(_QuietFactory(reader))
        except (error.ConnectError, error.DNSLookupError, defer.TimeoutError, OSError) as e:
            reply = f"451 4.4.1 cannot connect to {host}: {_reason(e)}"
            raise HostFailure(reply, spoke=False) from None
        return reader

    # -- TLS and credentials --------------------------------------------------

    def _mx_security(self, domain: str, host: str, implicit: bool) -> Security:
        """Opportunistic, or verified for the domains in ``relay.verify_tls``."""
        if domain in self.config.relay.verify_tls:
            return Security(
                implicit=implicit,
                opportunistic=True,
                required=True,
                creator=lambda: self.tls.verified(host),
            )
        return Security(implicit=implicit, creator=lambda: self.tls.opportunistic(host))

    def _smarthost_security(self, host: str, implicit: bool) -> Security:
        """STARTTLS required and verified: the smarthost gets our password."""
        return Security(
            implicit=implicit,
            opportunistic=True,
            required=True,
            creator=lambda: self.tls.verified(host),
        )

    def _smarthost_login(self) -> Login | None:
        relay = self.config.relay
        if not relay.smarthost_user:
            return None
        try:
            password = read_password_file(relay.smarthost_password_file)
        except OSError as e:
            raise HostFailure(
                f"451 4.3.5 cannot read relay.smarthost_password_file: {e.strerror}"
            ) from None
        return Login(relay.smarthost_user, password)

    # -- our own domains ------------------------------------------------------

    async def _to_store(
        self, recipients: list[str], message: OutboundMessage
    ) -> dict[str, Outcome]:
        """A queued recipient in one of our domains goes straight into the store."""
        pool = self.reactor.getThreadPool()
        data = await _in_thread(self.reactor, pool, _read, message.path)
        data = message.prefix + data

        outcomes: dict[str, Outcome] = {}
        for recipient in recipients:
            outcomes[recipient] = await self._store_one(recipient, data)
        return outcomes

    async def _store_one(self, recipient: str, data: bytes) -> Outcome:
        address = self.local_users(recipient)
        if address is None or self.store is None:
            return states.failed(f"550 5.1.1 {recipient}: no such user here")
        try:
            key = await self.store.deliver(address, data)
        except NoSuchMailbox:
            return states.failed(f"550 5.1.1 {recipient}: no such user here")
        except StoreError as e:
            if e.temporary:
                return states.deferred(f"451 4.3.0 cannot store the message: {e}")
            return states.failed(f"554 5.3.0 cannot store the message: {e}")
        return states.delivered(f"250 2.0.0 stored as {key}", "localhost")


class _DeadSession(Exception):
    """A kept connection failed before any reply: nothing was sent or decided."""


def _quit_quietly(session: Session) -> None:
    """QUIT without waiting for the answer, then close once it is written."""
    session.reader.send(b"QUIT\r\n")
    session.reader.close()


class _QuietFactory(Factory):
    """Hands out one reader; without the "Starting factory" line per connection."""

    noisy = False

    def __init__(self, reader: ReplyReader) -> None:
        self.reader = reader

    def buildProtocol(self, addr: Any) -> ReplyReader:
        return self.reader


def read_password_file(path: str) -> str:
    """The first line of the smarthost password file."""
    with open(path, encoding="utf-8") as f:
        return f.readline().rstrip("\r\n")


def password_file_problem(path: str) -> str | None:
    """Why ``path`` is unsafe or unusable, or None when it is fine."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return f"cannot read {path}: {e.strerror}"
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path} can be read by other users; run: chmod 600 {path}"
    return None


def _outcomes(result: TransactionResult) -> dict[str, Outcome]:
    return {
        recipient: states.from_reply(reply.code, reply.text, result.host, result.tls)
        for recipient, reply in result.replies.items()
    }


def _all(recipients: list[str], reply: str, temporary: bool) -> dict[str, Outcome]:
    make = states.deferred if temporary else states.failed
    return {recipient: make(reply) for recipient in recipients}


def _after_all_hosts_failed(
    domain: str, recipients: list[str], failures: list[HostFailure]
) -> dict[str, Outcome]:
    """Defer if any host failed temporarily; bounce only if every one refused for good.

    The reply kept is the last one a host actually gave, which says more
    than "connection refused" from a backup MX.
    """
    if not failures:
        return _all(recipients, f"451 4.4.4 no usable mail host for {domain}", True)
    temporary = [f for f in failures if f.temporary]
    if temporary:
        spoken = [f for f in temporary if f.spoke] or temporary
        return _all(recipients, spoken[-1].reply, True)
    return _all(recipients, failures[-1].reply, False)


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]


def _open_binary(path: str) -> IO[bytes]:
    return open(path, "rb")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _in_thread(reactor: Any, pool: Any, function: Any, *args: Any) -> defer.Deferred[Any]:
    return threads.deferToThreadPool(reactor, pool, function, *args)
