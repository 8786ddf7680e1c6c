"""schedctl run, ssh and status: the commands a user lives in."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click
from boruta_client import Access, Request, RequestState, WorkerState
from boruta_client.runner import JobStatus, Phase, Transfer, parse_job, read_job_file, run_job

from schedctl.cli import (
    CAPS_HELP,
    PRIORITY,
    UNSET_PRIORITY,
    Progress,
    State,
    option,
    output_option,
    parse_caps,
    parse_profiles,
    parse_together_option,
    pass_state,
    profile_options,
)
from schedctl.output import Column, emit, span, table, when

if TYPE_CHECKING:
    from boruta_client import Board


def write_to(stream: TextIO) -> Callable[[bytes], None]:
    """A sink that passes the board's bytes straight on, as they come."""

    def write(data: bytes) -> None:
        stream.buffer.write(data)
        stream.flush()

    return write


def remote_command(words: tuple[str, ...]) -> str:
    """One word is a shell command line ("make -j4 && ./test"); several are quoted one by
    one, so that arguments with spaces survive."""
    return words[0] if len(words) == 1 else shlex.join(words)


def _transfers(items: tuple[str, ...], what: str) -> tuple[Transfer, ...]:
    found = []
    for item in items:
        src, sep, dest = item.partition(":")
        if not sep or not src or not dest:
            raise click.BadParameter(f"{item!r} is not SRC:DEST", param_hint=what)
        found.append(Transfer(src, dest))
    return tuple(found)


@click.command("run")
@click.argument("args", nargs=-1, metavar="JOBFILE.toml | -- CMD...")
@option(
    "--caps",
    multiple=True,
    metavar="KEY=VALUE",
    help=f"Caps of the board (command mode). {CAPS_HELP}",
)
@option("--profile", help="Runner profile from the config file to start from.")
@option("-p", "--priority", type=PRIORITY, help="1 (most important) to 16.")
@option(
    "--wait-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait for a board at most.",
)
@option(
    "--command-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds each command may run.",
)
@option("--upload", multiple=True, metavar="LOCAL:REMOTE", help="Copy a file to the board first.")
@option("--fetch", multiple=True, metavar="REMOTE:LOCAL", help="Copy a file back at the end.")
@output_option
@pass_state
def run(
    state: State,
    args: tuple[str, ...],
    caps: tuple[str, ...],
    profile: str | None,
    priority: int | None,
    wait_timeout: float | None,
    command_timeout: float | None,
    upload: tuple[str, ...],
    fetch: tuple[str, ...],
    fmt: str,
) -> None:
    """Queue, wait for a board, run, stream the output, give the board back; exit with the
    remote command's status.

    Either a job file (recognised by its .toml suffix) or, after --, one command to run
    on a board with the given --caps.
    """
    if len(args) == 1 and args[0].endswith(".toml"):
        data = read_job_file(args[0])
        base, source = Path(args[0]).parent, args[0]
    elif args:
        data = {"commands": [remote_command(args)]}
        base, source = Path("."), "the command line"
    else:
        raise click.UsageError("give a job file (JOB.toml) or a command after --")
    # Options override the job file, which overrides its profile.
    given = {
        "profile": profile,
        "caps": parse_caps(caps) or None,
        "priority": priority,
        "wait_timeout": wait_timeout,
        "command_timeout": command_timeout,
    }
    data.update({k: v for k, v in given.items() if v is not None})
    # Local paths given here are relative to the working directory, not to the job file.
    ups = _transfers(upload, "--upload")
    downs = _transfers(fetch, "--fetch")
    data["upload"] = [
        *data.get("upload", []),
        *({"src": str(Path(t.src).absolute()), "dest": t.dest} for t in ups),
    ]
    data["fetch"] = [
        *data.get("fetch", []),
        *({"src": t.src, "dest": str(Path(t.dest).absolute())} for t in downs),
    ]
    spec = parse_job(data, profiles=state.config.profiles, base=base, source=source)
    streaming = fmt == "table"
    progress: list[Progress] = []

    def waiting(request: Request) -> None:
        if not progress:
            progress.append(Progress(request.id))
        progress[0](request)

    def on_status(status: JobStatus) -> None:
        request = status.request
        if status.phase is Phase.RUNNING and request is not None:
            message = f"request {request.id} running on {status.worker_uuid}"
            if progress:
                progress[0].done(message)
            else:
                click.echo(message, err=True)
        elif status.phase in (Phase.DONE, Phase.FAILED):
            why = f": {status.message}" if status.message else ""
            click.echo(f"job {status.phase.value}{why}", err=True)

    result = run_job(
        state.client(),
        spec,
        on_status=on_status if streaming else None,
        stdout=write_to(sys.stdout) if streaming else None,
        stderr=write_to(sys.stderr) if streaming else None,
        on_wait=waiting if streaming else None,
    )
    if not streaming:
        emit(fmt, result, lambda: "")
    raise click.exceptions.Exit(result.exit_status)


