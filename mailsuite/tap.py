"""``twistd mailsuite``: the options, and the service tree built from a config.

``build_service`` does the assembling and takes its parts as arguments, so
tests run the whole tree in-process on the real reactor with stand-in
protocol factories. ``makeService`` is the thin twistd entry point around it.

A bad configuration must stop start-up with one line naming the file, the
key and the problem. twistd prints its whole usage text for a
``UsageError`` and a traceback for any other exception, but for
``SystemExit`` only the message, so configuration errors leave as that.
"""

from __future__ import annotations

import importlib
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints, error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

from mailsuite import tls
from mailsuite.aliases import open_aliases
from mailsuite.config import IMPLICIT_TLS, LISTENER_NAMES, Config, ConfigError, load_config
from mailsuite.context import ServiceContext
from mailsuite.maillog import MailLog
from mailsuite.users import PasswordChecker, UserDatabase

log = Logger()

#: Builds one listener's protocol factory from the shared context.
FactoryMaker = Callable[[ServiceContext], IProtocolFactory]

#: ``(root path, reactor) -> object``: how the store and the spool are made.
PartMaker = Callable[[str, Any], Any]

#: Listener name -> (module, factory class, arguments after the context).
#: Imported only when used, so this module loads before they all exist.
REAL_FACTORIES: dict[str, tuple[str, str, tuple[Any, ...]]] = {
    "smtp": ("mailsuite.smtp.server", "SMTPFactory", ("smtp",)),
    "submission": ("mailsuite.smtp.server", "SMTPFactory", ("submission",)),
    "submissions": ("mailsuite.smtp.server", "SMTPFactory", ("submissions",)),
    "pop3": ("mailsuite.pop3.server", "POP3Factory", (False,)),
    "pop3s": ("mailsuite.pop3.server", "POP3Factory", (True,)),
    "imap": ("mailsuite.imap.server", "IMAPFactory", (False,)),
    "imaps": ("mailsuite.imap.server", "IMAPFactory", (True,)),
}


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = (
        "Run the mail suite: SMTP, submission, POP3 and IMAP over one Maildir store. "
        "Without --config, built-in defaults apply, with paths relative to the current folder."
    )
    optParameters = [
        ["config", "c", None, "The TOML configuration file (see etc/mailsuite.toml)."],
    ]

    def postOptions(self) -> None:
        """Load the configuration now, so a bad one stops twistd with one line."""
        try:
            self.mail_config = load_config(self["config"])
        except ConfigError as e:
            raise SystemExit(f"mailsuite: {e}")


#: Threads for disk waits (fsync, password hashing).
DISK_THREADS = 32


def makeService(options: Options) -> MailsuiteService:
    """The twistd entry point: the service tree for the loaded configuration."""
    from twisted.internet import reactor

    # Deliveries wait on fsync in threads; with more threads than the default
    # ten, concurrent sessions' fsyncs overlap instead of queueing.
    reactor.suggestThreadPoolSize(DISK_THREADS)  # type: ignore[attr-defined]
    try:
        config = getattr(options, "mail_config", None) or load_config(options["config"])
        suite = build_service(config, reactor)
    except ConfigError as e:
        raise SystemExit(f"mailsuite: {e}")

    suite.exit_on_error = True
    return suite


def build_service(
    config: Config,
    reactor: Any,
    factories: Mapping[str, FactoryMaker] | None = None,
    *,
    make_store: PartMaker | None = None,
    make_spool: PartMaker | None = None,
) -> MailsuiteService:
    """Every service of the suite, not yet started.

    ``factories`` maps listener names to factory makers; a listener with
    endpoints but no entry gets its real factory. ``make_store`` and
    ``make_spool`` default to ``mailsuite.store.Store`` and
    ``mailsuite.queue.spool.Spool``. Raises ``ConfigError``.
    """
    context = build_context(config, reactor, make_store, make_spool)
    suite = MailsuiteService(context)

    from mailsuite.queue.relay import RelayService

    # The relayer starts before the listeners: its recovery of half-written
    # queue entries must run before SMTP accepts anything new.
    parts: list[Any] = [context.store, context.spool, RelayService(context)]
    for part in parts:
        if service.IService.providedBy(part):
            part.setServiceParent(suite)

    for name in LISTENER_NAMES:
        descriptions = config.listen.get(name, ())
        if not descriptions:
            continue
        make_factory = (factories or {}).get(name) or real_factory(name)
        for description in descriptions:
            listener = _listener(context, name, description, make_factory(context))
            suite.listeners.append(listener)
            listener.setServiceParent(suite)

    return suite


def build_context(
    config: Config,
    reactor: Any,
    make_store: PartMaker | None = None,
    make_spool: PartMaker | None = None,
) -> ServiceContext:
    """The shared objects every protocol factory is built from."""
    maillog = MailLog()
    users = _readable_users(config)
    checker = PasswordChecker(users, reactor, config.auth.failure_delay, maillog)
    tls_options = tls.server_options(config)

    store = (make_store or _named("mailsuite.store", "Store"))(config.store, reactor)
    spool = (make_spool or _named("mailsuite.queue.spool", "Spool"))(config.queue, reactor)

    return ServiceContext(
        config=config,
        reactor=reactor,
        store=store,
        checker=checker,
        tls=tls_options,
        spool=spool,
        maillog=maillog,
        aliases=open_aliases(config),
    )


def _readable_users(config: Config) -> UserDatabase:
    """The users file, read once now so a permission problem stops start-up."""
    users = UserDatabase(config.users)
    try:
        users.addresses()
    except OSError as e:
        where = config.path or "built-in defaults"
        raise ConfigError(f"{where}: key 'users': {config.users}: cannot read: {e.strerror}")
    return users


