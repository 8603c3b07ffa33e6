"""Client TLS for outbound SMTP: opportunistic, or verified against a host name.

Most MX hosts present certificates no one could check (self-signed, or for
another name), and RFC 7435 says encrypting anyway beats sending in the
clear; so by default nothing is verified. For the domains in
``relay.verify_tls`` and for the smarthost (which gets our password) the
certificate must verify for the host name with ``service_identity``.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer


@implementer(IOpenSSLClientConnectionCreator)
class UnverifiedClientTLS:
    """Encrypts without checking the certificate; still sends the name (SNI)."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._options = ssl.CertificateOptions(verify=False)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._options.getContext(), None)
        connection.set_app_data(tlsProtocol)
        if self.hostname and not (isIPAddress(self.hostname) or isIPv6Address(self.hostname)):
            connection.set_tlsext_host_name(self.hostname.encode("idna"))
        return connection


class ClientTLS:
    """Makes client TLS creators; ``trust_root`` is replaced in tests."""

    def __init__(self, trust_root: Any = None) -> None:
        #: ``None`` means the platform's trust store.
        self.trust_root = trust_root

    def opportunistic(self, hostname: str) -> Any:
        return UnverifiedClientTLS(hostname)

    def verified(self, hostname: str) -> Any:
        """Fails the handshake unless the certificate is valid for ``hostname``."""
        return ssl.optionsForClientTLS(hostname, trustRoot=self.trust_root)
