"""A port another process holds stops the scheduler and the dryad at start with one line that
names the address and the setting, and exit code 2 (configuration), not a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from access_kit import dryad_toml
from farm_kit import SCHEDULER
from pki_kit import FarmPki
from system_kit import require_root, unique_prefix

DRYAD = [sys.executable, "-m", "boruta_dryad.main"]


@pytest.fixture
def busy() -> Iterator[str]:
    """An address on loopback that a listening socket of this test holds."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield f"127.0.0.1:{holder.getsockname()[1]}"


def run_until_exit(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Exit code and stderr of a process that is expected to refuse to start."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    stdout, stderr = proc.communicate(timeout=120)
    assert not stdout, f"it printed {stdout!r} although its port is busy"
    return proc.returncode, stderr


def one_line(stderr: str, prefix: str) -> str:
    assert "Traceback" not in stderr, stderr
    assert "engine failed" not in stderr, stderr
    ours = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(ours) == 1, stderr
    return ours[0]


def test_scheduler_on_a_busy_port(busy: str, tmp_path: Path) -> None:
    code, stderr = run_until_exit(
        [*SCHEDULER, "--plaintext", "yes", "--store", "memory:"], {"BORUTA_LISTEN": busy}
    )
    assert code == 2, stderr
    assert one_line(stderr, "boruta-scheduler:") == (
        f"boruta-scheduler: cannot listen on {busy} (--listen or BORUTA_LISTEN): "
        "the port is in use by another process; stop it or choose another port"
    )


def test_scheduler_token_port_busy(busy: str, tmp_path: Path) -> None:
    tls = FarmPki(tmp_path / "pki").scheduler()
    options = ["--tls-ca", tls.ca, "--tls-cert", tls.cert, "--tls-key", tls.key]
    code, stderr = run_until_exit(
        [*SCHEDULER, *options, "--store", "memory:", "--listen", "127.0.0.1:0"],
        {"BORUTA_LISTEN_TOKENS": busy},
    )
    assert code == 2, stderr
    line = one_line(stderr, "boruta-scheduler:")
    assert line.startswith(
        f"boruta-scheduler: cannot listen on {busy} (--listen-tokens or BORUTA_LISTEN_TOKENS): "
        "the port is in use"
    ), stderr


def test_scheduler_on_an_address_not_of_this_host(tmp_path: Path) -> None:
    # 192.0.2.0/24 is reserved for documentation: no host has it.
    tls = FarmPki(tmp_path / "pki").scheduler()
    options = ["--tls-ca", tls.ca, "--tls-cert", tls.cert, "--tls-key", tls.key]
    code, stderr = run_until_exit(
        [*SCHEDULER, *options, "--store", "memory:", "--listen", "192.0.2.7:50051"], {}
    )
    assert code == 2, stderr
    assert one_line(stderr, "boruta-scheduler:").endswith(
        "(--listen or BORUTA_LISTEN): the address is not one of this host's"
    )


def test_dryad_on_a_busy_port(busy: str, tmp_path: Path) -> None:
    require_root()  # a dryad removes job users left from before at start
    host_key = tmp_path / "host_key.pub"
    host_key.write_text("ssh-ed25519 AAAA test\n")
    config = tmp_path / "dryad.toml"
    config.write_text(
        dryad_toml(
            "127.0.0.1:1", "127.0.0.1:22", tmp_path / "state", unique_prefix(), host_keys=host_key
        )
    )
    code, stderr = run_until_exit([*DRYAD, "--config", str(config)], {"BORUTA_LISTEN": busy})
    assert code == 2, stderr
    assert one_line(stderr, "dryad:") == (
        f"dryad: cannot listen on {busy} (listen in the config file, --listen or "
        "BORUTA_LISTEN): the port is in use by another process; stop it or choose another port"
    )
