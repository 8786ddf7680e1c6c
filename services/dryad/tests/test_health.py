"""Health checks report which check failed and why."""

from __future__ import annotations

import asyncio
from pathlib import Path

from boruta_dryad.backends import SimulatedBackend
from boruta_dryad.config import BoardConfig, ChecksConfig
from boruta_dryad.health import (
    check_command,
    check_disk,
    check_host_keys,
    check_sshd,
    run_checks,
)
from boruta_dryad.keys import generate_job_key


async def banner_server(banner: bytes) -> tuple[asyncio.Server, str]:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_sshd_check() -> None:
    server, address = await banner_server(b"SSH-2.0-OpenSSH_9.2\r\n")
    check = await check_sshd(address, 5)
    assert check.ok and check.detail == "SSH-2.0-OpenSSH_9.2"
    server.close()
    await server.wait_closed()
    down = await check_sshd(address, 5)
    assert not down.ok and f"cannot reach sshd at {address}" in down.detail
    server, address = await banner_server(b"HTTP/1.1 400\r\n")
    wrong = await check_sshd(address, 5)
    assert not wrong.ok and "does not speak SSH" in wrong.detail
    server.close()


def test_disk_check(tmp_path: Path) -> None:
    assert check_disk(str(tmp_path), 1).ok
    full = check_disk(str(tmp_path), 10**12)
    assert not full.ok and "below 1000000000000 MB" in full.detail
    assert "cannot stat" in check_disk(str(tmp_path / "none"), 1).detail


async def test_command_checks(tmp_path: Path) -> None:
    ok = await check_command(("sh", "-c", "echo warming up; echo DUT answers"), 5)
    assert (ok.name, ok.ok, ok.detail) == ("sh", True, "DUT answers")
    bad = await check_command(("sh", "-c", "echo no serial console; exit 3"), 5)
    assert (bad.ok, bad.detail) == (False, "exit status 3: no serial console")
    slow = await check_command(("sleep", "5"), 0.2)
    assert not slow.ok and "did not finish" in slow.detail
    missing = await check_command((str(tmp_path / "nope"),), 5)
    assert not missing.ok and "cannot run" in missing.detail


def host_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "ssh_host_rsa_key.pub"
    path.write_text(generate_job_key(2048, "root@board").public_openssh + "\n")
    return path


async def test_host_key_check_needs_readable_keys_that_the_sshd_shows(tmp_path: Path) -> None:
    server, address = await banner_server(b"SSH-2.0-x\r\n")
    missing = await check_host_keys(address, [str(tmp_path / "none.pub")], 2)
    assert (missing.name, missing.ok) == ("host_keys", False)
    assert "cannot read host key" in missing.detail
    # A server that shows no key at all (a real sshd's is compared in tests/).
    silent = await check_host_keys(address, [str(host_key_file(tmp_path))], 2)
    assert not silent.ok and f"the sshd at {address} showed no host key of" in silent.detail
    server.close()


async def test_run_checks_names_every_failure(tmp_path: Path) -> None:
    server, address = await banner_server(b"SSH-2.0-x\r\n")
    (tmp_path / "fail").write_text("USB hub gone")
    board = BoardConfig(
        name="b0",
        caps={},
        ssh_address=address,
        ssh_host_keys=(str(host_key_file(tmp_path)),),
        uuid="u",
        checks=ChecksConfig(disk_path=str(tmp_path), min_disk_free_mb=1, commands=(("false",),)),
    )
    checks = await run_checks(board, SimulatedBackend(fail_file=str(tmp_path / "fail")))
    assert [(c.name, c.ok) for c in checks] == [
        ("sshd", True),
        ("host_keys", False),
        ("disk", True),
        ("backend", False),
        ("false", False),
    ]
    assert checks[3].detail == "USB hub gone"
    server.close()
