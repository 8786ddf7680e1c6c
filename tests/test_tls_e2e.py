"""A whole farm over TLS: scheduler, dryad and users each with a certificate from the
farm's CA. A user runs a job with schedctl; identity comes from the certificate; nobody
but the scheduler may call the dryad."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from boruta.tls import channel_credentials
from boruta.v1 import dryad_pb2, dryad_pb2_grpc
from boruta_client import Caller, Client, RequestState
from import_kit import loaded_after, schedctl_code
from live_farm import LiveFarm, live_farm
from pki_kit import FarmPki
from system_kit import unique_uuid

BOARD = unique_uuid("tls-a")
BOARDS = {BOARD: {"board": "rpi4"}}
SCHEDCTL = [sys.executable, "-m", "schedctl.main"]


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFarm]:
    tmp = tmp_path_factory.mktemp("tlsfarm")
    with live_farm(tmp, BOARDS, "--log-level", "DEBUG", pki=FarmPki(tmp / "pki")) as running:
        yield running


def alice_env(farm: LiveFarm, home: Path) -> dict[str, str]:
    """schedctl's environment as alice of group lab, with her certificate."""
    assert farm.pki is not None
    alice = farm.pki.user("alice", "lab")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("BORUTA_")},
        "BORUTA_SCHEDULER": farm.address,
        "BORUTA_CA": alice.ca,
        "BORUTA_CERT": alice.cert,
        "BORUTA_KEY": alice.key,
        "HOME": str(home),
    }


