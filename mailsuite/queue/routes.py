"""Which way each recipient's mail leaves: our store, a route, the smarthost or MX.

The order is: a domain of ours goes to the local store; a domain in
``relay.routes`` goes to that endpoint; otherwise, with a smarthost set,
everything goes there; otherwise the domain's MX hosts are looked up. Routes
win over the smarthost so a split set-up (the office domain straight to its
server, the rest through the provider) needs no special case.

Endpoints are Twisted client endpoint strings. A ``tls:`` (or ``ssl:``)
endpoint is TLS from the first byte, as on port 465; a ``tcp:`` endpoint
uses STARTTLS, which is required for the smarthost (it gets our password)
and opportunistic for a route.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from mailsuite.config import Config, ConfigError

Kind = Literal["local", "route", "smarthost", "mx"]

#: RFC 5321 4.5.3.1.8: a server must take 100 recipients per transaction;
#: more are sent in further transactions.
MAX_RECIPIENTS_PER_TRANSACTION = 100

IMPLICIT_TLS_TYPES = ("tls", "ssl")


@dataclass(frozen=True)
class Destination:
    """Where a group of recipients is sent in one transaction."""

    kind: Kind
    #: The recipient domain for "mx" and "route", the endpoint for "smarthost".
    name: str
    #: The client endpoint string, for "route" and "smarthost".
    endpoint: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" if not self.endpoint else f"{self.kind} {self.endpoint}"


@dataclass(frozen=True)
class EndpointInfo:
    """What we need to know of an endpoint string besides connecting to it."""

    type: str
    host: str
    port: int | None

    @property
    def implicit_tls(self) -> bool:
        return self.type in IMPLICIT_TLS_TYPES


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def destination_for(config: Config, address: str) -> Destination:
    domain = domain_of(address)
    if config.is_local_domain(domain):
        return Destination("local", domain)
    route = config.relay.routes.get(domain)
    if route:
        return Destination("route", domain, route)
    if config.relay.smarthost:
        return Destination("smarthost", "smarthost", config.relay.smarthost)
    return Destination("mx", domain)


def group(config: Config, addresses: Iterable[str]) -> list[tuple[Destination, list[str]]]:
    """Recipients by destination, in batches of at most 100, in first-seen order."""
    groups: dict[Destination, list[str]] = {}
    for address in addresses:
        groups.setdefault(destination_for(config, address), []).append(address)

    batches = []
    size = MAX_RECIPIENTS_PER_TRANSACTION
    for destination, members in groups.items():
        for start in range(0, len(members), size):
            batches.append((destination, members[start : start + size]))
    return batches


def parse_endpoint(description: str) -> EndpointInfo:
    """The type, host and port of ``tcp:host:port``, ``tls:host=h:port=p`` and so on.

    Raises ``ValueError`` for a string without a host.
    """
    kind, _, rest = description.partition(":")
    positional: list[str] = []
    named: dict[str, str] = {}
    for part in _split(rest):
        key, eq, value = part.partition("=")
        if eq and key in ("host", "port"):
            named[key] = value
        elif not eq:
            positional.append(part)

    host = named.get("host") or (positional[0] if positional else "")
    port_text = named.get("port") or (positional[1] if len(positional) > 1 else "")
    if not kind or not host:
        raise ValueError(f"{description!r} names no host")
    port = int(port_text) if port_text.isdigit() else None
    return EndpointInfo(kind.lower(), host, port)


def _split(text: str) -> list[str]:
    """Split on ``:`` except where escaped with a backslash (IPv6 addresses)."""
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def check(config: Config) -> list[str]:
    """Raise ``ConfigError`` for an unusable relay set-up; return warnings."""
    where = config.path or "built-in defaults"
    relay = config.relay
    warnings = []

    for domain, endpoint in relay.routes.items():
        _checked(where, f"relay.routes.{domain}", endpoint)

    if relay.smarthost:
        info = _checked(where, "relay.smarthost", relay.smarthost)
        if info.type == "tcp" and info.port == 465:
            raise ConfigError(
                f"{where}: key 'relay.smarthost': port 465 speaks TLS from the start; "
                f"write 'tls:{info.host}:465' (a 'tcp:' smarthost uses STARTTLS, as on 587)"
            )
        if info.type == "ssl":
            warnings.append(
                "relay.smarthost: an 'ssl:' endpoint does not check the certificate; 'tls:' does"
            )
        if relay.smarthost_user and not relay.smarthost_password_file:
            raise ConfigError(
                f"{where}: key 'relay.smarthost_password_file': "
                "needed when relay.smarthost_user is set"
            )
    return warnings


def _checked(where: str, key: str, endpoint: str) -> EndpointInfo:
    try:
        info = parse_endpoint(endpoint)
    except ValueError as e:
        raise ConfigError(f"{where}: key '{key}': {e}")
    if info.type not in ("tcp", *IMPLICIT_TLS_TYPES):
        raise ConfigError(f"{where}: key '{key}': use a 'tcp:' or 'tls:' endpoint")
    return info
