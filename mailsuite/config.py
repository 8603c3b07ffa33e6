"""The configuration: built-in defaults, then a TOML file.

Every key has a default here, so the suite runs with no file at all (all
listeners on 127.0.0.1 high ports, the store in ``maildirs/`` of the current
folder). A file overrides what it names. Relative paths in a file are
resolved against the file's folder; the built-in defaults against the
current folder. An unknown key, a wrong type or a missing file raises
``ConfigError`` with one line naming the file, the key and the problem.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

LISTENER_NAMES = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")

#: Listeners that speak TLS from the first byte, even on a plain ``tcp:`` endpoint.
IMPLICIT_TLS = frozenset({"submissions", "pop3s", "imaps"})

DEFAULT_LISTEN = {
    "smtp": ["tcp:2525:interface=127.0.0.1"],
    "submission": ["tcp:2587:interface=127.0.0.1"],
    "submissions": ["tcp:2465:interface=127.0.0.1"],
    "pop3": ["tcp:2110:interface=127.0.0.1"],
    "pop3s": ["tcp:2995:interface=127.0.0.1"],
    "imap": ["tcp:2143:interface=127.0.0.1"],
    "imaps": ["tcp:2993:interface=127.0.0.1"],
}


class ConfigError(Exception):
    """A configuration problem, worded as one line for the operator."""


@dataclass(frozen=True)
class TLSConfig:
    certificate: str
    key: str


@dataclass(frozen=True)
class Limits:
    #: Largest message accepted by SMTP and APPEND, in octets (RFC 1870 SIZE).
    message_size: int = 25 * 1024 * 1024
    #: Bad commands tolerated in one session before it is closed.
    bad_commands: int = 10
    #: Seconds an SMTP or POP3 client may stay silent (RFC 5321 4.5.3.2: 5 min).
    idle_timeout: int = 300
    #: Seconds an IMAP client may stay silent (RFC 3501 5.4: at least 30 min).
    imap_idle_timeout: int = 1800
    #: Storage per user, in octets, over all folders (RFC 9208); 0 means none.
    quota: int = 0


@dataclass(frozen=True)
class AuthConfig:
    #: Seconds before a failed login is answered, to slow password guessing.
    failure_delay: float = 2.0
    #: Accept passwords without TLS from loopback peers, which nobody else can
    #: sniff (as Dovecot does by default): for webmail on the same box and for
    #: load generators that speak no TLS. Off by default.
    plaintext_on_loopback: bool = False


@dataclass(frozen=True)
class RelayConfig:
    #: DNS servers as "host:port"; empty means the system resolver.
    nameservers: tuple[str, ...] = ()
    #: Port MX hosts are contacted on.
    port: int = 25
    #: Domain to Twisted client endpoint string; skips MX lookup.
    routes: dict[str, str] = field(default_factory=dict)
    #: Client endpoint string all outbound mail goes to, when set.
    smarthost: str = ""
    smarthost_user: str = ""
    smarthost_password_file: str = ""
    #: Seconds between delivery attempts; the last one repeats.
    retry: tuple[int, ...] = (300, 600, 1200, 2400, 3600)
    #: Seconds a message may wait before it bounces (5 days).
    lifetime: int = 5 * 24 * 3600
    #: Seconds before the sender is told that a message is delayed (4 hours).
    delay_notice: int = 4 * 3600
    #: Domains whose MX certificates must verify; others are opportunistic.
    verify_tls: tuple[str, ...] = ()
    #: Resend in the clear to an MX whose STARTTLS handshake failed. Off: a
    #: broken handshake defers the mail instead of exposing it.
    tls_fallback: bool = False


@dataclass(frozen=True)
class DKIMConfig:
    #: The selector new keys get and outgoing mail is signed with.
    selector: str = "mail"
    #: Folder of private keys, one ``<domain>.<selector>.key`` (PEM, mode 0600) each.
    keys: str = os.path.join("maildirs", ".dkim")


@dataclass(frozen=True)
class Config:
    path: str | None
    hostname: str
    domains: tuple[str, ...]
    store: str
    users: str
    queue: str
    tls: TLSConfig
    listen: dict[str, tuple[str, ...]]
    limits: Limits
    auth: AuthConfig
    relay: RelayConfig
    dkim: DKIMConfig = field(default_factory=DKIMConfig)
    #: The aliases file (``mailsuite.aliases``); last, with a default, so
    #: code that builds a ``Config`` by hand keeps working.
    aliases: str = os.path.join("maildirs", ".aliases")

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.domains


def default_config(base: str | None = None) -> Config:
    """The built-in configuration, with paths under ``base`` (the cwd)."""
    return load_config(None, base=base)


def load_config(path: str | None, base: str | None = None) -> Config:
    """Read ``path`` (or nothing) over the defaults and check every key."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_toml(path)
        base = os.path.dirname(os.path.abspath(path))
    elif base is None:
        base = os.getcwd()
    where = path or "built-in defaults"
    reader = _Reader(where, base)
    return reader.config(data, path)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: the configuration file does not exist")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration file: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}")


