"""DKIM: signing outgoing mail (RFC 6376) and making keys for it.

Keys live in ``dkim.keys`` as ``<domain>.<selector>.key`` (PKCS#8 PEM, mode
0600); a message is signed when a key exists for its From domain and the
configured selector. RSA (rsa-sha256, 2048 bits) is the default because
every verifier knows it; Ed25519 (RFC 8463) is smaller but not yet checked
everywhere.

We sign at relay time, just before a message leaves, not at submission: the
queue keeps exactly what the user sent, a key made (or rotated) while mail
waits applies to it, local recipients need no signature, and the hashing
stays out of the SMTP server's reply path. The signature covers the message
with CRLF line ends, which is what the relayer sends.

The signing itself is dkimpy's, the implementation most Python mail software
uses; this module only finds keys and wraps it.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

# dkimpy ships no type information.
import dkim as dkimpy  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.logger import Logger

from mailsuite import durable
from mailsuite.config import Config

log = Logger()

ALGORITHMS = ("rsa", "ed25519")
RSA_BITS = 2048

#: The longest character-string in a TXT record (RFC 1035 3.3).
TXT_STRING_MAX = 255

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class DKIMError(Exception):
    """A key cannot be made or used; the message is for the operator."""


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    algorithm: str
    #: What dkimpy takes: PEM for RSA, base64 of the 32-byte seed for Ed25519.
    private: bytes


def check_domain(domain: str) -> str:
    """The domain in lower case, or ``DKIMError`` if it is not a host name."""
    domain = domain.strip().rstrip(".").lower()
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise DKIMError(f"{domain!r} is not a domain name")
    return domain


def check_selector(selector: str) -> str:
    if not all(_LABEL.match(label) for label in selector.lower().split(".")):
        raise DKIMError(f"{selector!r} is not a valid selector")
    return selector.lower()


def key_path(config: Config, domain: str, selector: str | None = None) -> str:
    selector = check_selector(selector or config.dkim.selector)
    return os.path.join(config.dkim.keys, f"{check_domain(domain)}.{selector}.key")


def keygen(
    config: Config, domain: str, selector: str | None = None, algorithm: str = "rsa"
) -> str:
    """Write a new private key (mode 0600) and return the DNS record to publish.

    An existing key is never replaced: its public half is probably published,
    and replacing it would break every signature until DNS caught up.
    """
    selector = check_selector(selector or config.dkim.selector)
    domain = check_domain(domain)
    if algorithm not in ALGORITHMS:
        raise DKIMError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")

    key = _generate(algorithm)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = key_path(config, domain, selector)
    os.makedirs(config.dkim.keys, mode=0o700, exist_ok=True)
    try:
        durable.write_file(path, pem)
    except FileExistsError:
        raise DKIMError(f"{path} already exists; remove it first or choose another selector")
    durable.DISK.fsync_directory(config.dkim.keys)

    return dns_record(domain, selector, algorithm, public_key_base64(key))


def _generate(algorithm: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def public_key_base64(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    """The p= value: SubjectPublicKeyInfo for RSA, the raw 32 octets for Ed25519."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return base64.b64encode(raw).decode("ascii")


def txt_value(algorithm: str, public_base64: str) -> str:
    return f"v=DKIM1; k={algorithm}; p={public_base64}"


def dns_record(domain: str, selector: str, algorithm: str, public_base64: str) -> str:
    """A zone-file line; long values are split into 255-octet strings."""
    value = txt_value(algorithm, public_base64)
    chunks = [value[i : i + TXT_STRING_MAX] for i in range(0, len(value), TXT_STRING_MAX)]
    strings = " ".join(f'"{chunk}"' for chunk in chunks)
    return f"{selector}._domainkey.{domain}. IN TXT ( {strings} )"


def load_key(path: str, domain: str, selector: str) -> SigningKey:
    """Read a key file written by ``keygen`` (or any PKCS#8/PKCS#1 PEM key)."""
    with open(path, "rb") as f:
        pem = f.read()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (TypeError, ValueError) as e:
        raise DKIMError(f"{path}: not an unencrypted PEM private key ({e})")

    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return SigningKey(domain, selector, "ed25519", base64.b64encode(seed))
    if isinstance(key, rsa.RSAPrivateKey):
        return SigningKey(domain, selector, "rsa", pem)
    raise DKIMError(f"{path}: only RSA and Ed25519 keys can sign")


class Signer:
    """Signs messages whose From domain has a key; leaves the others alone."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._warned: set[str] = set()

    def signature(self, message: bytes) -> bytes | None:
        """The ``DKIM-Signature`` header line (CRLF-terminated), or None.

        Blocking (reads the key, hashes the message): call it in a thread.
        """
        domain = from_domain(message)
        if domain is None:
            return None
        key = self._key_for(domain)
        if key is None:
            return None

        algorithm = b"ed25519-sha256" if key.algorithm == "ed25519" else b"rsa-sha256"
        try:
            header: bytes = dkimpy.sign(
                message,
                key.selector.encode("ascii"),
                key.domain.encode("ascii"),
                key.private,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=algorithm,
            )
        except dkimpy.DKIMException as e:
            log.warn("cannot DKIM-sign mail from {domain}: {error}", domain=domain, error=str(e))
            return None
        return header

    def _key_for(self, domain: str) -> SigningKey | None:
        try:
            path = key_path(self.config, domain)
        except DKIMError:
            return None
        if not os.path.exists(path):
            return None
        try:
            return load_key(path, domain, self.config.dkim.selector)
        except (OSError, DKIMError) as e:
            if path not in self._warned:
                self._warned.add(path)
                log.error("DKIM key {path} is unusable: {error}", path=path, error=str(e))
            return None


def from_domain(message: bytes) -> str | None:
    """The domain of the first From address, lower case; None without one."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(header_section(message))
    values = headers.get_all("From") or []
    for _, address in getaddresses([str(v) for v in values]):
        domain = address.rpartition("@")[2].strip().lower()
        if domain:
            return domain
    return None


def header_section(message: bytes) -> bytes:
    """The header lines of ``message``, up to (not including) the blank line."""
    ends = [
        end + len(separator) // 2
        for separator in (b"\r\n\r\n", b"\n\n")
        if (end := message.find(separator)) >= 0
    ]
    return message[: min(ends)] if ends else message


# -- mailsuite dkim ... ----------------------------------------------------------


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mailsuite dkim keygen`` (cli.COMMAND_GROUPS)."""
    dkim_parser = groups.add_parser("dkim", help="DKIM signing keys")
    commands = dkim_parser.add_subparsers(title="dkim commands", metavar="COMMAND", required=True)

    make = commands.add_parser(
        "keygen", help="make a signing key for a domain and print the DNS record to publish"
    )
    make.add_argument("domain")
    make.add_argument("--selector", help="the selector (default: dkim.selector, 'mail')")
    make.add_argument("--algorithm", choices=ALGORITHMS, default="rsa")
    make.set_defaults(handler=_keygen_command)


def _keygen_command(args: argparse.Namespace, config: Config) -> int:
    try:
        record = keygen(config, args.domain, args.selector, args.algorithm)
    except DKIMError as e:
        print(f"mailsuite: {e}", file=sys.stderr)
        return 1
    print(f"Publish this TXT record in the DNS zone of {check_domain(args.domain)}:")
    print(record)
    return 0
