"""The farm's PKI: schedctl pki writes a CA and certificates whose identities the scheduler
and dryads read back; keys are 0600; foreign and expired certificates are told apart."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from boruta import pki
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from schedctl.main import cli


def test_pki_init_and_issue_round_trip(tmp_path: Path) -> None:
    runner = CliRunner()
    ca = tmp_path / "ca"
    assert runner.invoke(cli, ["pki", "init", str(ca)]).exit_code == 0
    done = runner.invoke(
        cli,
        ["pki", "issue", str(ca), "dryad", "lab-pc-1", "-w", "w1", "-w", "w2", "-H", "10.0.0.5"],
    )
    assert done.exit_code == 0, done.output
    for key in (ca / "ca.key", ca / "lab-pc-1.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = pki.load_pem_cert(ca / "lab-pc-1.pem")
    ca_cert = pki.load_pem_cert(ca / "ca.pem")
    pki.verify_issued_by(cert, ca_cert, dt.datetime.now(dt.UTC))
    assert pki.identity_of(cert) == pki.CertIdentity(
        "lab-pc-1", pki.Role.DRYAD, frozenset(), frozenset({"w1", "w2"}), ("10.0.0.5",)
    )
    again = runner.invoke(cli, ["pki", "issue", str(ca), "dryad", "lab-pc-1", "-H", "x"])
    assert again.exit_code == 1 and "exists" in again.output
    refused = runner.invoke(cli, ["pki", "issue", str(ca), "user", "bob", "-w", "w1"])
    assert refused.exit_code == 2 and "--worker is for dryad" in refused.output


def test_foreign_and_expired_certificates_are_refused(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_pem = pki.create_ca("farm")
    other_key, other_pem = pki.create_ca("elsewhere")
    alice = pki.CertIdentity("alice", pki.Role.ADMIN, frozenset({"lab"}))
    _, good = pki.issue(ca_key, ca_pem, alice)
    _, foreign = pki.issue(other_key, other_pem, alice)
    _, old = pki.issue(ca_key, ca_pem, alice, days=1, now=now - dt.timedelta(days=3))
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    pki.verify_issued_by(x509.load_pem_x509_certificate(good), ca_cert, now)
    with pytest.raises(pki.PkiError, match="not issued by the farm's CA"):
        pki.verify_issued_by(x509.load_pem_x509_certificate(foreign), ca_cert, now)
    with pytest.raises(pki.PkiError, match="not now"):
        pki.verify_issued_by(x509.load_pem_x509_certificate(old), ca_cert, now)
    assert pki.identity_of(x509.load_pem_x509_certificate(good)).groups == {"lab"}


def test_names_that_are_not_user_names_are_refused() -> None:
    ca_key, ca_pem = pki.create_ca("farm")
    with pytest.raises(pki.PkiError, match="must be 1 to 64"):
        pki.issue(ca_key, ca_pem, pki.CertIdentity("a b", pki.Role.USER))
    with pytest.raises(pki.PkiError, match="cannot identify"):
        pki.issue(ca_key, ca_pem, pki.CertIdentity("anonymous", pki.Role.USER))


def test_only_servers_get_server_certificates() -> None:
    ca_key, ca_pem = pki.create_ca("farm")
    with pytest.raises(pki.PkiError, match="serves nothing"):
        pki.issue(ca_key, ca_pem, pki.CertIdentity("bob", pki.Role.USER, hosts=("sched",)))
    _, user = pki.issue(ca_key, ca_pem, pki.CertIdentity("bob", pki.Role.USER))
    _, dryad = pki.issue(ca_key, ca_pem, pki.CertIdentity("pc", pki.Role.DRYAD, hosts=("pc",)))

    def usages(pem: bytes) -> set[x509.ObjectIdentifier]:
        cert = x509.load_pem_x509_certificate(pem)
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    assert usages(user) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert usages(dryad) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
