"""A throwaway PKI for TLS tests: a farm CA with certificates for every role, plus a
foreign CA and an expired certificate to be refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from boruta import pki
from boruta.tls import TlsFiles


class FarmPki:
    """Writes ca.pem and NAME.pem/NAME.key files into a directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_key, self.ca_pem = pki.create_ca("test farm CA")
        (directory / "ca.pem").write_bytes(self.ca_pem)
        self._other_key, self._other_pem = pki.create_ca("some other CA")

    def files(
        self,
        name: str,
        role: pki.Role,
        *,
        groups: frozenset[str] = frozenset(),
        workers: frozenset[str] = frozenset(),
        hosts: tuple[str, ...] = (),
        foreign: bool = False,
        expired: bool = False,
    ) -> TlsFiles:
        identity = pki.CertIdentity(name, role, groups, workers, hosts)
        ca_key, ca_pem = (
            (self._other_key, self._other_pem) if foreign else (self.ca_key, self.ca_pem)
        )
        now = dt.datetime.now(dt.UTC) - (dt.timedelta(days=30) if expired else dt.timedelta())
        key, cert = pki.issue(ca_key, ca_pem, identity, days=1 if expired else 30, now=now)
        stem = self.dir / f"{name}{'-foreign' if foreign else ''}{'-expired' if expired else ''}"
        stem.with_suffix(".pem").write_bytes(cert)
        stem.with_suffix(".key").write_bytes(key)
        return TlsFiles(
            str(self.dir / "ca.pem"), str(stem.with_suffix(".pem")), str(stem.with_suffix(".key"))
        )

    def user(self, name: str, *groups: str) -> TlsFiles:
        return self.files(name, pki.Role.USER, groups=frozenset(groups))

    def admin(self, name: str = "root") -> TlsFiles:
        return self.files(name, pki.Role.ADMIN)

    def dryad(self, name: str, *workers: str, host: str = "127.0.0.1") -> TlsFiles:
        return self.files(name, pki.Role.DRYAD, workers=frozenset(workers), hosts=(host,))

    def scheduler(self, host: str = "127.0.0.1") -> TlsFiles:
        return self.files("scheduler", pki.Role.SCHEDULER, hosts=(host, "localhost"))
