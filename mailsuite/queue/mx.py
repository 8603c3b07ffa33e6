"""Where mail for a domain goes: MX hosts in order, and their addresses.

RFC 5321 section 5.1: MX records by preference, equal preferences in random
order; only when a domain has no MX record at all is the domain itself the
mail host (the "implicit MX"). RFC 7505: a single MX of "." means the domain
takes no mail, and that bounces at once. A name that does not exist bounces;
a server failure or a timeout is temporary and defers.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import client, dns
from twisted.names import error as dns_error

log = Logger()

#: Where the system's name servers are listed (reread when it changes).
SYSTEM_RESOLV_CONF = "/etc/resolv.conf"

#: Seconds before each query is reissued; the lookup fails after the last.
DEFAULT_TIMEOUT = (2, 5, 10)


class DNSFailure(Exception):
    """A lookup that decides the recipients' fate, worded as an SMTP reply."""

    def __init__(self, reply: str, temporary: bool) -> None:
        super().__init__(reply)
        self.reply = reply
        self.temporary = temporary


@dataclass(frozen=True)
class MailHosts:
    """The hosts to try for a domain, best first."""

    domain: str
    hosts: tuple[str, ...]
    #: No MX record exists, so ``hosts`` is the domain itself (RFC 5321 5.1).
    implicit: bool = False


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"``, ``"[::1]:53"`` or a bare address (port 53)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or "53"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, "53"
    return host, int(port)


def make_resolver(reactor: Any, nameservers: Sequence[str]) -> Any:
    """A resolver asking ``nameservers``, or the system's when there are none."""
    if nameservers:
        servers = [parse_nameserver(n) for n in nameservers]
        return client.Resolver(servers=servers, reactor=reactor)
    return client.Resolver(resolv=SYSTEM_RESOLV_CONF, reactor=reactor)


class LazyResolver:
    """The resolver for ``nameservers``, made on the first lookup.

    The system resolver rereads /etc/resolv.conf every minute from a timer;
    made lazily, a relayer that only uses a smarthost or routes never starts
    that timer, and ``close()`` stops it when the relayer stops.
    """

    def __init__(self, reactor: Any, nameservers: Sequence[str]) -> None:
        self.reactor = reactor
        self.nameservers = tuple(nameservers)
        self._resolver: Any = None

    def _get(self) -> Any:
        if self._resolver is None:
            self._resolver = make_resolver(self.reactor, self.nameservers)
        return self._resolver

    def lookupMailExchange(self, name: str, timeout: Any = None) -> defer.Deferred[Any]:
        return self._get().lookupMailExchange(name, timeout)

    def lookupAddress(self, name: str, timeout: Any = None) -> defer.Deferred[Any]:
        return self._get().lookupAddress(name, timeout)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> defer.Deferred[Any]:
        return self._get().lookupIPV6Address(name, timeout)

    def close(self) -> None:
        timer = getattr(self._resolver, "_parseCall", None)
        if timer is not None and timer.active():
            timer.cancel()
        self._resolver = None


class MXResolver:
    """Answers "which hosts, which addresses" for the deliverer."""

    def __init__(
        self,
        resolver: Any,
        rng: random.Random | None = None,
        timeout: Sequence[int] = DEFAULT_TIMEOUT,
    ) -> None:
        self.resolver = resolver
        self.rng = rng or random.SystemRandom()
        self.timeout = tuple(timeout)

    def close(self) -> None:
        close = getattr(self.resolver, "close", None)
        if close is not None:
            close()

    def mail_hosts(self, domain: str) -> defer.Deferred[MailHosts]:
        """The domain's mail hosts; fails with ``DNSFailure`` when none can be had."""
        return defer.ensureDeferred(self._mail_hosts(domain))

    async def _mail_hosts(self, domain: str) -> MailHosts:
        try:
            answers, _, _ = await self.resolver.lookupMailExchange(domain, self.timeout)
        except Exception as e:
            raise _failure(domain, "MX", e) from None

        records = [a.payload for a in answers if a.type == dns.MX]
        if not records:
            return MailHosts(domain, (domain,), implicit=True)

        if len(records) == 1 and _is_root(records[0].name):
            raise DNSFailure(f"556 5.1.10 {domain} accepts no mail (null MX, RFC 7505)", False)

        return MailHosts(domain, self._ordered(records))

    def _ordered(self, records: list[Any]) -> tuple[str, ...]:
        """By preference; hosts of equal preference shuffled (RFC 5321 5.1)."""
        by_preference: dict[int, list[str]] = {}
        for record in records:
            name = str(record.name).rstrip(".")
            if name:
                by_preference.setdefault(record.preference, []).append(name)

        hosts: list[str] = []
        for preference in sorted(by_preference):
            group = list(dict.fromkeys(by_preference[preference]))
            self.rng.shuffle(group)
            hosts.extend(group)
        return tuple(hosts)

    def addresses(self, host: str, implicit: bool = False) -> defer.Deferred[list[str]]:
        """IPv4 then IPv6 addresses of ``host``.

        IPv4 comes first: on a home connection it is the family that works,
        and large receivers are stricter with residential IPv6 senders.
        Fails with ``DNSFailure``: permanent only for an implicit MX whose
        domain has no address at all (then the domain has no mail host).
        """
        return defer.ensureDeferred(self._addresses(host, implicit))

    async def _addresses(self, host: str, implicit: bool) -> list[str]:
        lookups = [
            self.resolver.lookupAddress(host, self.timeout),
            self.resolver.lookupIPV6Address(host, self.timeout),
        ]
        results = await defer.DeferredList(lookups, consumeErrors=True)

        found: list[str] = []
        errors: list[BaseException] = []
        for (ok, value), wanted in zip(results, (dns.A, dns.AAAA), strict=True):
            if ok:
                found.extend(_dotted(a.payload) for a in value[0] if a.type == wanted)
            else:
                errors.append(value.value)

        if found:
            return list(dict.fromkeys(found))

        temporary = [e for e in errors if not isinstance(e, dns_error.DNSNameError)]
        if temporary:
            raise _failure(host, "address", temporary[0])
        if implicit:
            raise DNSFailure(f"550 5.1.2 {host} has no MX and no address records", False)
        raise DNSFailure(f"451 4.4.4 MX host {host} has no address records", True)


def _is_root(name: Any) -> bool:
    return str(name).rstrip(".") == ""


def _dotted(payload: Any) -> str:
    family = socket.AF_INET6 if len(payload.address) == 16 else socket.AF_INET
    return socket.inet_ntop(family, payload.address)


def _failure(name: str, kind: str, error: BaseException) -> DNSFailure:
    """NXDOMAIN is permanent (RFC 3463 X.1.2); every other failure is temporary."""
    if isinstance(error, dns_error.DNSNameError):
        return DNSFailure(f"550 5.1.2 {name} does not exist (DNS NXDOMAIN)", False)
    if isinstance(error, dns_error.DNSServerError):
        problem = "server failure (SERVFAIL)"
    elif isinstance(error, defer.TimeoutError | dns_error.DNSQueryTimeoutError):
        problem = "timed out"
    else:
        problem = type(error).__name__
        log.info("{kind} lookup of {name} failed: {error!r}", kind=kind, name=name, error=error)
    return DNSFailure(f"451 4.4.3 {kind} lookup for {name}: {problem}", True)
