"""schedctl workers ...: see the boards; admins put them into service and out of it."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from boruta_client import BorutaError, Worker, WorkerSort, WorkerState

from schedctl.cli import State, option, output_option, parse_caps, pass_state
from schedctl.output import Column, ago, caps_text, details, emit, emit_event, span, table, when

WORKER_COLUMNS: list[Column] = [
    ("UUID", lambda w: w.uuid),
    ("STATE", lambda w: w.state),
    ("GROUPS", lambda w: w.groups),
    ("CAPS", lambda w: caps_text(w.caps)),
    ("REQUEST", lambda w: w.request_id or held(w)),
    ("JOBS", lambda w: w.jobs_done),
    ("SEEN", lambda w: ago(w.last_seen) + " ago"),
    ("REASON", lambda w: reason_shown(w)),
]
SETTLED = {WorkerState.IDLE, WorkerState.MAINTENANCE, WorkerState.FAILED}
# Failures `workers show` lists (the scheduler keeps more; -o json gives them all).
RECENT_SHOWN = 5


def reason_shown(w: Worker) -> str:
    """The board's reason, or, while it drains, the reason it will go into maintenance with."""
    return f"draining: {w.drain_reason}" if w.drain_reason else w.reason


def held(w: Worker) -> str | None:
    """The request holding the board as collateral of its stack, marked as such."""
    return f"{w.collateral_of} (collateral)" if w.collateral_of else None


def worker_details(w: Worker) -> str:
    pairs: list[tuple[str, object]] = [
        ("uuid", w.uuid),
        ("state", w.state.name + (f" ({w.reason})" if w.reason else "")),
        ("groups", w.groups),
        ("caps", caps_text(w.caps)),
        ("request", w.request_id or held(w)),
        ("stack", w.stack),
        ("dryad", f"{w.dryad_address} (version {w.dryad_version or '?'})"),
        ("ssh", w.ssh_address),
        ("registered", when(w.registered_at)),
        ("last seen", f"{when(w.last_seen)} ({ago(w.last_seen)} ago)"),
        ("jobs done", w.jobs_done),
        ("failures", f"{w.failures} in all, {w.failures_per_day:.2f} per day over the last week"),
    ]
    if w.drain_reason:
        pairs.append(
            ("draining", f"into MAINTENANCE when request {w.request_id} ends: {w.drain_reason}")
        )
    if w.quarantined:
        pairs.append(("quarantined", "yes: set it IDLE once it is fixed"))
    for n, failure in enumerate(w.recent_failures[:RECENT_SHOWN]):
        kind = failure.kind.name.lower().replace("_", " ")
        pairs.append(
            ("recent failures" if n == 0 else "", f"{when(failure.time)} ({kind}) {failure.reason}")
        )
    s = w.host_status
    if s is not None:
        gib = 1024**3
        pairs += [
            ("load", f"{s.load_1m:.2f}"),
            ("memory free", f"{s.memory_available_bytes / gib:.1f} GiB"),
            ("memory total", f"{s.memory_total_bytes / gib:.1f} GiB"),
            ("disk free", f"{s.disk_free_bytes / gib:.1f} GiB"),
            ("uptime", span(s.uptime)),
        ]
    return details(pairs)


@click.group("workers")
def workers_group() -> None:
    """See the boards of the farm; admins run them."""


@workers_group.command("list")
@option(
    "-s",
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.name for s in WorkerState], case_sensitive=False),
    help="Only these states (repeat for more).",
)
@option("-g", "--group", "groups", multiple=True, help="Only boards in one of these groups.")
@option("--caps", "caps", multiple=True, metavar="KEY=VALUE", help="Only boards with these caps.")
@option(
    "--sort",
    type=click.Choice([s.name.lower() for s in WorkerSort]),
    default="uuid",
    help="Field to sort by.",
)
@output_option
@pass_state
def list_workers(
    state: State,
    states: tuple[str, ...],
    groups: tuple[str, ...],
    caps: tuple[str, ...],
    sort: str,
    fmt: str,
) -> None:
    """List the boards."""
    found = state.client().list_workers(
        states=[WorkerState[s.upper()] for s in states],
        groups=groups,
        caps=parse_caps(caps),
        sort_by=WorkerSort[sort.upper()],
    )
    emit(fmt, found, lambda: table(found, WORKER_COLUMNS))


@workers_group.command("show")
@click.argument("uuid")
@output_option
@pass_state
def show_worker(state: State, uuid: str, fmt: str) -> None:
    """Everything about one board, with its host's resource usage."""
    worker = state.client().get_worker(uuid)
    emit(fmt, worker, lambda: worker_details(worker))


@workers_group.command("history")
@click.argument("uuid")
@option(
    "-n", "--limit", type=click.IntRange(1, 1000), default=20, help="At most this many entries."
)
@output_option
@pass_state
def worker_history(state: State, uuid: str, limit: int, fmt: str) -> None:
    """A board's state changes, newest first."""
    entries = state.client().worker_history(uuid, limit=limit)
    columns: list[Column] = [
        ("TIME", lambda e: when(e.time)),
        ("FROM", lambda e: e.from_state),
        ("TO", lambda e: e.to_state),
        ("REASON", lambda e: e.reason),
    ]
    emit(fmt, entries, lambda: table(entries, columns))


