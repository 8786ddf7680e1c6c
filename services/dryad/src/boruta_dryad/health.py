"""A board's health checks: sshd reachable and showing a configured host key, disk space,
backend, and configured commands."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from boruta.address import split_host_port

from boruta_dryad.backends import BackendError, BoardBackend
from boruta_dryad.config import BoardConfig
from boruta_dryad.hostkeys import HostKeyError, parse_public_key, read_host_keys


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check."""

    name: str
    ok: bool
    detail: str


async def check_sshd(address: str, timeout: float) -> Check:
    host, port = split_host_port(address, "ssh_address")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            banner = await asyncio.wait_for(reader.readline(), timeout)
        finally:
            writer.close()
    except (OSError, TimeoutError) as exc:
        return Check("sshd", False, f"cannot reach sshd at {address}: {exc or 'timeout'}")
    if not banner.startswith(b"SSH-"):
        return Check("sshd", False, f"{address} does not speak SSH: {banner[:40]!r}")
    return Check("sshd", True, banner.decode(errors="replace").strip())


# ssh-keyscan's name for a key type; it opens one connection per type asked for, so only
# one type, the first of these the files hold, is asked for.
_SCAN_TYPES = {"ssh-ed25519": "ed25519", "ecdsa-sha2-nistp256": "ecdsa", "ssh-rsa": "rsa"}


def _scan_type(keys: set[str]) -> list[str]:
    held = {key.partition(" ")[0] for key in keys}
    chosen = next((t for kind, t in _SCAN_TYPES.items() if kind in held), None)
    return ["-t", chosen] if chosen else []


async def check_host_keys(address: str, patterns: Sequence[str], timeout: float) -> Check:
    """The host key files can be read, and the sshd at address shows one of their keys:
    with keys of another sshd, every client would refuse the board."""
    try:
        keys = set(read_host_keys(patterns))
    except HostKeyError as exc:
        return Check("host_keys", False, str(exc))
    scanner = shutil.which("ssh-keyscan")
    if scanner is None:
        return Check("host_keys", True, f"{len(keys)} keys (no ssh-keyscan to compare them)")
    host, port = split_host_port(address, "ssh_address")
    argv = [scanner, "-T", str(max(1, round(timeout))), *_scan_type(keys), "-p", str(port)]
    proc = await asyncio.create_subprocess_exec(
        *argv, host, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout + 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return Check("host_keys", False, f"ssh-keyscan of {address} did not finish")
    shown = set()
    for line in output.decode(errors="replace").splitlines():
        if line and not line.startswith("#"):
            # "HOST TYPE BASE64": the key is what follows the host.
            try:
                shown.add(parse_public_key(line.partition(" ")[2]))
            except ValueError:
                continue
    if not shown:
        return Check(
            "host_keys", False, f"the sshd at {address} showed no host key of the files' types"
        )
    if shown.isdisjoint(keys):
        return Check(
            "host_keys",
            False,
            f"the sshd at {address} shows none of the host keys in {', '.join(patterns)}; "
            "clients would refuse it: set ssh_host_keys to that sshd's public key files",
        )
    return Check("host_keys", True, f"the sshd at {address} shows a listed key")


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
    ssh_timeout = min(checks.timeout, 10.0)
    results = await asyncio.gather(
        check_sshd(board.ssh_address, ssh_timeout),
        check_host_keys(board.ssh_address, board.ssh_host_keys, ssh_timeout),
        check_backend(backend),
        *(check_command(argv, checks.timeout) for argv in checks.commands),
    )
    return [*results[:2], check_disk(checks.disk_path, checks.min_disk_free_mb), *results[2:]]