class _Reader:
    """Checks one parsed file, naming the file and key in every error."""

    def __init__(self, where: str, base: str) -> None:
        self.where = where
        self.base = base

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: key '{key}': {problem}")

    def config(self, data: dict[str, Any], path: str | None) -> Config:
        top = {
            "hostname",
            "domains",
            "store",
            "users",
            "aliases",
            "queue",
            "tls",
            "listen",
            "limits",
            "auth",
            "relay",
            "dkim",
        }
        self.no_unknown_keys(data, top, "")

        hostname = self.string(data, "hostname", "localhost")
        domains = tuple(d.lower() for d in self.strings(data, "domains", [hostname]))
        store = self.path(data, "store", "maildirs")
        users = self.path(data, "users", os.path.join("maildirs", ".users"))
        aliases = self.path(data, "aliases", os.path.join("maildirs", ".aliases"))
        queue = self.path(data, "queue", os.path.join("maildirs", ".queue"))

        return Config(
            path=os.path.abspath(path) if path else None,
            hostname=hostname,
            domains=domains,
            store=store,
            users=users,
            queue=queue,
            tls=self.tls(self.table(data, "tls")),
            listen=self.listen(self.table(data, "listen")),
            limits=self.limits(self.table(data, "limits")),
            auth=self.auth(self.table(data, "auth")),
            relay=self.relay(self.table(data, "relay")),
            dkim=self.dkim(self.table(data, "dkim")),
            aliases=aliases,
        )

    def tls(self, data: dict[str, Any]) -> TLSConfig:
        self.no_unknown_keys(data, {"certificate", "key"}, "tls.")
        tls_dir = os.path.join("maildirs", ".tls")
        return TLSConfig(
            certificate=self.path(data, "certificate", os.path.join(tls_dir, "cert.pem"), "tls."),
            key=self.path(data, "key", os.path.join(tls_dir, "key.pem"), "tls."),
        )

    def listen(self, data: dict[str, Any]) -> dict[str, tuple[str, ...]]:
        self.no_unknown_keys(data, set(LISTENER_NAMES), "listen.")
        return {
            name: tuple(self.strings(data, name, DEFAULT_LISTEN[name], "listen."))
            for name in LISTENER_NAMES
        }

    def limits(self, data: dict[str, Any]) -> Limits:
        defaults = Limits()
        names = ("message_size", "bad_commands", "idle_timeout", "imap_idle_timeout")
        self.no_unknown_keys(data, {*names, "quota"}, "limits.")
        values = {n: self.positive_int(data, n, getattr(defaults, n), "limits.") for n in names}
        quota = data.get("quota", defaults.quota)
        if not isinstance(quota, int) or isinstance(quota, bool) or quota < 0:
            raise self.fail("limits.quota", "must be a whole number, 0 for no quota")
        return Limits(**values, quota=quota)

    def auth(self, data: dict[str, Any]) -> AuthConfig:
        self.no_unknown_keys(data, {"failure_delay", "plaintext_on_loopback"}, "auth.")
        delay = data.get("failure_delay", AuthConfig.failure_delay)
        if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
            raise self.fail("auth.failure_delay", "must be a number of seconds, 0 or more")
        loopback = data.get("plaintext_on_loopback", False)
        if not isinstance(loopback, bool):
            raise self.fail("auth.plaintext_on_loopback", "must be true or false")
        return AuthConfig(failure_delay=float(delay), plaintext_on_loopback=loopback)

    def relay(self, data: dict[str, Any]) -> RelayConfig:
        d = RelayConfig()
        names = {
            "nameservers",
            "port",
            "routes",
            "smarthost",
            "smarthost_user",
            "smarthost_password_file",
            "retry",
            "lifetime",
            "delay_notice",
            "verify_tls",
            "tls_fallback",
        }
        self.no_unknown_keys(data, names, "relay.")
        routes = self.table(data, "routes", "relay.")
        for domain, endpoint in routes.items():
            if not isinstance(endpoint, str):
                raise self.fail(f"relay.routes.{domain}", "must be an endpoint string")
        retry = data.get("retry", list(d.retry))
        if not retry or not all(isinstance(r, int) and r > 0 for r in retry):
            raise self.fail("relay.retry", "must be a non-empty list of positive seconds")
        password_file = ""
        if data.get("smarthost_password_file", "") != "":  # "" (the default) means none
            password_file = self.path(data, "smarthost_password_file", "", "relay.")
        return RelayConfig(
            nameservers=tuple(self.strings(data, "nameservers", [], "relay.")),
            port=self.positive_int(data, "port", d.port, "relay."),
            routes={k.lower(): v for k, v in routes.items()},
            smarthost=self.string(data, "smarthost", "", "relay."),
            smarthost_user=self.string(data, "smarthost_user", "", "relay."),
            smarthost_password_file=password_file,
            retry=tuple(retry),
            lifetime=self.positive_int(data, "lifetime", d.lifetime, "relay."),
            delay_notice=self.positive_int(data, "delay_notice", d.delay_notice, "relay."),
            verify_tls=tuple(s.lower() for s in self.strings(data, "verify_tls", [], "relay.")),
            tls_fallback=self.boolean(data, "tls_fallback", d.tls_fallback, "relay."),
        )

    def dkim(self, data: dict[str, Any]) -> DKIMConfig:
        d = DKIMConfig()
        self.no_unknown_keys(data, {"selector", "keys"}, "dkim.")
        selector = self.string(data, "selector", d.selector, "dkim.")
        if not selector or not all(c.isalnum() or c in "-_." for c in selector):
            raise self.fail("dkim.selector", "must be letters, digits, '-', '_' or '.'")
        return DKIMConfig(selector=selector, keys=self.path(data, "keys", d.keys, "dkim."))

    # -- typed getters -------------------------------------------------------

    def no_unknown_keys(self, data: dict[str, Any], known: set[str], prefix: str) -> None:
        for key in data:
            if key not in known:
                raise self.fail(prefix + key, "unknown key")

    def table(self, data: dict[str, Any], key: str, prefix: str = "") -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(prefix + key, "must be a table")
        return value

    def string(self, data: dict[str, Any], key: str, default: str, prefix: str = "") -> str:
        value = data.get(key, default)
        if not isinstance(value, str):
            raise self.fail(prefix + key, "must be a string")
        return value

    def strings(
        self, data: dict[str, Any], key: str, default: list[str], prefix: str = ""
    ) -> list[str]:
        value = data.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(prefix + key, "must be a list of strings")
        return list(value)

    def boolean(self, data: dict[str, Any], key: str, default: bool, prefix: str = "") -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(prefix + key, "must be true or false")
        return value

    def positive_int(self, data: dict[str, Any], key: str, default: int, prefix: str = "") -> int:
        value = data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise self.fail(prefix + key, "must be a positive whole number")
        return value

    def path(self, data: dict[str, Any], key: str, default: str, prefix: str = "") -> str:
        value = self.string(data, key, default, prefix)
        if not value:
            raise self.fail(prefix + key, "must not be empty")
        return os.path.normpath(os.path.join(self.base, os.path.expanduser(value)))