def real_factory(name: str) -> FactoryMaker:
    """The product's factory maker for listener ``name``."""
    module, cls, arguments = REAL_FACTORIES[name]

    def make(context: ServiceContext) -> IProtocolFactory:
        factory: IProtocolFactory = _named(module, cls)(context, *arguments)
        return factory

    return make


def _named(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _listener(
    context: ServiceContext, name: str, description: str, factory: IProtocolFactory
) -> Listener:
    config = context.config
    try:
        endpoint = endpoints.serverFromString(context.reactor, description)
    except (ValueError, KeyError, TypeError) as e:
        where = config.path or "built-in defaults"
        raise ConfigError(
            f"{where}: key 'listen.{name}': {description!r} is not a server endpoint: {e}"
        )

    wrap = name in IMPLICIT_TLS and not description.startswith("ssl:")
    if wrap:
        factory = TLSMemoryBIOFactory(context.tls, False, factory)
    return Listener(config, name, description, endpoint, factory)


class Listener(service.Service):
    """One endpoint of one mail service; ``port`` is set once it listens.

    A port that cannot be opened (in use, or below 1024 without privileges)
    raises ``ConfigError`` from ``startService``, instead of being logged
    while the rest of the suite runs without it.
    """

    def __init__(
        self,
        config: Config,
        kind: str,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
    ) -> None:
        self.config = config
        self.kind = kind
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.name = f"{kind} {description}"
        self.port: IListeningPort | None = None
        self._listening: defer.Deferred[Any] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self._listening is None:
            self._listen()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        listening, self._listening = self._listening, None
        self.port = None
        if listening is None:
            return defer.succeed(None)

        listening.cancel()
        return listening.addCallback(_stop_listening)

    def _listen(self) -> None:
        failures: list[Any] = []
        self._listening = self.endpoint.listen(self.factory)
        self._listening.addCallbacks(self._listened, failures.append)
        if failures:
            self._listening = None
            raise self._error(failures[0].value)

        self._listening.addErrback(self._failed_later)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        log.info(
            "{kind} listening on {address} ({description})",
            kind=self.kind,
            address=format_address(port.getHost()),
            description=self.description,
        )
        return port

    def _failed_later(self, failure: Any) -> None:
        if not failure.check(defer.CancelledError):
            log.critical("{error}", error=self._error(failure.value))

    def _error(self, reason: BaseException) -> ConfigError:
        where = self.config.path or "built-in defaults"
        problem = str(reason)
        if isinstance(reason, error.CannotListenError):
            problem = getattr(reason.socketError, "strerror", None) or str(reason.socketError)
            if reason.port and int(reason.port) < 1024:
                problem += " (ports below 1024 need privileges: see docs/known-issues.md)"
        return ConfigError(
            f"{where}: key 'listen.{self.kind}': cannot listen on {self.description}: {problem}"
        )


def _stop_listening(port: IListeningPort | None) -> Any:
    return port.stopListening() if port is not None else None


def format_address(address: Any) -> str:
    """``127.0.0.1:2525``, ``[::1]:2525`` or a UNIX socket path."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return str(getattr(address, "name", address))
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MailsuiteService(service.MultiService):
    """The whole suite: the store, the queue, and one ``Listener`` per endpoint."""

    def __init__(self, context: ServiceContext) -> None:
        super().__init__()
        self.setName("mailsuite")
        self.context = context
        self.listeners: list[Listener] = []
        #: Worked out now: the current folder is what built-in paths mean.
        self.add_user_command = add_user_command(context.config)
        #: twistd sets this: a start-up ConfigError then ends the process.
        self.exit_on_error = False

    def privilegedStartService(self) -> None:
        self._exiting_on_error(super().privilegedStartService)

    def startService(self) -> None:
        self._exiting_on_error(super().startService)
        self._announce()

    def _exiting_on_error(self, step: Callable[[], None]) -> None:
        try:
            step()
        except ConfigError as e:
            if not self.exit_on_error:
                raise
            raise SystemExit(f"mailsuite: {e}")

    def port(self, name: str) -> int:
        """The TCP port the first endpoint of listener ``name`` got."""
        for listener in self.listeners:
            if listener.kind == name and listener.port is not None:
                address = listener.port.getHost()
                if isinstance(address, IPv4Address | IPv6Address):
                    return address.port
        raise KeyError(f"{name} is not listening on TCP")

    def _announce(self) -> None:
        config = self.context.config
        try:
            users = self.context.checker.db.addresses()
        except OSError as e:
            log.error("Cannot read {path}: {error}", path=config.users, error=e.strerror)
            return

        log.info("Mail store: {store}", store=config.store)
        log.info(
            "Users: {count} in {path}; add one with: {command}",
            count=len(users),
            path=config.users,
            command=self.add_user_command,
        )
        if not users:
            log.warn(
                "*** There are no users yet, so nobody can log in. Add one with: {command} ***",
                command=self.add_user_command,
            )


def add_user_command(config: Config) -> str:
    """The exact shell command that adds a user to this configuration."""
    domain = config.domains[0] if config.domains else config.hostname
    program = shlex.quote(_program())
    if config.path:
        return f"{program} --config {shlex.quote(config.path)} user add you@{domain}"
    return f"cd {shlex.quote(os.getcwd())} && {program} user add you@{domain}"


def _program() -> str:
    """``mailsuite``, or the script's path when it is not on PATH (a venv)."""
    beside = os.path.join(os.path.dirname(sys.executable), "mailsuite")
    if not os.path.exists(beside) or shutil.which("mailsuite") == beside:
        return "mailsuite"
    return beside
