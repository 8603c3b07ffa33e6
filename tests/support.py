"""End-to-end test support: the real suite, in-process, on loopback ports.

``start_suite(self)`` writes a TOML configuration into ``self.mktemp()``,
builds the service tree with ``mailsuite.tap.build_service`` on the real
reactor, listens on ``tcp:0:interface=127.0.0.1`` for every service, starts
it, and stops it again when the test ends::

    @defer.inlineCallbacks
    def test_login(self):
        suite = yield start_suite(self)
        suite.add_user("alice@example.com", "secret")
        context = client_ssl_context(suite)
        yield threads.deferToThread(self.fetch, suite.port("imaps"), context)

    def fetch(self, port, context):  # runs in a thread: no Twisted calls here
        with imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=30) as imap:
            imap.login("alice@example.com", "secret")
            ...

``suite.restart()`` stops (cutting open sessions) and starts again on the
same files, with new ports. ``suite.context`` is the running
``ServiceContext`` (store, spool, checker).

smtplib, poplib and imaplib block, so call them through
``twisted.internet.threads.deferToThread``: the reactor must keep running
to answer them. Give every blocking client a ``timeout`` so a server bug
fails the test instead of hanging it.

Test configurations use ``domains = ["example.com"]``, ``hostname =
"localhost"``, ``auth.failure_delay = 0`` and a smarthost on a closed
loopback port, so no test mail ever leaves the machine. Keyword arguments
override top-level keys; a table given as a dict is merged into ours
(``start_suite(self, auth={"failure_delay": 2})``).
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.wire import Echo
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from mailsuite.config import LISTENER_NAMES, Config, load_config
from mailsuite.context import ServiceContext
from mailsuite.tap import FactoryMaker, MailsuiteService, PartMaker, build_service, real_factory
from mailsuite.users import UserDatabase

#: Every listener on an ephemeral loopback port.
LOOPBACK_LISTEN = {name: ["tcp:0:interface=127.0.0.1"] for name in LISTENER_NAMES}

TEST_CONFIG: dict[str, Any] = {
    "hostname": "localhost",
    "domains": ["example.com"],
    "listen": LOOPBACK_LISTEN,
    "auth": {"failure_delay": 0},
    # Outbound mail goes to a closed loopback port, never to the Internet.
    "relay": {"smarthost": "tcp:host=127.0.0.1:port=9", "nameservers": ["127.0.0.1:53"]},
}


def start_suite(
    testcase: TestCase,
    *,
    factories: Mapping[str, FactoryMaker] | None = None,
    make_store: PartMaker | None = None,
    make_spool: PartMaker | None = None,
    **config_overrides: Any,
) -> defer.Deferred[RunningSuite]:
    """Start the suite for ``testcase``; it is stopped by the test's cleanup.

    ``factories``, ``make_store`` and ``make_spool`` replace the real parts
    (see ``build_service``); leave them out to test the product itself.
    """
    folder = os.path.abspath(testcase.mktemp())
    os.makedirs(folder)
    config_path = os.path.join(folder, "mailsuite.toml")
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(toml_text(merged_config(config_overrides)))

    try:
        suite = RunningSuite(config_path, factories, make_store, make_spool)
    except Exception:
        return defer.fail()

    testcase.addCleanup(suite.stop)
    return suite.start()


def merged_config(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``TEST_CONFIG`` with ``overrides``; tables are merged one level deep."""
    merged = dict(TEST_CONFIG)
    for key, value in overrides.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict):
            merged[key] = {**base, **value}
        else:
            merged[key] = value
    return merged


