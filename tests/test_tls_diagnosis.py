"""What the client says when its TLS does not match the scheduler's: one test per case,
each against a real scheduler process (a TLS one with a token port, or a plaintext one),
asserting the whole message the client raises instead of "cannot reach"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from boruta import pki
from boruta.tls import TlsFiles
from boruta_client import Client, Unavailable
from farm_kit import SchedulerProcess
from pki_kit import FarmPki

_SET_CERTS = (
    "set ca, cert and key (BORUTA_CA, BORUTA_CERT and BORUTA_KEY, or tls=TlsFiles(...)), "
    "or point BORUTA_CONFIG at a config file whose context has them"
)


class TlsScheduler:
    """A scheduler process with a certificate port and a token port, and its PKI."""

    def __init__(self, process: SchedulerProcess, pki: FarmPki) -> None:
        self.process = process
        self.pki = pki
        self.address = process.address
        self.token_address = process.token_address


@pytest.fixture(scope="module")
def tls_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsScheduler]:
    tmp = tmp_path_factory.mktemp("tls-diagnosis")
    pki = FarmPki(tmp / "pki")
    files = pki.scheduler()
    process = SchedulerProcess(
        tmp / "scheduler",
        *("--tls-ca", files.ca, "--tls-cert", files.cert, "--tls-key", files.key),
        *("--listen-tokens", "127.0.0.1:0"),
    )
    process.start()
    try:
        yield TlsScheduler(process, pki)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def plaintext_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process = SchedulerProcess(tmp_path_factory.mktemp("plaintext-diagnosis") / "scheduler")
    try:
        yield process.start()
    finally:
        process.stop()


def failure(client: Client) -> str:
    """The message of the Unavailable error the client's first call raises."""
    with client, pytest.raises(Unavailable) as caught:
        client.list_workers()
    return str(caught.value)


def test_plaintext_client_to_the_certificate_port(tls_scheduler: TlsScheduler) -> None:
    # Also the case of a missing client certificate: without cert and key a client is plaintext.
    address = tls_scheduler.address
    assert failure(Client(address, user="alice")) == (
        f"the scheduler at {address} requires TLS and a client certificate, "
        f"and this client called it in plaintext: {_SET_CERTS}"
    )


def test_plaintext_client_to_the_token_port(tls_scheduler: TlsScheduler) -> None:
    address = tls_scheduler.token_address
    assert failure(Client(address, user="alice")) == (
        f"the scheduler at {address} requires TLS (it is a token port), and this client "
        "called it in plaintext: set token and ca (BORUTA_TOKEN and BORUTA_CA, or a context "
        "with token_file and ca in BORUTA_CONFIG)"
    )


def test_certificate_client_to_a_plaintext_scheduler(
    tls_scheduler: TlsScheduler, plaintext_scheduler: str
) -> None:
    client = Client(plaintext_scheduler, tls=tls_scheduler.pki.user("alice"))
    assert failure(client) == (
        f"the scheduler at {plaintext_scheduler} does not use TLS (a plaintext demo "
        "scheduler?), but this client does: call it without ca, cert, key and token"
    )


def test_token_client_to_a_plaintext_scheduler(
    tls_scheduler: TlsScheduler, plaintext_scheduler: str
) -> None:
    ca = tls_scheduler.pki.user("alice").ca
    client = Client(plaintext_scheduler, token="some-token", ca=ca)
    assert failure(client) == (
        f"the scheduler at {plaintext_scheduler} does not use TLS (a plaintext demo "
        "scheduler?), but this client does: call it without ca, cert, key and token"
    )


def test_token_sent_to_the_certificate_port(tls_scheduler: TlsScheduler) -> None:
    address = tls_scheduler.address
    client = Client(address, token="some-token", ca=tls_scheduler.pki.user("alice").ca)
    assert failure(client) == (
        f"the scheduler at {address} requires a client certificate on this port, so the "
        "token was not sent: tokens go to the scheduler's token port (its --listen-tokens "
        "address); or use a certificate instead of the token"
    )


@pytest.mark.parametrize("trouble", ["foreign", "expired"])
def test_client_certificate_refused(tls_scheduler: TlsScheduler, trouble: str) -> None:
    address = tls_scheduler.address
    files = tls_scheduler.pki.files(
        "alice",
        pki.Role.USER,
        foreign=trouble == "foreign",
        expired=trouble == "expired",
    )
    assert failure(Client(address, tls=files)) == (
        f"the scheduler at {address} refused the client certificate {files.cert}: it is "
        "not issued by the farm's CA, or it has expired (schedctl pki issue)"
    )


def test_wrong_ca_on_the_certificate_port(tls_scheduler: TlsScheduler, tmp_path: Path) -> None:
    address = tls_scheduler.address
    mine = tls_scheduler.pki.user("alice")
    other_ca = FarmPki(tmp_path / "other").dir / "ca.pem"
    client = Client(address, tls=TlsFiles(str(other_ca), mine.cert, mine.key))
    assert failure(client) == (
        f"the scheduler at {address} showed a certificate that the CA {other_ca} did not "
        "issue for 127.0.0.1: is ca the farm's CA certificate?"
    )


def test_wrong_ca_on_the_token_port(tls_scheduler: TlsScheduler, tmp_path: Path) -> None:
    address = tls_scheduler.token_address
    other_ca = FarmPki(tmp_path / "other").dir / "ca.pem"
    client = Client(address, token="some-token", ca=str(other_ca))
    assert failure(client) == (
        f"the scheduler at {address} showed a certificate that the CA {other_ca} did not "
        "issue for 127.0.0.1: is ca the farm's CA certificate?"
    )
