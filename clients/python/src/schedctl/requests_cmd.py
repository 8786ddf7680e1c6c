"""schedctl requests ...: queue, inspect, change and watch requests."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from boruta_client import (
    Access,
    Colocation,
    Job,
    PendingBoard,
    PendingReason,
    Request,
    RequestSort,
    RequestState,
)

from schedctl.cli import (
    DURATION,
    PRIORITY,
    TIME,
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
    reason_text,
    request_id_arg,
)
from schedctl.jobs_cmd import openssh_host_key_options, warn_if_unchecked
from schedctl.output import Column, ago, caps_text, details, emit, emit_event, span, table, when


def together_words(groups: Iterable[Colocation]) -> str:
    """Co-located groups as a person reads them: "dut, relay on one host"."""
    return "; ".join(
        (", ".join(g.profiles) or "every board") + f" on one {g.placement.name.lower()}"
        for g in groups
    )


def profiles_text(r: Request) -> str:
    """The caps asked for: of the one board, or each profile's as NAME: CAPS; ..."""
    if not r.profiles:
        return caps_text(r.caps)
    return "; ".join(f"{p.name or i}: {caps_text(p.caps)}" for i, p in enumerate(r.profiles))


def workers_text(r: Request) -> str | None:
    jobs = r.jobs or ((r.job,) if r.job else ())
    return ",".join(j.worker_uuid for j in jobs) or None


def board_text(board: PendingBoard) -> str:
    """One board a request waits for: its state, who holds it and until when."""
    text = f"{board.uuid} {board.state.name}"
    if board.held_by:
        text += f", {'collateral of' if board.collateral else 'running'} request {board.held_by}"
    if board.reserved_for:
        text += f", reserved for request {board.reserved_for}"
    if board.frees_at is not None:
        text += f", free by {when(board.frees_at)} unless prolonged"
    if board.frees_at_latest is not None:
        text += f" ({when(board.frees_at_latest)} at the latest)"
    return text


def pending_pairs(why: PendingReason) -> list[tuple[str, object]]:
    """The lines of `requests show` about why a request waits."""
    pairs: list[tuple[str, object]] = [("why it waits", why.message)]
    if why.expected_start is not None:
        pairs.append(("expected start", f"{when(why.expected_start)} unless jobs are prolonged"))
    if why.latest_start is not None:
        pairs.append(("latest start", f"{when(why.latest_start)} unless boards fail"))
    if why.reserved:
        pairs.append(("reserved boards", ", ".join(why.reserved)))
    for index, board in enumerate(why.boards):
        pairs.append(("boards" if index == 0 else "", board_text(board)))
    if why.boards_total > len(why.boards):
        pairs.append(("", f"and {why.boards_total - len(why.boards)} more"))
    return pairs


REQUEST_COLUMNS: list[Column] = [
    ("ID", lambda r: r.id),
    ("STATE", lambda r: r.state),
    ("PRI", lambda r: r.priority),
    ("OWNER", lambda r: r.owner),
    ("CAPS", profiles_text),
    ("WORKER", workers_text),
    ("AGE", lambda r: ago(r.created_at)),
    ("REASON", reason_text),
]


def request_details(r: Request) -> str:
    job = r.job
    now = datetime.now(UTC)
    pairs: list[tuple[str, object]] = [
        ("id", r.id),
        ("state", r.state.name + (f" ({r.reason})" if r.reason else "")),
        ("priority", r.priority),
        ("owner", r.owner),
        ("groups", r.owner_groups),
        ("caps", profiles_text(r)),
        ("created", f"{when(r.created_at)} ({ago(r.created_at, now)} ago)"),
        ("valid after", when(r.valid_after)),
        ("deadline", when(r.deadline)),
    ]
    if r.job_timeout is not None:
        pairs.append(("job timeout asked", span(r.job_timeout)))
    if r.queue_position is not None:
        pairs.append(("queue position", f"{r.queue_position} ahead"))
    if r.pending_reason is not None:
        pairs += pending_pairs(r.pending_reason)
    if r.together:
        pairs.append(("together", together_words(r.together)))
    for index, profile in enumerate(r.profiles):
        board = f"board {profile.name or index}"
        worker = r.jobs[index].worker_uuid if index < len(r.jobs) else "(waiting)"
        pairs.append((board, f"{caps_text(profile.caps)} on {worker}"))
    if job is not None:
        pairs += [
            ("worker", workers_text(r)),
            ("job started", when(job.started_at)),
            ("job timeout", when(job.timeout_at)),
            ("prolonged", f"{job.prolong_count} times (until {when(job.max_timeout_at)} at most)"),
        ]
    return details(pairs)


