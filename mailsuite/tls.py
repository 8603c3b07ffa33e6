"""Server-side TLS: the operator's certificate, or one we make on first start.

A home server often has no certificate yet. So that STARTTLS and the
implicit-TLS ports work from the first start, a self-signed certificate is
generated when neither ``tls.certificate`` nor ``tls.key`` exists. Its
subjectAltName names the configured hostname, ``localhost``, 127.0.0.1 and
::1, because clients such as mbsync check the name even of a certificate
the user has chosen to trust.

When only one of the two files exists, or one cannot be read or parsed, we
stop with a ``ConfigError`` instead of overwriting anything: those files are
the operator's.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto
from twisted.internet import ssl
from twisted.logger import Logger

from mailsuite import durable
from mailsuite.config import Config, ConfigError

log = Logger()

#: Private key types OpenSSL can serve TLS with.
ServerKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

#: Ten years: a self-signed certificate is trusted by hand, so renewing it
#: would only make every client ask again.
SELF_SIGNED_LIFETIME = datetime.timedelta(days=3650)


def server_options(config: Config) -> ssl.CertificateOptions:
    """TLS 1.2+ server options from the configured PEM files, made if absent."""
    ensure_certificate(config)

    chain = _load_certificates(config)
    key = _load_key(config)
    _check_pair(config, chain[0], key)

    return ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),
        certificate=crypto.X509.from_cryptography(chain[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


def ensure_certificate(config: Config) -> None:
    """Generate a self-signed pair when both files are missing; else do nothing."""
    cert_exists = os.path.exists(config.tls.certificate)
    key_exists = os.path.exists(config.tls.key)
    if cert_exists and key_exists:
        return

    if cert_exists:
        raise _error(config, "tls.key", config.tls.key, "missing, but the certificate exists")
    if key_exists:
        raise _error(
            config, "tls.certificate", config.tls.certificate, "missing, but the key exists"
        )

    generate_self_signed(config.tls.certificate, config.tls.key, config.hostname)


def generate_self_signed(cert_path: str, key_path: str, hostname: str) -> None:
    """Write a new EC P-256 key (mode 0600) and a self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _self_signed_certificate(key, hostname)

    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)

    # The key goes first: a crash in between leaves "key without
    # certificate", which start-up reports instead of silently replacing.
    for path, data in ((key_path, key_pem), (cert_path, cert_pem)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        durable.replace_file(path, data)

    fingerprint = certificate.fingerprint(hashes.SHA256()).hex(":").upper()
    log.warn(
        "Generated a self-signed TLS certificate for {names} at {path} "
        "(SHA-256 {fingerprint}); mail clients will ask you to accept it",
        names=", ".join(_alt_names(hostname)),
        path=cert_path,
        fingerprint=fingerprint,
    )


def _alt_names(hostname: str) -> list[str]:
    names = [hostname, "localhost", "127.0.0.1", "::1"]
    return list(dict.fromkeys(n.lower() for n in names if n))


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _self_signed_certificate(key: ec.EllipticCurvePrivateKey, hostname: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname or "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + SELF_SIGNED_LIFETIME)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in _alt_names(hostname)]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def _read(config: Config, key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise _error(config, key, path, f"cannot read: {e.strerror}")


def _load_certificates(config: Config) -> list[x509.Certificate]:
    path = config.tls.certificate
    data = _read(config, "tls.certificate", path)
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise _error(config, "tls.certificate", path, "not a PEM certificate")
    return chain


def _load_key(config: Config) -> ServerKey:
    path = config.tls.key
    data = _read(config, "tls.key", path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise _error(config, "tls.key", path, "the key is encrypted; give an unencrypted key")
    except (ValueError, UnsupportedAlgorithm):
        raise _error(config, "tls.key", path, "not a PEM private key")
    if not isinstance(key, ServerKey):
        raise _error(config, "tls.key", path, "not an RSA, EC or EdDSA key")
    return key


def _check_pair(config: Config, certificate: x509.Certificate, key: ServerKey) -> None:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if certificate.public_key().public_bytes(der, spki) != key.public_key().public_bytes(
        der, spki
    ):
        raise _error(
            config,
            "tls.key",
            config.tls.key,
            f"does not match the certificate in {config.tls.certificate}",
        )


def _error(config: Config, key: str, path: str, problem: str) -> ConfigError:
    where = config.path or "built-in defaults"
    return ConfigError(f"{where}: key '{key}': {path}: {problem}")
