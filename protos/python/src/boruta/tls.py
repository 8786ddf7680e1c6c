"""TLS for every boruta link, in one place: credentials from the farm's PKI files, the
peer's certificate identity, and the loopback rule for plaintext."""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boruta import pki
from boruta.address import AddressError, split_host_port

# Servers parse their callers' certificates; clients, which import this module for
# TlsFiles, do not, and leave cryptography unloaded (see boruta.pki). grpc loads with the
# credentials, so that reading a client's config (schedctl --help) does not load it.
if TYPE_CHECKING:
    import grpc
    from cryptography import x509


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The CA certificate every party trusts, and this party's certificate and key."""

    ca: str
    cert: str
    key: str

    def read(self) -> tuple[bytes, bytes, bytes]:
        try:
            return (
                Path(self.ca).read_bytes(),
                Path(self.cert).read_bytes(),
                Path(self.key).read_bytes(),
            )
        except OSError as exc:
            raise pki.PkiError(f"cannot read TLS files: {exc}") from None

    @classmethod
    def given(cls, ca: str, cert: str, key: str, what: str) -> TlsFiles | None:
        """TlsFiles when all three are set, None when none is; half a set is an error."""
        if not (ca or cert or key):
            return None
        if not (ca and cert and key):
            raise pki.PkiError(f"{what}: set all of tls_ca, tls_cert and tls_key, or none")
        return cls(ca, cert, key)


def choose_transport(
    files: TlsFiles | None, plaintext: bool, addresses: dict[str, str]
) -> TlsFiles | None:
    """The TLS files to use, or None for plaintext, which is allowed only when asked for
    and only if every one of addresses (by what they are) is on loopback: without TLS,
    anyone who reaches a port can claim to be anyone. PkiError says what to fix."""
    if files is not None:
        if plaintext:
            raise pki.PkiError("plaintext = true and TLS files are both set; choose one")
        return files
    if not plaintext:
        raise pki.PkiError(
            "no TLS: set tls_ca, tls_cert and tls_key (see schedctl pki), "
            "or plaintext = true for a demo on loopback"
        )
    for what, address in addresses.items():
        if not is_loopback(address):
            raise pki.PkiError(
                f"plaintext is only allowed on loopback; {what} is {address}: configure TLS"
            )
    return None


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server TLS that requires a client certificate from the farm's CA."""
    import grpc

    ca, cert, key = files.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def token_server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server-only TLS, for the token port: callers show a bearer token, not a certificate."""
    import grpc

    _, cert, key = files.read()
    return grpc.ssl_server_credentials([(key, cert)])


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Client TLS that checks the server against the farm's CA and shows our certificate."""
    import grpc

    ca, cert, key = files.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def is_loopback(address: str) -> bool:
    """Whether host:port (or [v6]:port) names this machine only."""
    try:
        host = split_host_port(address, listen=True)[0]
    except AddressError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PeerCertificates:
    """Identities of callers from the client certificates gRPC has verified; each one is
    checked again against the CA and for expiry (cheap: parsing is cached)."""

    def __init__(self, ca_pem: bytes) -> None:
        from cryptography import x509

        self._ca = x509.load_pem_x509_certificate(ca_pem)

    def identity(self, context: Any, now: dt.datetime | None = None) -> pki.CertIdentity:
        """The caller's identity; PkiError when the channel carries no valid farm certificate."""
        pems = context.auth_context().get("x509_pem_cert")
        if not pems:
            raise pki.PkiError("no client certificate: this port needs one from the farm's CA")
        cert, found = self._parse(bytes(pems[0]))
        if isinstance(found, str):
            raise pki.PkiError(found)  # a fresh error: a cached one would grow its traceback
        pki.check_validity(cert, now or dt.datetime.now(dt.UTC))
        return found

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one instance per process
    def _parse(self, pem: bytes) -> tuple[x509.Certificate, pki.CertIdentity | str]:
        """Signature and identity, once per certificate (a verify costs ~0.1 ms)."""
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(pem)
        try:
            pki.check_signature(cert, self._ca)
            return cert, pki.identity_of(cert)
        except pki.PkiError as error:
            return cert, str(error)
