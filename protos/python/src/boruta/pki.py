"""Certificates of a boruta farm: a private CA, and certificates that carry who their holder
is (name, role, groups, the workers a dryad may speak for) in subjectAltName URIs.

Shared by the scheduler and the dryad (which read identities) and schedctl (which issues).
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# cryptography takes a large share of a client's start-up: the functions that work on
# certificates import it, so that schedctl and the client library, which import this module
# for PkiError and Role, load it only once they read or issue a certificate.
if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

URI_PREFIX = "boruta://"
DEFAULT_CA_DAYS = 3650
DEFAULT_DAYS = 365


class Role(enum.Enum):
    """What a certificate's holder is to the farm."""

    USER = "user"
    ADMIN = "admin"
    DRYAD = "dryad"
    SCHEDULER = "scheduler"


class PkiError(Exception):
    """A certificate or key is missing, malformed, or not from the farm's CA."""


@dataclass(frozen=True, slots=True)
class CertIdentity:
    """Who a certificate says its holder is."""

    name: str
    role: Role
    groups: frozenset[str] = frozenset()
    workers: frozenset[str] = frozenset()
    hosts: tuple[str, ...] = field(default=())


def _uris(identity: CertIdentity) -> list[x509.GeneralName]:
    from cryptography import x509

    uris = [f"{URI_PREFIX}role/{identity.role.value}"]
    uris += [f"{URI_PREFIX}group/{g}" for g in sorted(identity.groups)]
    uris += [f"{URI_PREFIX}worker/{w}" for w in sorted(identity.workers)]
    return [x509.UniformResourceIdentifier(u) for u in uris]


def _hosts(hosts: Iterable[str]) -> list[x509.GeneralName]:
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def create_ca(
    name: str, days: int = DEFAULT_CA_DAYS, now: dt.datetime | None = None
) -> tuple[bytes, bytes]:
    """A new CA: (private key PEM, certificate PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem_key(key), _pem(cert)


def issue(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    identity: CertIdentity,
    days: int = DEFAULT_DAYS,
    now: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A certificate for identity signed by the CA: (private key PEM, certificate PEM).

    It serves both as a TLS client certificate and, with hosts, as a server certificate
    (a dryad is both: it dials the scheduler and is dialled by it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = now or dt.datetime.now(dt.UTC)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise PkiError("the CA key is not an EC key made by schedctl pki init")
    check_name(identity.name)
    serves = identity.role in (Role.SCHEDULER, Role.DRYAD)
    if identity.hosts and not serves:
        raise PkiError(f"a {identity.role.value} certificate serves nothing: give no hosts")
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if serves:
        # Only servers may present it as a server: a user's certificate cannot stand in
        # for the scheduler to collect others' tokens.
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(usages),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(_uris(identity) + _hosts(identity.hosts)),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    return _pem_key(key), _pem(builder.sign(ca_key, hashes.SHA256()))


def check_name(name: str) -> None:
    if name == "anonymous":
        raise PkiError("'anonymous' is what the scheduler calls callers it cannot identify")
    if (
        not name
        or len(name) > 64
        or not all(c.isascii() and (c.isalnum() or c in "._-@") for c in name)
    ):
        raise PkiError(
            # At most 64 characters of it quoted: a huge name must not come back whole.
            f"name {name[:64]!r}{'…' if len(name) > 64 else ''} must be 1 to 64 letters, "
            "digits and . _ - @ (it becomes the "
            "identity's user name)"
        )


def identity_of(cert: x509.Certificate) -> CertIdentity:
    """The identity a farm certificate carries; PkiError when it carries none."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise PkiError("the certificate has no common name")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PkiError("the certificate has no boruta identity (no subjectAltName)") from None
    role: Role | None = None
    groups: set[str] = set()
    workers: set[str] = set()
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if not uri.startswith(URI_PREFIX):
            continue
        kind, _, value = uri[len(URI_PREFIX) :].partition("/")
        if kind == "role":
            try:
                role = Role(value)
            except ValueError:
                raise PkiError(f"unknown role {value!r} in the certificate") from None
        elif kind == "group":
            groups.add(value)
        elif kind == "worker":
            workers.add(value)
    if role is None:
        raise PkiError("the certificate names no boruta role")
    hosts = [str(v) for v in san.get_values_for_type(x509.DNSName)]
    hosts += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    return CertIdentity(
        str(names[0].value), role, frozenset(groups), frozenset(workers), tuple(hosts)
    )


def verify_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate, now: dt.datetime) -> None:
    """Raise PkiError unless cert was signed by ca_cert and is valid at now."""
    check_signature(cert, ca_cert)
    check_validity(cert, now)


def check_signature(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise PkiError(f"the certificate was not issued by the farm's CA: {exc}") from None


def check_validity(cert: x509.Certificate, now: dt.datetime) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PkiError(
            f"the certificate is valid from {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}, not now"
        )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise PkiError(f"{path} exists; remove it first to replace it") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_secret(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only; never over an existing file."""
    _write_new(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    """Write a certificate; never over an existing file."""
    _write_new(path, data, 0o644)


def load_pem_cert(path: str | Path) -> x509.Certificate:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read a certificate from {path}: {exc}") from None
