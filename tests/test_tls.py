"""Tests for ``mailsuite.tls``: loading the operator's PEM files, or making our own."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from mailsuite import tls
from mailsuite.config import Config, ConfigError, load_config


def write_config(testcase: TestCase, text: str = "") -> Config:
    folder = testcase.mktemp()
    os.makedirs(folder)
    path = os.path.join(folder, "mailsuite.toml")
    with open(path, "w") as f:
        f.write(text)
    return load_config(path)


def subject(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def make_certificate(
    key: rsa.RSAPrivateKey, name: str, issuer_key: rsa.RSAPrivateKey, issuer: str, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject(name))
        .issuer_name(subject(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def pem_key(key: rsa.RSAPrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if password:
        encryption = serialization.BestAvailableEncryption(password)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def pem_cert(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


class SelfSignedTests(TestCase):
    """With neither file present, a usable self-signed pair is generated."""

    def test_generated_when_both_missing(self) -> None:
        """Both files appear, in folders created for them, the key private (0600)."""
        config = write_config(self, 'hostname = "mail.example.org"\n')

        tls.server_options(config)

        self.assertTrue(os.path.isfile(config.tls.certificate))
        self.assertEqual(0o600, stat.S_IMODE(os.stat(config.tls.key).st_mode))

    def test_names_in_subject_alt_name(self) -> None:
        """The SAN names the hostname, localhost, 127.0.0.1 and ::1, for clients that check."""
        config = write_config(self, 'hostname = "mail.example.org"\n')

        tls.server_options(config)

        with open(config.tls.certificate, "rb") as f:
            certificate = x509.load_pem_x509_certificate(f.read())
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(["mail.example.org", "localhost"], san.get_values_for_type(x509.DNSName))
        self.assertEqual(
            [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
            san.get_values_for_type(x509.IPAddress),
        )

    def test_ten_years_and_self_issued(self) -> None:
        """The certificate lasts ten years and is its own issuer, so it is trusted by hand once."""
        config = write_config(self)

        tls.server_options(config)

        with open(config.tls.certificate, "rb") as f:
            certificate = x509.load_pem_x509_certificate(f.read())
        lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        self.assertEqual(3651, lifetime.days)
        self.assertEqual(certificate.subject, certificate.issuer)

    def test_ip_hostname_is_an_ip_entry(self) -> None:
        """A hostname that is an IP address goes into the SAN as an address, not a DNS name."""
        config = write_config(self, 'hostname = "192.0.2.7"\n')

        tls.server_options(config)

        with open(config.tls.certificate, "rb") as f:
            certificate = x509.load_pem_x509_certificate(f.read())
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertIn(ipaddress.ip_address("192.0.2.7"), san.get_values_for_type(x509.IPAddress))
        self.assertNotIn("192.0.2.7", san.get_values_for_type(x509.DNSName))

    def test_kept_across_starts(self) -> None:
        """A second start reuses the pair, so clients do not have to accept a new one."""
        config = write_config(self)
        tls.server_options(config)
        with open(config.tls.certificate, "rb") as f:
            first = f.read()

        tls.server_options(config)

        with open(config.tls.certificate, "rb") as f:
            self.assertEqual(first, f.read())

    def test_generation_is_logged_with_fingerprint(self) -> None:
        """The operator is told where the certificate is and its fingerprint, to compare."""
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        config = write_config(self)

        tls.server_options(config)

        generated = [e for e in events if "fingerprint" in e]
        self.assertEqual(1, len(generated))
        self.assertEqual(config.tls.certificate, generated[0]["path"])
        self.assertEqual(LogLevel.warn, generated[0]["log_level"])


class OptionsTests(TestCase):
    """The options serve TLS 1.2 and later with the configured pair."""

    def test_minimum_tls_1_2(self) -> None:
        """TLS 1.0 and 1.1 are switched off in the server context."""
        config = write_config(self)

        context = tls.server_options(config).getContext()

        current = context.set_options(0)
        self.assertEqual(SSL.OP_NO_TLSv1, current & SSL.OP_NO_TLSv1)
        self.assertEqual(SSL.OP_NO_TLSv1_1, current & SSL.OP_NO_TLSv1_1)

    def test_operator_chain_is_served(self) -> None:
        """A certificate file with the leaf then its CA (fullchain.pem) loads, CA as chain."""
        config = write_config(self)
        ca_key = rsa.generate_private_key(65537, 2048)
        leaf_key = rsa.generate_private_key(65537, 2048)
        ca = make_certificate(ca_key, "Test CA", ca_key, "Test CA", ca=True)
        leaf = make_certificate(leaf_key, "mail.example.org", ca_key, "Test CA", ca=False)
        write(config.tls.certificate, pem_cert(leaf) + pem_cert(ca))
        write(config.tls.key, pem_key(leaf_key))

        options = tls.server_options(config)

        self.assertIsInstance(options, ssl.CertificateOptions)
        self.assertEqual(1, len(options.extraCertChain))
        self.assertEqual(ca, options.extraCertChain[0].to_cryptography())


class BrokenFilesTests(TestCase):
    """Operator files that cannot be used stop start-up with one line, touching nothing."""

    def assertTLSError(self, config: Config, key: str, path: str, problem: str) -> None:
        error = self.assertRaises(ConfigError, tls.server_options, config)
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertIn(f"key '{key}'", message)
        self.assertIn(path, message)
        self.assertIn(str(config.path), message)
        self.assertIn(problem, message)

    def generated_pair(self) -> Config:
        config = write_config(self)
        tls.server_options(config)
        return config

    def test_only_certificate(self) -> None:
        """A certificate without its key names tls.key as missing and keeps the certificate."""
        config = self.generated_pair()
        os.unlink(config.tls.key)
        with open(config.tls.certificate, "rb") as f:
            before = f.read()

        self.assertTLSError(config, "tls.key", config.tls.key, "missing")

        with open(config.tls.certificate, "rb") as f:
            self.assertEqual(before, f.read())
        self.assertFalse(os.path.exists(config.tls.key))

    def test_only_key(self) -> None:
        """A key without its certificate names tls.certificate as missing."""
        config = self.generated_pair()
        os.unlink(config.tls.certificate)

        self.assertTLSError(config, "tls.certificate", config.tls.certificate, "missing")

    def test_certificate_not_pem(self) -> None:
        """A certificate file that is not PEM is named with tls.certificate."""
        config = self.generated_pair()
        write(config.tls.certificate, b"not a certificate\n")

        self.assertTLSError(
            config, "tls.certificate", config.tls.certificate, "not a PEM certificate"
        )

    def test_key_not_pem(self) -> None:
        """A key file that is not PEM is named with tls.key."""
        config = self.generated_pair()
        write(config.tls.key, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")

        self.assertTLSError(config, "tls.key", config.tls.key, "not a PEM private key")

    def test_unreadable(self) -> None:
        """A path that cannot be read (here a folder) says so, with the key."""
        config = self.generated_pair()
        os.unlink(config.tls.certificate)
        os.mkdir(config.tls.certificate)

        self.assertTLSError(config, "tls.certificate", config.tls.certificate, "cannot read")

    def test_encrypted_key(self) -> None:
        """A passphrase-protected key is refused with advice, since twistd cannot ask."""
        config = self.generated_pair()
        key = rsa.generate_private_key(65537, 2048)
        write(config.tls.key, pem_key(key, password=b"secret"))

        self.assertTLSError(config, "tls.key", config.tls.key, "encrypted")

    def test_key_does_not_match(self) -> None:
        """A key of another certificate is caught at start, not at the first handshake."""
        config = self.generated_pair()
        other = ec.generate_private_key(ec.SECP256R1())
        write(
            config.tls.key,
            other.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

        self.assertTLSError(config, "tls.key", config.tls.key, "does not match")
