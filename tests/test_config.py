"""Tests for ``mailsuite.config``: defaults, paths, and one-line errors."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from typing import Any

from twisted.trial.unittest import TestCase

import mailsuite
from mailsuite.config import DEFAULT_LISTEN, Config, ConfigError, default_config, load_config

SAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(mailsuite.__file__))), "etc", "mailsuite.toml"
)


def option_names(config: Config) -> set[str]:
    """Every dotted key a configuration file may set."""
    names = set()
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "path":
            continue
        if dataclasses.is_dataclass(value):
            names |= {f"{field.name}.{inner.name}" for inner in dataclasses.fields(value)}
        elif field.name == "listen":
            names |= {f"listen.{name}" for name in value}
        else:
            names.add(field.name)
    return names


def keys_in(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        if isinstance(value, dict) and value:
            keys |= keys_in(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


class ConfigTestCase(TestCase):
    def write(self, text: str) -> str:
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "mailsuite.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def assertConfigError(self, text: str, key: str, problem: str) -> None:
        path = self.write(text)

        error = self.assertRaises(ConfigError, load_config, path)

        self.assertEqual(f"{path}: key '{key}': {problem}", str(error))


class DefaultsTests(ConfigTestCase):
    """With no file, everything works on loopback high ports under the current folder."""

    def test_builtin_paths_under_base(self) -> None:
        """Built-in paths are under the given base folder (the current folder)."""
        config = default_config(base="/srv/mail")

        self.assertEqual(
            (
                "/srv/mail/maildirs",
                "/srv/mail/maildirs/.users",
                "/srv/mail/maildirs/.queue",
                "/srv/mail/maildirs/.tls/cert.pem",
                "/srv/mail/maildirs/.tls/key.pem",
            ),
            (
                config.store,
                config.users,
                config.queue,
                config.tls.certificate,
                config.tls.key,
            ),
        )
        self.assertIsNone(config.path)

    def test_builtin_listeners(self) -> None:
        """Every service listens on its 127.0.0.1 high port by default."""
        config = default_config(base="/srv/mail")

        self.assertEqual({k: tuple(v) for k, v in DEFAULT_LISTEN.items()}, config.listen)
        self.assertEqual(("tcp:2993:interface=127.0.0.1",), config.listen["imaps"])

    def test_domains_default_to_hostname(self) -> None:
        """Without 'domains', the hostname is the one local domain, lowercased."""
        config = load_config(self.write('hostname = "Mail.Example.ORG"\n'))

        self.assertEqual(("mail.example.org",), config.domains)
        self.assertTrue(config.is_local_domain("MAIL.example.org"))

    def test_empty_file_is_defaults(self) -> None:
        """An empty file changes nothing but the base of relative paths."""
        path = self.write("")

        config = load_config(path)

        folder = os.path.dirname(os.path.abspath(path))
        self.assertEqual(os.path.join(folder, "maildirs"), config.store)
        self.assertEqual(os.path.abspath(path), config.path)
        self.assertEqual(2.0, config.auth.failure_delay)
        self.assertEqual(25 * 1024 * 1024, config.limits.message_size)


class PathTests(ConfigTestCase):
    """Paths in a file are relative to that file, wherever twistd was started."""

    def test_relative_to_config_file(self) -> None:
        """store, users, queue and the TLS files resolve against the file's folder."""
        path = self.write(
            'store = "mail"\nusers = "etc/users"\nqueue = "../spool"\n'
            '[tls]\ncertificate = "tls/c.pem"\nkey = "tls/k.pem"\n'
        )
        folder = os.path.dirname(os.path.abspath(path))

        config = load_config(path)

        self.assertEqual(
            (
                os.path.join(folder, "mail"),
                os.path.join(folder, "etc", "users"),
                os.path.join(os.path.dirname(folder), "spool"),
                os.path.join(folder, "tls", "c.pem"),
                os.path.join(folder, "tls", "k.pem"),
            ),
            (
                config.store,
                config.users,
                config.queue,
                config.tls.certificate,
                config.tls.key,
            ),
        )

    def test_absolute_kept(self) -> None:
        """An absolute path is used as written."""
        config = load_config(self.write('store = "/var/mail/suite"\n'))

        self.assertEqual("/var/mail/suite", config.store)

    def test_home_expanded(self) -> None:
        """A leading ~ means the home folder, as in a shell."""
        config = load_config(self.write('store = "~/Maildirs"\n'))

        self.assertEqual(os.path.expanduser("~/Maildirs"), config.store)

    def test_smarthost_password_file_relative(self) -> None:
        """The smarthost password file resolves like the other paths."""
        path = self.write('[relay]\nsmarthost_password_file = "secret"\n')

        config = load_config(path)

        folder = os.path.dirname(os.path.abspath(path))
        self.assertEqual(os.path.join(folder, "secret"), config.relay.smarthost_password_file)

    def test_routes_lowercased(self) -> None:
        """Route domains match case-insensitively, so they are stored lowercase."""
        config = load_config(self.write('[relay.routes]\n"Example.ORG" = "tcp:127.0.0.1:2526"\n'))

        self.assertEqual({"example.org": "tcp:127.0.0.1:2526"}, config.relay.routes)