def request_line(r: Request) -> str:
    """One change of a request, for a person watching."""
    line = f"{when(datetime.now(UTC))}  {r.id:>6}  {r.state.name:<11}  {r.owner}  "
    line += profiles_text(r)
    if r.job is not None:
        line += f"  on {workers_text(r)}"
    return line + (f"  ({r.reason})" if r.reason else "")


@click.group("requests")
def requests_group() -> None:
    """Ask for boards, look at requests, change and close them."""


@requests_group.command("new")
@click.argument("caps", nargs=-1, metavar="KEY=VALUE...")
@profile_options("One board of several to take at once (repeat for each); instead of KEY=VALUE.")
@option(
    "-p",
    "--priority",
    type=PRIORITY,
    help="1 (most important) to 16; default: the scheduler's.",
)
@option("--valid-after", type=TIME, help="Not before this time (ISO 8601 or +10m).")
@option("--deadline", type=TIME, help="Give up waiting at this time (ISO 8601 or +2h).")
@option(
    "--accept-unsatisfiable", is_flag=True, help="Queue even if no registered board could serve it."
)
@option("--no-wait", is_flag=True, help="Run now or fail with 'busy' (exit 75); never queue.")
@option(
    "--job-timeout",
    type=DURATION,
    help="End the job this long after it starts or was last prolonged (e.g. 5m); "
    "default: the scheduler's.",
)
@option(
    "--idempotency-key",
    metavar="KEY",
    help="Make at most one request for this key (e.g. a CI job's id): the command run again "
    "with it and the same arguments shows that request; default: a new key.",
)
@output_option
@pass_state
def new_request(
    state: State,
    caps: tuple[str, ...],
    profiles: tuple[str, ...],
    together: str | None,
    priority: int | None,
    valid_after: datetime | None,
    deadline: datetime | None,
    accept_unsatisfiable: bool,
    no_wait: bool,
    job_timeout: timedelta | None,
    idempotency_key: str | None,
    fmt: str,
) -> None:
    """Queue a request for a board with these caps (none: any board).

    Each cap is KEY=VALUE, and the board must have them all. A VALUE may name
    alternatives or list items:

    \b
      'os=linux|android'                   a board whose os is either
      circuits=usb.pc.vcc,handset.battery  a board whose circuits list holds both
                                           (circuits=usb.pc.vcc matches it too)
      'circuits=vcc,battery|vcc,usb'       vcc and battery, or vcc and usb

    Quote | from the shell. An empty alternative or item (linux||android, vcc,)
    or spaces around | or , are refused (exit 64).

    Several boards at once (all or none; each a different board, none held
    while another is missing): one --profile per board, each an optional
    NAME: and its caps, in place of KEY=VALUE arguments:

    \b
      --profile dut:board=rpi4,camera=yes --profile relay:circuits=vcc,battery

    --together keeps such boards together (docs/api.md, co-location): 'host'
    puts every board on one host (served by one dryad), 'stack' in one stack;
    groups of named profiles, separated by ';', keep only those together:

    \b
      --profile dut:board=phone --profile relay:board=relay --together host
      --profile a:board=x --profile b:board=y --profile c:board=z \\
          --together 'host:a,b'        a and b on one host, c anywhere
    """
    if caps and profiles:
        raise click.UsageError("give KEY=VALUE caps or --profile options, not both")
    if together is not None and not profiles:
        raise click.UsageError("--together groups boards: give them as --profile options")
    request = state.client().new_request(
        parse_caps(caps),
        profiles=parse_profiles(profiles) if profiles else None,
        together=parse_together_option(together),
        priority=priority or UNSET_PRIORITY,
        valid_after=valid_after,
        deadline=deadline,
        accept_unsatisfiable=accept_unsatisfiable,
        no_wait=no_wait,
        job_timeout=job_timeout,
        idempotency_key=idempotency_key,
    )
    emit(fmt, request, lambda: table([request], REQUEST_COLUMNS))


