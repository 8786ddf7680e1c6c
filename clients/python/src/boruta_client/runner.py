"""The runner for the common CI case: a job file names the board, the files to upload, the
commands to run and the files to fetch back; the runner does it all and reports."""

from __future__ import annotations

import contextlib
import enum
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boruta_client.errors import BorutaError, CommandTimeout, InvalidArgument
from boruta_client.ssh import CommandResult, Sink
from boruta_client.types import Request

if TYPE_CHECKING:
    from boruta_client.client import Board, Client

_JOB_KEYS = {
    "profile",
    "name",
    "caps",
    "priority",
    "wait_timeout",
    "command_timeout",
    "keep_going",
    "upload",
    "commands",
    "fetch",
}


@dataclass(frozen=True, slots=True)
class Transfer:
    """One file to copy: src on one side, dest on the other."""

    src: str
    dest: str


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What to run where; see docs/user-guide.md for the job file format."""

    commands: tuple[str, ...]
    caps: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0
    wait_timeout: float | None = None
    command_timeout: float | None = None
    keep_going: bool = False
    upload: tuple[Transfer, ...] = ()
    fetch: tuple[Transfer, ...] = ()
    name: str = ""


class Phase(enum.Enum):
    """Where a job is: waiting for a board, running on it, or ended."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A change the runner reports to its callback."""

    phase: Phase
    at: datetime
    request: Request | None = None
    worker_uuid: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class JobResult:
    """How a job went: each command's result, the files fetched, and when things happened."""

    phase: Phase
    request_id: int
    worker_uuid: str
    commands: tuple[CommandResult, ...]
    fetched: tuple[Path, ...]
    queued_at: datetime
    started_at: datetime | None
    ended_at: datetime
    error: str = ""

    @property
    def exit_status(self) -> int:
        """The first failed command's status; 0 if all succeeded; 255 if the job broke off."""
        for result in self.commands:
            if not result.ok:
                return result.exit_status if result.exit_status >= 0 else 255
        return 255 if self.error else 0


def _transfers(value: Any, where: str, base: Path, local_side: str) -> tuple[Transfer, ...]:
    if not isinstance(value, list):
        raise InvalidArgument(f"{where} must be an array of tables with src and dest")
    found = []
    for entry in value:
        if not isinstance(entry, dict) or set(entry) != {"src", "dest"}:
            raise InvalidArgument(f"each {where} entry needs exactly src and dest")
        src, dest = str(entry["src"]), str(entry["dest"])
        # Local paths are relative to the job file, so a job runs the same from any directory.
        if local_side == "src":
            src = str(base / src)
        else:
            dest = str(base / dest)
        found.append(Transfer(src, dest))
    return tuple(found)


def parse_job(
    data: Mapping[str, Any],
    *,
    profiles: Mapping[str, Mapping[str, Any]] | None = None,
    base: Path = Path("."),
    source: str = "job",
) -> JobSpec:
    """A JobSpec from job file data; a named profile supplies defaults the file overrides."""
    merged: dict[str, Any] = {}
    profile = data.get("profile")
    if profile:
        if profile not in (profiles or {}):
            known = ", ".join(sorted(profiles or {})) or "none"
            raise InvalidArgument(f"{source}: no runner profile {profile!r} (known: {known})")
        merged.update((profiles or {})[profile])
    merged.update(data)
    unknown = set(merged) - _JOB_KEYS
    if unknown:
        raise InvalidArgument(f"{source}: unknown keys {', '.join(sorted(unknown))}")
    commands = merged.get("commands", [])
    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        raise InvalidArgument(f"{source}: commands must be a list of strings")
    caps = merged.get("caps", {})
    if not isinstance(caps, dict):
        raise InvalidArgument(f'{source}: caps must be a table of key = "value"')

    def seconds(key: str) -> float | None:
        value = merged.get(key)
        if value is None:
            return None
        if not isinstance(value, int | float) or value <= 0:
            raise InvalidArgument(f"{source}: {key} must be a positive number of seconds")
        return float(value)

    return JobSpec(
        commands=tuple(commands),
        caps={str(k): str(v) for k, v in caps.items()},
        priority=_priority(merged.get("priority"), source),
        wait_timeout=seconds("wait_timeout"),
        command_timeout=seconds("command_timeout"),
        keep_going=bool(merged.get("keep_going", False)),
        upload=_transfers(merged.get("upload", []), f"{source}: upload", base, "src"),
        fetch=_transfers(merged.get("fetch", []), f"{source}: fetch", base, "dest"),
        name=str(merged.get("name", "")),
    )