class FileErrorTests(ConfigTestCase):
    """Problems with the file itself name the file."""

    def test_missing_file(self) -> None:
        """A file that does not exist is reported as such."""
        path = os.path.join(self.mktemp(), "nope.toml")

        error = self.assertRaises(ConfigError, load_config, path)

        self.assertEqual(f"{path}: the configuration file does not exist", str(error))

    def test_unreadable_file(self) -> None:
        """A path that cannot be read (here a folder) is reported with the reason."""
        path = self.mktemp()
        os.makedirs(path)

        error = self.assertRaises(ConfigError, load_config, path)

        self.assertTrue(str(error).startswith(f"{path}: cannot read the configuration file"))
        self.assertNotIn("\n", str(error))

    def test_not_toml(self) -> None:
        """A TOML syntax error names the file and stays on one line."""
        path = self.write('hostname = "unterminated\n')

        error = self.assertRaises(ConfigError, load_config, path)

        self.assertTrue(str(error).startswith(f"{path}: not valid TOML: "))
        self.assertNotIn("\n", str(error))


class KeyErrorTests(ConfigTestCase):
    """Every wrong key or value names the file and the dotted key."""

    def test_unknown_keys(self) -> None:
        """A misspelt key is refused in every table, not silently ignored."""
        cases = {
            "hostnme": 'hostnme = "x"\n',
            "tls.cert": '[tls]\ncert = "x"\n',
            "listen.smtps": '[listen]\nsmtps = ["tcp:1"]\n',
            "limits.size": "[limits]\nsize = 1\n",
            "auth.delay": "[auth]\ndelay = 1\n",
            "relay.smarthost_pass": '[relay]\nsmarthost_pass = "x"\n',
        }
        for key, text in cases.items():
            self.assertConfigError(text, key, "unknown key")

    def test_strings(self) -> None:
        """String keys refuse other types."""
        cases = {
            "hostname": "hostname = 1\n",
            "store": "store = true\n",
            "tls.key": "[tls]\nkey = 1\n",
            "relay.smarthost": "[relay]\nsmarthost = 25\n",
            "relay.smarthost_user": "[relay]\nsmarthost_user = []\n",
        }
        for key, text in cases.items():
            self.assertConfigError(text, key, "must be a string")

    def test_empty_paths(self) -> None:
        """An empty path would mean the config's folder itself, so it is refused."""
        for key, text in {
            "store": 'store = ""\n',
            "users": 'users = ""\n',
            "queue": 'queue = ""\n',
            "tls.certificate": '[tls]\ncertificate = ""\n',
        }.items():
            self.assertConfigError(text, key, "must not be empty")

    def test_string_lists(self) -> None:
        """List keys want lists of strings."""
        cases = {
            "domains": 'domains = "example.com"\n',
            "listen.imap": "[listen]\nimap = [143]\n",
            "relay.nameservers": '[relay]\nnameservers = "127.0.0.1"\n',
            "relay.verify_tls": "[relay]\nverify_tls = [1]\n",
        }
        for key, text in cases.items():
            self.assertConfigError(text, key, "must be a list of strings")

    def test_tables(self) -> None:
        """Section keys must be tables."""
        for key in ("tls", "listen", "limits", "auth", "relay"):
            self.assertConfigError(f"{key} = 1\n", key, "must be a table")
        self.assertConfigError('[relay]\nroutes = "x"\n', "relay.routes", "must be a table")

    def test_positive_whole_numbers(self) -> None:
        """Limits and relay timings must be positive whole numbers (not 0, bool or float)."""
        cases = {
            "limits.message_size": "[limits]\nmessage_size = 0\n",
            "limits.bad_commands": "[limits]\nbad_commands = -1\n",
            "limits.idle_timeout": "[limits]\nidle_timeout = 1.5\n",
            "limits.imap_idle_timeout": "[limits]\nimap_idle_timeout = true\n",
            "relay.port": "[relay]\nport = 0\n",
            "relay.lifetime": '[relay]\nlifetime = "5d"\n',
            "relay.delay_notice": "[relay]\ndelay_notice = -5\n",
        }
        for key, text in cases.items():
            self.assertConfigError(text, key, "must be a positive whole number")

    def test_failure_delay(self) -> None:
        """auth.failure_delay takes 0 or more seconds, a float allowed, no bool."""
        for value in ("-1", "true", '"2"'):
            self.assertConfigError(
                f"[auth]\nfailure_delay = {value}\n",
                "auth.failure_delay",
                "must be a number of seconds, 0 or more",
            )
        config = load_config(self.write("[auth]\nfailure_delay = 0\n"))
        self.assertEqual(0.0, config.auth.failure_delay)

    def test_retry(self) -> None:
        """relay.retry is a non-empty list of positive seconds."""
        for value in ("[]", "[0]", "[60, -1]", '["5m"]'):
            self.assertConfigError(
                f"[relay]\nretry = {value}\n",
                "relay.retry",
                "must be a non-empty list of positive seconds",
            )

    def test_route_values(self) -> None:
        """A route must map to an endpoint string; the error names the domain."""
        self.assertConfigError(
            '[relay.routes]\n"example.org" = 25\n',
            "relay.routes.example.org",
            "must be an endpoint string",
        )

    def test_booleans(self) -> None:
        """Switches take true or false, not 1 or "yes"."""
        cases = {
            "auth.plaintext_on_loopback": "[auth]\nplaintext_on_loopback = 1\n",
            "relay.tls_fallback": '[relay]\ntls_fallback = "yes"\n',
        }
        for key, text in cases.items():
            self.assertConfigError(text, key, "must be true or false")

    def test_dkim(self) -> None:
        """The DKIM selector must be DNS-label characters; the key folder resolves like paths."""
        self.assertConfigError(
            '[dkim]\nselector = "a b"\n',
            "dkim.selector",
            "must be letters, digits, '-', '_' or '.'",
        )
        self.assertConfigError('[dkim]\nsel = "x"\n', "dkim.sel", "unknown key")
        path = self.write('[dkim]\nkeys = "dkim"\n')

        config = load_config(path)

        folder = os.path.dirname(os.path.abspath(path))
        self.assertEqual(os.path.join(folder, "dkim"), config.dkim.keys)


class SampleConfigTests(ConfigTestCase):
    """etc/mailsuite.toml documents every option, each at its true default."""

    def uncommented_sample(self) -> str:
        with open(SAMPLE) as f:
            text = f.read()
        # Settings are "#key = value"; prose is "# text".
        return re.sub(r"^#(?=[A-Za-z_])", "", text, flags=re.MULTILINE)

    def test_sample_lists_every_option(self) -> None:
        """Every option of the configuration appears in the sample, and nothing else."""
        sample = tomllib.loads(self.uncommented_sample())

        self.assertEqual(option_names(default_config(base="/")), keys_in(sample))

    def test_sample_values_are_defaults(self) -> None:
        """Uncommenting every setting of the sample changes nothing."""
        path = self.write(self.uncommented_sample())

        config = load_config(path)

        folder = os.path.dirname(os.path.abspath(path))
        self.assertEqual(default_config(base=folder), dataclasses.replace(config, path=None))

    def test_sample_as_shipped_loads(self) -> None:
        """The sample itself is a valid configuration."""
        config = load_config(SAMPLE)

        self.assertEqual(os.path.abspath(SAMPLE), config.path)