@requests_group.command("list")
@option(
    "-s",
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.name for s in RequestState], case_sensitive=False),
    help="Only these states (repeat for more).",
)
@option("--owner", "owners", multiple=True, help="Only requests of these users.")
@option("--mine", is_flag=True, help="Only my requests.")
@option("--live", is_flag=True, help="Only WAITING and IN_PROGRESS requests.")
@option(
    "--sort",
    type=click.Choice([s.name.lower() for s in RequestSort]),
    default="id",
    help="Field to sort by.",
)
@option("--asc/--desc", "ascending", default=False, help="Sort order (default: newest first).")
@option("-n", "--limit", type=click.IntRange(min=1), default=50, help="At most this many.")
@output_option
@pass_state
def list_requests(
    state: State,
    states: tuple[str, ...],
    owners: tuple[str, ...],
    mine: bool,
    live: bool,
    sort: str,
    ascending: bool,
    limit: int,
    fmt: str,
) -> None:
    """List requests, newest first."""
    client = state.client()
    wanted = {RequestState[s.upper()] for s in states}
    if live:
        wanted |= {RequestState.WAITING, RequestState.IN_PROGRESS}
    who = list(owners) + ([client.identity.user] if mine else [])
    found = client.list_requests(
        states=sorted(wanted, key=lambda s: s.value),
        owners=who,
        sort_by=RequestSort[sort.upper()],
        descending=not ascending,
        limit=limit,
    )
    emit(fmt, found, lambda: table(found, REQUEST_COLUMNS))


@requests_group.command("show")
@request_id_arg
@output_option
@pass_state
def show_request(state: State, request_id: int, fmt: str) -> None:
    """Everything about one request (a waiting one with its queue position, why it waits
    and when it should start)."""
    request = state.client().get_request(request_id)
    emit(fmt, request, lambda: request_details(request))


@requests_group.command("update")
@request_id_arg
@option("-p", "--priority", type=PRIORITY, help="New priority: 1 (most important) to 16.")
@option("--valid-after", type=TIME, help="New not-before time.")
@option("--deadline", type=TIME, help="New deadline.")
@output_option
@pass_state
def update_request(
    state: State,
    request_id: int,
    priority: int | None,
    valid_after: datetime | None,
    deadline: datetime | None,
    fmt: str,
) -> None:
    """Change a WAITING request."""
    if priority is None and valid_after is None and deadline is None:
        raise click.UsageError("nothing to change: give --priority, --valid-after or --deadline")
    request = state.client().update_request(
        request_id, priority=priority, valid_after=valid_after, deadline=deadline
    )
    emit(fmt, request, lambda: table([request], REQUEST_COLUMNS))


@requests_group.command("close")
@request_id_arg
@output_option
@pass_state
def close_request(state: State, request_id: int, fmt: str) -> None:
    """Cancel a waiting request, or end its job and give the board back."""
    request = state.client().close_request(request_id)
    emit(fmt, request, lambda: table([request], REQUEST_COLUMNS))


@requests_group.command("prolong")
@request_id_arg
@output_option
@pass_state
def prolong_request(state: State, request_id: int, fmt: str) -> None:
    """Push a running job's timeout further."""
    job = state.client().prolong_access(request_id)
    emit(
        fmt,
        job,
        lambda: (
            f"request {request_id} now times out at {when(job.timeout_at)} "
            f"(prolonged {job.prolong_count} times)"
        ),
    )


def key_path(request_id: int, chosen: str | None) -> Path:
    if chosen:
        return Path(chosen)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "boruta" / "keys" / f"request-{request_id}.pem"