def test_a_user_runs_a_job_over_tls_as_their_certificate_says(
    farm: LiveFarm, tmp_path: Path
) -> None:
    env = {
        **alice_env(farm, tmp_path),
        "BORUTA_USER": "mallory",  # ignored: the certificate says who this is
        "BORUTA_ADMIN": "1",
    }
    done = subprocess.run(
        [*SCHEDCTL, "run", "-o", "json", "--caps", "board=rpi4", "--", "id -un"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["phase"] == "DONE" and result["worker_uuid"] == BOARD
    with farm.client("alice") as client:
        request = client.get_request(result["request_id"])
    assert (request.owner, request.owner_groups) == ("alice", frozenset({"lab"}))
    assert request.state is RequestState.DONE
    status = subprocess.run(
        [*SCHEDCTL, "status", "-o", "json"], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(status.stdout)["user"] == "alice"  # not mallory
    denied = subprocess.run(
        [*SCHEDCTL, "workers", "maintenance", BOARD], env=env, capture_output=True, text=True
    )
    # A user's certificate is not an admin's, whatever BORUTA_ADMIN says.
    assert denied.returncode == 77, denied.stderr
    assert "only admins may change a worker's state; alice is a user" in denied.stderr


def test_only_the_scheduler_may_call_the_dryad(farm: LiveFarm) -> None:
    assert farm.pki is not None
    with farm.admin() as admin:
        dryad_address = admin.get_worker(BOARD).dryad_address
    for files, code in (
        (farm.pki.admin(), grpc.StatusCode.PERMISSION_DENIED),
        (farm.pki.dryad("other-pc", BOARD), grpc.StatusCode.PERMISSION_DENIED),
    ):
        with grpc.secure_channel(dryad_address, channel_credentials(files)) as channel:
            stub = dryad_pb2_grpc.DryadStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Prepare(dryad_pb2.PrepareRequest(worker_uuid=BOARD), timeout=10)
        assert info.value.code() is code  # type: ignore[attr-defined]
    with grpc.insecure_channel(dryad_address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            dryad_pb2_grpc.DryadStub(channel).Prepare(
                dryad_pb2.PrepareRequest(worker_uuid=BOARD), timeout=10
            )
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    farm.reset()
    with Client(farm.address, tls=farm.pki.user("bob")) as bob:
        assert bob.get_worker(BOARD).state.name == "IDLE"


def secret_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM private key: any of them in a log would leak it."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def test_no_private_key_in_any_log_of_a_full_run(farm: LiveFarm) -> None:
    assert farm.pki is not None
    farm.reset()
    with farm.client("carol") as client, client.lease({"board": "rpi4"}) as board:
        assert board.ssh.run("true").ok
        job_key = board.access.private_key_pem
    keys = [job_key] + [Path(f).read_text() for f in Path(farm.pki.dir).glob("*.key")]
    logs = "\n".join(path.read_text() for path in farm.log_files)
    assert "prepared" in logs and "DEBUG" in logs  # the logs are the verbose ones
    leaked = [line for key in keys for line in secret_lines(key) if line in logs]
    assert leaked == []


def test_a_ci_system_works_with_a_token_until_it_is_revoked(farm: LiveFarm, tmp_path: Path) -> None:
    assert farm.pki is not None and farm.token_address
    admin = farm.pki.admin()
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BORUTA_")},
        "HOME": str(tmp_path),
    }
    as_admin = {
        **base,
        "BORUTA_SCHEDULER": farm.address,
        "BORUTA_CA": admin.ca,
        "BORUTA_CERT": admin.cert,
        "BORUTA_KEY": admin.key,
    }

    def schedctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SCHEDCTL, *args], env=env, capture_output=True, text=True, timeout=120
        )

    issued = schedctl(
        as_admin, "tokens", "issue", "ci-bot", "-g", "lab", "-d", "nightly", "-o", "json"
    )
    assert issued.returncode == 0, issued.stderr
    token = json.loads(issued.stdout)
    as_ci = {
        **base,
        "BORUTA_SCHEDULER": farm.token_address,
        "BORUTA_CA": admin.ca,
        "BORUTA_TOKEN": token["secret"],
    }
    farm.reset()
    ran = schedctl(as_ci, "run", "-o", "json", "--caps", "board=rpi4", "--", "true")
    assert ran.returncode == 0, ran.stderr
    with farm.admin() as client:
        request = client.get_request(json.loads(ran.stdout)["request_id"])
    assert (request.owner, request.owner_groups) == ("ci-bot", frozenset({"lab"}))
    with Client(farm.token_address, ca=admin.ca, token=token["secret"]) as ci:
        assert ci.whoami() == Caller("ci-bot", frozenset({"lab"}), False, token["token"]["id"])
    with farm.admin() as client:
        assert client.whoami().token_id is None and client.whoami().admin
    listed = schedctl(as_admin, "tokens", "list")
    assert "ci-bot" in listed.stdout and "nightly" in listed.stdout
    assert token["secret"] not in listed.stdout
    assert schedctl(as_admin, "tokens", "revoke", str(token["token"]["id"])).returncode == 0
    refused = schedctl(as_ci, "status")
    assert refused.returncode == 77 and "was revoked" in refused.stderr
    audit = json.loads(schedctl(as_admin, "audit", "-o", "json").stdout)
    seen = {(e["actor"], e["action"]) for e in audit}
    assert {("root", "IssueToken"), ("root", "RevokeToken"), ("ci-bot", "NewRequest")} <= seen
    assert ("ci-bot", "AcquireWorker") in seen  # who was given access to which board
    denied = schedctl(as_ci, "audit")
    assert denied.returncode == 77
    logs = "\n".join(path.read_text() for path in farm.log_files)
    assert token["secret"].partition(".")[2] not in logs  # the token never reaches a log


def test_a_command_that_needs_no_identity_reads_no_certificate(
    farm: LiveFarm, tmp_path: Path
) -> None:
    """Over TLS the certificate says who calls: a command that never asks who we are
    (a list) loads no cryptography, which costs a tenth of a second; one that needs our
    name (a list of our own requests) reads the certificate."""
    env = alice_env(farm, tmp_path)
    listed = loaded_after(schedctl_code("requests", "list"), ("cryptography",), env)
    assert listed == [], listed
    mine = loaded_after(schedctl_code("requests", "list", "--mine"), ("cryptography",), env)
    assert "cryptography.x509" in mine, mine