def read_job_file(path: str | Path) -> dict[str, Any]:
    """The raw contents of a job file (TOML)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise InvalidArgument(f"job file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"{path} is not valid TOML: {exc}") from None


def load_job(path: str | Path, profiles: Mapping[str, Mapping[str, Any]] | None = None) -> JobSpec:
    """Read a job file (TOML)."""
    job_file = Path(path)
    data = read_job_file(job_file)
    return parse_job(data, profiles=profiles, base=job_file.parent, source=str(job_file))


def stop_job_processes(board: Board) -> None:
    """Kill whatever the job user still runs (a timed-out command keeps running when its
    channel closes). That ends our own SSH session too, so the next use reconnects."""
    board.close()
    with contextlib.suppress(BorutaError):
        board.ssh.run('pkill -KILL -u "$(id -un)"', timeout=30)
    board.close()


def run_job(
    client: Client,
    spec: JobSpec,
    *,
    on_status: Callable[[JobStatus], None] | None = None,
    stdout: Sink | None = None,
    stderr: Sink | None = None,
    on_wait: Callable[[Request], None] | None = None,
) -> JobResult:
    """Queue, wait for a board, upload, run, fetch, give the board back.

    Errors before the job runs (NoSuchWorker, Busy, ScheduleTimeout, RequestEnded) are
    raised; what happens once it runs is in the result.
    """

    def report(status: JobStatus) -> None:
        if on_status is not None:
            on_status(status)

    queued_at = datetime.now(UTC)
    queued: list[Request] = []

    def waiting(request: Request) -> None:
        """Report QUEUED once; pass every poll on to on_wait (e.g. a progress line)."""
        if not queued:
            queued.append(request)
            report(JobStatus(Phase.QUEUED, datetime.now(UTC), request))
        if on_wait is not None:
            on_wait(request)

    results: list[CommandResult] = []
    fetched: list[Path] = []
    lease = client.lease(
        spec.caps, priority=spec.priority, wait_timeout=spec.wait_timeout, on_wait=waiting
    )
    with lease as board:
        started_at = datetime.now(UTC)
        report(JobStatus(Phase.RUNNING, started_at, board.request, board.worker_uuid))
        error = ""
        try:
            for transfer in spec.upload:
                board.ssh.put(transfer.src, transfer.dest)
            for command in spec.commands:
                result = board.ssh.run(
                    command, stdout=stdout, stderr=stderr, timeout=spec.command_timeout
                )
                results.append(result)
                if not result.ok and not spec.keep_going:
                    break
        except CommandTimeout as exc:
            error = str(exc)
            stop_job_processes(board)
        except BorutaError as exc:
            error = str(exc)
        # Fetch even after a failure: logs matter most then. A missing file is an error.
        for transfer in spec.fetch:
            try:
                fetched.append(board.ssh.get(transfer.src, transfer.dest))
            except BorutaError as exc:
                error = error or str(exc)
        request_id, worker = board.request.id, board.worker_uuid
    failed = bool(error) or any(not r.ok for r in results)
    phase = Phase.FAILED if failed else Phase.DONE
    ended_at = datetime.now(UTC)
    report(JobStatus(phase, ended_at, lease.request, worker, error))
    return JobResult(
        phase,
        request_id,
        worker,
        tuple(results),
        tuple(fetched),
        queued_at,
        started_at,
        ended_at,
        error,
    )


def _priority(value: object, source: str) -> int:
    """1 (most important) to 16, or 0 when not given: 0 means the scheduler's default, so
    a job file that says 0 is refused rather than quietly given the default."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 16:
        raise InvalidArgument(f"{source}: priority must be a whole number from 1 to 16")
    return value
