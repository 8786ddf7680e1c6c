"""A board's health checks: sshd reachable, disk space, backend, and configured commands."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from boruta_dryad.backends import BackendError, BoardBackend
from boruta_dryad.config import BoardConfig


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check."""

    name: str
    ok: bool
    detail: str


async def check_sshd(address: str, timeout: float) -> Check:
    host, _, port = address.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), timeout
        )
        try:
            banner = await asyncio.wait_for(reader.readline(), timeout)
        finally:
            writer.close()
    except (OSError, TimeoutError) as exc:
        return Check("sshd", False, f"cannot reach sshd at {address}: {exc or 'timeout'}")
    if not banner.startswith(b"SSH-"):
        return Check("sshd", False, f"{address} does not speak SSH: {banner[:40]!r}")
    return Check("sshd", True, banner.decode(errors="replace").strip())


def check_disk(path: str, min_free_mb: int) -> Check:
    try:
        stat = os.statvfs(path)
    except OSError as exc:
        return Check("disk", False, f"cannot stat {path}: {exc}")
    free_mb = stat.f_bavail * stat.f_frsize // (1 << 20)
    ok = free_mb >= min_free_mb
    detail = f"{free_mb} MB free on {path}" + ("" if ok else f", below {min_free_mb} MB")
    return Check("disk", ok, detail)


async def check_backend(backend: BoardBackend) -> Check:
    try:
        return Check("backend", True, await backend.check())
    except BackendError as exc:
        return Check("backend", False, str(exc))


async def check_command(argv: tuple[str, ...], timeout: float) -> Check:
    name = os.path.basename(argv[0])
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
    except OSError as exc:
        return Check(name, False, f"cannot run {argv[0]}: {exc}")
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return Check(name, False, f"{argv[0]} did not finish within {timeout:.0f} s")
    lines = output.decode(errors="replace").strip().splitlines()
    last = lines[-1][:200] if lines else ""
    if proc.returncode != 0:
        return Check(name, False, f"exit status {proc.returncode}" + (f": {last}" if last else ""))
    return Check(name, True, last or "passed")


async def run_checks(board: BoardConfig, backend: BoardBackend) -> list[Check]:
    """Every check of the board, run concurrently."""
    checks = board.checks
    results = await asyncio.gather(
        check_sshd(board.ssh_address, min(checks.timeout, 10.0)),
        check_backend(backend),
        *(check_command(argv, checks.timeout) for argv in checks.commands),
    )
    return [results[0], check_disk(checks.disk_path, checks.min_disk_free_mb), *results[1:]]