def settled(worker: Worker, target: WorkerState) -> bool:
    """The dryad has answered: the board left PREPARE or BUSY (a board put into service
    may already run a waiting request's job)."""
    return worker.state in SETTLED or (
        target is WorkerState.IDLE and worker.state is WorkerState.RUNNING
    )


def wait_settled(state: State, uuid: str, target: WorkerState, timeout: float) -> Worker:
    """Until the board has settled, or timeout."""
    client = state.client()
    with client.watch_workers(uuids=[uuid], include_current=True, timeout=timeout) as watch:
        for change in watch:
            if change.removed or settled(change.worker, target):
                return change.worker
    worker = client.get_worker(uuid)
    if not settled(worker, target):
        raise BorutaError(f"{uuid} is still {worker.state.name} after {timeout:g} s")
    return worker


def _set_state(
    state: State,
    uuid: str,
    target: WorkerState,
    reason: str,
    wait: bool,
    fmt: str,
    after_job: bool = False,
) -> None:
    worker = state.client().set_worker_state(uuid, target, reason, after_job)
    if worker.drain_reason:
        # Its job may run for hours: waiting for MAINTENANCE is not worth it.
        emit(fmt, worker, lambda: table([worker], WORKER_COLUMNS))
        click.echo(
            f"{uuid} will go into maintenance when request {worker.request_id} ends", err=True
        )
        return
    if wait and not settled(worker, target):
        worker = wait_settled(state, uuid, target, 120)
    emit(fmt, worker, lambda: table([worker], WORKER_COLUMNS))
    if wait and worker.state not in (target, WorkerState.RUNNING):
        raise click.exceptions.Exit(1)


_WAIT = option("--wait/--no-wait", default=True, help="Wait until the board's dryad has done it.")


@workers_group.command("maintenance")
@click.argument("uuid")
@option("-r", "--reason", default="", help="Why; shown on the board and kept in its history.")
@option(
    "--after-job",
    is_flag=True,
    help="A running board takes no new job and goes when its job ends (its job goes on); "
    "`workers idle` calls that off.",
)
@_WAIT
@output_option
@pass_state
def maintenance(
    state: State, uuid: str, reason: str, after_job: bool, wait: bool, fmt: str
) -> None:
    """Take a board out of service (a running job on it FAILS, unless --after-job). Admins
    only."""
    _set_state(state, uuid, WorkerState.MAINTENANCE, reason, wait, fmt, after_job)


@workers_group.command("idle")
@click.argument("uuid")
@option("-r", "--reason", default="", help="Why, for the board's history.")
@_WAIT
@output_option
@pass_state
def idle(state: State, uuid: str, reason: str, wait: bool, fmt: str) -> None:
    """Put a board into service: prepare it, then IDLE (a draining board keeps its job and
    stays in service). Admins only."""
    _set_state(state, uuid, WorkerState.IDLE, reason, wait, fmt)


@workers_group.command("groups")
@click.argument("uuid")
@click.argument("groups", nargs=-1)
@option("--none", "clear", is_flag=True, help="Remove every group: the board is open to all.")
@output_option
@pass_state
def set_groups(state: State, uuid: str, groups: tuple[str, ...], clear: bool, fmt: str) -> None:
    """Replace a board's groups (only their members may use it). Admins only."""
    if not groups and not clear:
        raise click.UsageError("name the groups, or give --none to open the board to all")
    if groups and clear:
        raise click.UsageError("give groups or --none, not both")
    worker = state.client().set_worker_groups(uuid, groups)
    emit(fmt, worker, lambda: table([worker], WORKER_COLUMNS))


@workers_group.command("deregister")
@click.argument("uuid")
@option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def deregister(state: State, uuid: str, yes: bool) -> None:
    """Remove a board in MAINTENANCE or FAILED from the farm. Admins only."""
    if not yes:
        click.confirm(f"remove {uuid} from the farm?", abort=True, err=True)
    state.client().deregister_worker(uuid)
    click.echo(f"{uuid} deregistered")


@workers_group.command("watch")
@option(
    "-s",
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.name for s in WorkerState], case_sensitive=False),
    help="Only changes into these states.",
)
@option("--current/--no-current", default=True, help="First show every board as it is now.")
@output_option
@pass_state
def watch_workers(state: State, states: tuple[str, ...], current: bool, fmt: str) -> None:
    """Print each change of a board as it happens, until Ctrl-C."""
    with state.client().watch_workers(
        states=[WorkerState[s.upper()] for s in states], include_current=current
    ) as watch:
        for change in watch:
            w = change.worker
            line = f"{when(datetime.now(UTC))}  {w.uuid}  " + (
                "DEREGISTERED" if change.removed else f"{w.state.name:<11}"
            )
            emit_event(fmt, change, line + (f"  ({w.reason})" if w.reason else ""))