def openssh_host_key_options(access: Access, known_hosts: str) -> list[str]:
    """ssh options that check the board's host key against the keys its dryad reported
    (written to the known_hosts file given), or, when it reported none, say so and skip
    the check instead of failing on a host key nobody can vouch for."""
    if not access.host_keys:
        return ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    return [
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "CheckHostIP=no",
    ]  # fmt: skip


def warn_if_unchecked(access: Access) -> None:
    if not access.host_keys:
        click.echo(
            "warning: the board's dryad reported no SSH host keys, so nothing checks that "
            "the board is the real one (upgrade the dryad)",
            err=True,
        )


def _openssh(board: Board, command: tuple[str, ...]) -> int:
    """Log in with the OpenSSH client: the best terminal handling there is. The job's key
    and the board's host keys live in a directory of their own, removed afterwards."""
    access = board.access
    with tempfile.TemporaryDirectory(prefix="boruta-") as tmp:
        key = os.path.join(tmp, "job.pem")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(access.private_key_pem)
        known_hosts = os.path.join(tmp, "known_hosts")
        Path(known_hosts).write_text(access.known_hosts())
        argv = [
            "ssh",
            "-i", key,
            "-p", str(access.port),
            "-o", "IdentitiesOnly=yes",
            *openssh_host_key_options(access, known_hosts),
            "-o", "LogLevel=ERROR",
            f"{access.username}@{access.host}",
        ]  # fmt: skip
        if command:
            argv += ["--", remote_command(command)]
        return subprocess.call(argv)


def pick_board(boards: Sequence[Board], key: str) -> Board:
    """The board of that profile name, or at that place."""
    for board in boards:
        if board.name == key:
            return board
    if key.isdigit() and int(key) < len(boards):
        return boards[int(key)]
    names = ", ".join(b.name or str(b.index) for b in boards)
    raise click.UsageError(f"--board {key!r} names none of the request's boards ({names})")