class RunningSuite:
    """The started suite of one test, and the files it runs on."""

    def __init__(
        self,
        config_path: str,
        factories: Mapping[str, FactoryMaker] | None = None,
        make_store: PartMaker | None = None,
        make_spool: PartMaker | None = None,
    ) -> None:
        self.config_path = config_path
        self.config: Config = load_config(config_path)
        self.service: MailsuiteService | None = None
        self._factories = factories
        self._make_store = make_store
        self._make_spool = make_spool
        self._sessions = _Sessions()

    @property
    def store_path(self) -> str:
        return self.config.store

    @property
    def cert_path(self) -> str:
        """The server's (generated) certificate, to trust in clients."""
        return self.config.tls.certificate

    @property
    def context(self) -> ServiceContext:
        """The running suite's store, spool, checker and the rest."""
        if self.service is None:
            raise RuntimeError("the suite is not running")
        return self.service.context

    def port(self, name: str) -> int:
        """The loopback TCP port listener ``name`` (e.g. "imaps") got."""
        if self.service is None:
            raise RuntimeError("the suite is not running")
        return self.service.port(name)

    def add_user(self, address: str, password: str) -> str:
        """Add a user the way ``mailsuite user add`` does; the server sees it at once."""
        return UserDatabase(self.config.users).add(address, password)

    def client_ssl_context(self) -> ssl.SSLContext:
        return client_ssl_context(self)

    def start(self) -> defer.Deferred[RunningSuite]:
        """Build a fresh service tree on the same files and start it."""
        try:
            self.config = load_config(self.config_path)
            service = build_service(
                self.config,
                reactor,
                self._tracked_factories(),
                make_store=self._make_store,
                make_spool=self._make_spool,
            )
        except Exception:
            return defer.fail()

        try:
            service.startService()
        except BaseException:
            failure = Failure()
            return defer.maybeDeferred(service.stopService).addBoth(lambda _: failure)

        self.service = service
        return defer.succeed(self)

    def stop(self) -> defer.Deferred[None]:
        """Stop listening, cut every open session, stop the store and queue."""
        service, self.service = self.service, None
        if service is None:
            return defer.succeed(None)

        d = defer.maybeDeferred(service.stopService)
        d.addCallback(lambda _: self._sessions.abort_all())
        return d

    def restart(self) -> defer.Deferred[RunningSuite]:
        """Stop, then start again on the same files; ports change."""
        return self.stop().addCallback(lambda _: self.start())

    def _tracked_factories(self) -> dict[str, FactoryMaker]:
        makers = dict(self._factories or {})
        tracked: dict[str, FactoryMaker] = {}
        for name in LISTENER_NAMES:
            tracked[name] = self._sessions.tracking(name, makers.get(name))
        return tracked


def client_ssl_context(suite: RunningSuite) -> ssl.SSLContext:
    """A client context that trusts only the suite's certificate, names checked.

    The certificate names localhost, 127.0.0.1 and ::1, so connect to
    "127.0.0.1" (or pass ``server_hostname="localhost"``).
    """
    return ssl.create_default_context(cafile=suite.cert_path)


class _Sessions:
    """Every server session the suite opened, so stopping can cut them all.

    Sessions are recorded by a proxy factory that hands out the real
    protocol objects unchanged, so transports (and STARTTLS) are exactly
    what production sees.
    """

    def __init__(self) -> None:
        self.open: dict[Protocol, defer.Deferred[None]] = {}

    def tracking(self, name: str, maker: FactoryMaker | None) -> FactoryMaker:
        """Wrap ``maker`` (or the real factory of listener ``name``)."""
        inner_maker = maker or real_factory(name)

        def make(context: ServiceContext) -> IProtocolFactory:
            return _TrackingFactory(inner_maker(context), self)

        return make

    def abort_all(self) -> defer.Deferred[None]:
        waiting = list(self.open.values())
        for session in list(self.open):
            transport = session.transport
            if transport is not None:
                getattr(transport, "abortConnection", transport.loseConnection)()
        return defer.gatherResults(waiting).addCallback(lambda _: None)

    def opened(self, session: Protocol) -> None:
        closed: defer.Deferred[None] = defer.Deferred()
        self.open[session] = closed
        connection_lost = session.connectionLost

        def lost(reason: Failure = connectionDone) -> None:
            try:
                connection_lost(reason)
            finally:
                self.open.pop(session, None)
                closed.callback(None)

        session.connectionLost = lost  # type: ignore[method-assign]


@implementer(IProtocolFactory)
class _TrackingFactory:
    """Delegates to a protocol factory and records each session it builds."""

    def __init__(self, inner: IProtocolFactory, sessions: _Sessions) -> None:
        self.inner = inner
        self.sessions = sessions

    def buildProtocol(self, addr: Any) -> Protocol | None:
        session = self.inner.buildProtocol(addr)
        if session is not None:
            self.sessions.opened(session)  # type: ignore[arg-type]
        return session  # type: ignore[return-value]

    def doStart(self) -> None:
        self.inner.doStart()

    def doStop(self) -> None:
        self.inner.doStop()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# -- stand-ins for protocol factories -------------------------------------------


def echo_factories() -> dict[str, FactoryMaker]:
    """A factory maker per listener whose sessions echo what they receive."""
    return {name: lambda context: Factory.forProtocol(Echo) for name in LISTENER_NAMES}


# -- a small TOML writer (tomllib only reads) ---------------------------------


def toml_text(data: Mapping[str, Any]) -> str:
    """``data`` as TOML: top-level values, then one ``[table]`` per dict."""
    lines: list[str] = []
    _write_table(lines, [], data)
    return "\n".join(lines) + "\n"


def _write_table(lines: list[str], path: list[str], data: Mapping[str, Any]) -> None:
    values = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    if path:
        lines.append(f"[{'.'.join(_key(p) for p in path)}]")
    for key, value in values.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, table in tables.items():
        _write_table(lines, [*path, key], table)


def _key(key: str) -> str:
    return json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


__all__ = [
    "LOOPBACK_LISTEN",
    "TEST_CONFIG",
    "RunningSuite",
    "client_ssl_context",
    "echo_factories",
    "merged_config",
    "start_suite",
    "toml_text",
]