def known_hosts_path(key: Path) -> Path:
    """The board's host keys are kept beside the job's key: request-7.pem, request-7.known_hosts."""
    return key.with_name(key.stem + ".known_hosts")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_NOFOLLOW: a planted symlink must not redirect the file elsewhere.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def save_key(access: Access, path: Path) -> None:
    """Write the job's private key readable by its owner only, and never print it; and
    the board's host keys beside it, for ssh to check the board with."""
    _write_private(path, access.private_key_pem)
    _write_private(known_hosts_path(path), access.known_hosts())


def ssh_command(a: Access, key: Path) -> str:
    options = openssh_host_key_options(a, str(known_hosts_path(key)))
    login = f"{a.username}@{a.host}"
    return shlex.join(
        ["ssh", "-i", str(key), "-p", str(a.port), "-o", "IdentitiesOnly=yes", *options, login]
    )


@requests_group.command("acquire")
@request_id_arg
@option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait at most (default: until the request ends).",
)
@option(
    "--key-file",
    type=click.Path(dir_okay=False),
    help="Where to save the job's private key (default: ~/.cache/boruta/keys/request-REQ.pem).",
)
@output_option
@pass_state
def acquire(
    state: State, request_id: int, timeout: float | None, key_file: str | None, fmt: str
) -> None:
    """Wait until the request runs, save its key and print how to log in."""
    progress = Progress(request_id)
    acquired = state.client().acquire_worker(
        request_id, timeout=timeout, on_wait=progress, poll_interval=1.0
    )
    boards = acquired.boards
    workers = ", ".join(b.job.worker_uuid for b in boards) or acquired.job.worker_uuid
    progress.done(f"request {request_id} runs on {workers}")
    path = key_path(request_id, key_file)
    if not boards:
        data = login_data(acquired.access, acquired.job, path)
        emit(fmt, data, lambda: details(login_lines(data, acquired.access, acquired.job, path)))
        return
    # One key per board: request-7-dut.pem, request-7-relay.pem (or -0, -1 if unnamed).
    paths = [
        path.with_name(f"{path.stem}-{b.name or i}{path.suffix}") for i, b in enumerate(boards)
    ]
    each = [login_data(b.access, b.job, p) for b, p in zip(boards, paths, strict=True)]
    for board, data in zip(boards, each, strict=True):
        data["name"] = board.name
    lines: list[tuple[str, object]] = []
    for index, (board, board_path) in enumerate(zip(boards, paths, strict=True)):
        lines.append((f"board {board.name or index}", board.job.worker_uuid))
        lines += login_lines(each[index], board.access, board.job, board_path)
    emit(fmt, {"boards": each}, lambda: details(lines))


def login_data(access: Access, job: Job, path: Path) -> dict[str, object]:
    """Save one board's key and host keys; what to show about logging in to it."""
    warn_if_unchecked(access)
    save_key(access, path)
    return {
        "host": access.host,
        "port": access.port,
        "username": access.username,
        "key_file": str(path),
        "known_hosts_file": str(known_hosts_path(path)),
        "job": job,
    }


def login_lines(
    data: dict[str, object], access: Access, job: Job, path: Path
) -> list[tuple[str, object]]:
    return [
        *((k, v) for k, v in data.items() if k not in ("job", "name")),
        ("timeout", when(job.timeout_at)),
        ("login", ssh_command(access, path)),
    ]


@requests_group.command("watch")
@option("--id", "ids", multiple=True, type=int, help="Only these requests.")
@option(
    "-s",
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.name for s in RequestState], case_sensitive=False),
    help="Only changes into these states.",
)
@option("--owner", "owners", multiple=True, help="Only requests of these users.")
@option(
    "--current/--no-current", default=True, help="First show the live requests as they are now."
)
@output_option
@pass_state
def watch_requests(
    state: State,
    ids: tuple[int, ...],
    states: tuple[str, ...],
    owners: tuple[str, ...],
    current: bool,
    fmt: str,
) -> None:
    """Print each change of a request as it happens, until Ctrl-C."""
    watch = state.client().watch_requests(
        ids=ids,
        states=[RequestState[s.upper()] for s in states],
        owners=owners,
        include_current=current,
    )
    with watch:
        for request in watch:
            emit_event(fmt, request, request_line(request))