@click.command("ssh")
@click.argument("args", nargs=-1, metavar="[REQ] [-- CMD...]")
@option(
    "--caps",
    multiple=True,
    metavar="KEY=VALUE",
    help=f"Lease a board with these caps for the session instead of REQ. {CAPS_HELP}",
)
@profile_options("Lease several boards at once instead (repeat for each); log in to --board.")
@option("-p", "--priority", type=PRIORITY, help="Priority of that lease: 1 (most important) to 16.")
@option(
    "--board",
    "board_key",
    metavar="NAME|INDEX",
    help="Of a request of several boards, the one to log in to: its profile's name, or its "
    "place from 0 (default: the first).",
)
@option(
    "--paramiko",
    "use_paramiko",
    is_flag=True,
    help="Use the built-in SSH client even if OpenSSH is installed.",
)
@pass_state
def ssh(
    state: State,
    args: tuple[str, ...],
    caps: tuple[str, ...],
    profiles: tuple[str, ...],
    together: str | None,
    priority: int | None,
    board_key: str | None,
    use_paramiko: bool,
) -> None:
    """A shell (or one command) on the board of request REQ, or of a new lease with --caps
    (or --profile, for several boards, maybe --together on one host or stack).

    The job is prolonged while the session lasts; a lease made with --caps or --profile
    is closed at the end, an existing request is left running. One command word is a
    shell command line; several are quoted one by one.
    """
    client = state.client()
    request_id: int | None = None
    command = args
    if caps and profiles:
        raise click.UsageError("give --caps or --profile options, not both")
    if together is not None and not profiles:
        raise click.UsageError("--together groups boards: give them as --profile options")
    if not caps and not profiles:
        if not args or not args[0].isdigit():
            raise click.UsageError("give a request id, or --caps for a new lease")
        request_id, command = int(args[0]), args[1:]
    progress: list[Progress] = []

    def waiting(request: Request) -> None:
        if not progress:
            progress.append(Progress(request.id))
        progress[0](request)

    if request_id is not None:
        lease = client.attach(request_id)
    elif profiles:
        lease = client.lease_boards(
            parse_profiles(profiles),
            together=parse_together_option(together),
            priority=priority or UNSET_PRIORITY,
            on_wait=waiting,
        ).lease
    else:
        lease = client.lease(parse_caps(caps), priority=priority or UNSET_PRIORITY, on_wait=waiting)
    with lease as board:
        if board_key is not None:
            board = pick_board(lease.boards, board_key)
        message = f"request {board.request.id} on {board.worker_uuid} as {board.access.username}"
        if progress:
            progress[0].done(message)
        else:
            click.echo(message, err=True)
        warn_if_unchecked(board.access)
        if shutil.which("ssh") and not use_paramiko:
            status = _openssh(board, command)
        elif command:
            result = board.ssh.run(
                remote_command(command),
                stdout=write_to(sys.stdout),
                stderr=write_to(sys.stderr),
            )
            status = result.exit_status
        else:
            status = board.ssh.shell()
    raise click.exceptions.Exit(status if status >= 0 else 255)


@click.command("status")
@output_option
@pass_state
def status(state: State, fmt: str) -> None:
    """The farm at a glance: boards by state, the queue, and your live requests."""
    client = state.client()
    workers = client.list_workers()
    live = client.list_requests(states=[RequestState.WAITING, RequestState.IN_PROGRESS])
    # With a token the local login says nothing: ask the scheduler who we are.
    me = client.whoami().user
    by_state = Counter(w.state.name for w in workers)
    mine = [r for r in live if r.owner == me]
    data = {
        "scheduler": client.target,
        "user": me,
        "workers": {s.name: by_state.get(s.name, 0) for s in WorkerState},
        "requests": {
            "waiting": sum(r.state is RequestState.WAITING for r in live),
            "in_progress": sum(r.state is RequestState.IN_PROGRESS for r in live),
        },
        "mine": mine,
    }

    def human() -> str:
        now = datetime.now(UTC)
        counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(by_state.items())) or "none"
        lines = [
            f"scheduler {client.target}, you are {me}",
            f"boards:   {len(workers)} ({counts})",
            f"requests: {data['requests']['waiting']} waiting, "  # type: ignore[index]
            f"{data['requests']['in_progress']} in progress",  # type: ignore[index]
        ]
        if mine:
            lines.append("\nyour live requests:")
            lines.append(
                table(
                    mine,
                    [
                        ("ID", lambda r: r.id),
                        ("STATE", lambda r: r.state),
                        ("WORKER", lambda r: r.job.worker_uuid if r.job else None),
                        ("AGE", lambda r: span(now - r.created_at)),
                        ("TIMEOUT IN", lambda r: span(r.job.timeout_at - now) if r.job else None),
                    ],
                )
            )
        return "\n".join(lines)

    emit(fmt, data, human)


@click.command("audit")
@option(
    "-n", "--limit", type=click.IntRange(1, 10000), default=50, help="At most this many events."
)
@output_option
@pass_state
def audit(state: State, limit: int, fmt: str) -> None:
    """Who did what, newest first: requests, boards, tokens, access handed out, refusals.
    Admins only."""
    events = state.client().audit_events(limit)
    columns: list[Column] = [
        ("TIME", lambda e: when(e.time)),
        ("WHO", lambda e: f"{e.actor} ({e.role})"),
        ("ACTION", lambda e: e.action),
        ("TARGET", lambda e: e.target),
        ("DETAIL", lambda e: e.detail),
    ]
    emit(fmt, events, lambda: table(events, columns))
