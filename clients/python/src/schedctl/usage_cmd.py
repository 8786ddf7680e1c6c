"""schedctl usage: board time, jobs and waits per user or group over a period."""

from __future__ import annotations

from datetime import datetime

import click
from boruta_client import Usage, UsageBy, UsageTotals

from schedctl.cli import PAST, State, option, output_option, pass_state
from schedctl.output import Column, emit, span, table, when


def _hours(total: UsageTotals) -> str:
    return f"{total.board_time.total_seconds() / 3600:.2f}"


COLUMNS: list[Column] = [
    ("BOARD HOURS", _hours),
    ("JOBS", lambda t: str(t.jobs)),
    ("REQUESTS", lambda t: str(t.requests)),
    ("MEAN WAIT", lambda t: span(t.mean_wait) if t.requests else "-"),
    ("MAX WAIT", lambda t: span(t.max_wait) if t.requests else "-"),
    ("UNSTARTED", lambda t: str(t.unstarted)),
]


def usage_table(usage: Usage) -> str:
    """The period, then one line per user or group."""
    head = f"usage from {when(usage.since)} to {when(usage.until)} UTC, by {usage.by.name.lower()}"
    if not usage.totals:
        return f"{head}\nno usage in this period"
    key: Column = (usage.by.name, lambda t: t.key)
    return f"{head}\n{table(list(usage.totals), [key, *COLUMNS])}"


@click.command("usage")
@option(
    "--since",
    type=PAST,
    required=True,
    help="Start of the period: N[s|m|h|d] ago (7d, 12h) or an ISO 8601 time.",
)
@option(
    "--until",
    type=PAST,
    default=None,
    help="End of the period (excluded), as --since [default: now].",
)
@option(
    "--by",
    type=click.Choice(["user", "group"]),
    default="user",
    show_default=True,
    help="Sum per owner, or per group that granted the boards.",
)
@option("--owner", default="", help="Only this user's usage (admins; users see only their own).")
@output_option
@pass_state
def usage(
    state: State, since: datetime, until: datetime | None, by: str, owner: str, fmt: str
) -> None:
    """Board time, jobs and waiting time per user or per group over a period, from the
    scheduler's usage records. Users see their own usage; admins everyone's.

    BOARD HOURS counts every board of a job (two boards for an hour are two hours), only
    inside the period; a job still running counts up to now. JOBS and REQUESTS count those
    that started in the period, and the waits are theirs (created to started). UNSTARTED
    counts requests that ended in the period without ever starting (cancelled, timed out
    or invalid while waiting). By group, each job counts for the one group that granted
    its board: the first by name of the board's groups that its owner is in; "(open)" for
    boards with no group, "(none)" for requests that never got one.

    Example: schedctl usage --since 7d --by group"""
    if until is not None and until <= since:
        raise click.BadParameter("must be after --since", param_hint="--until")
    found = state.client().usage(since, until, by=UsageBy[by.upper()], owner=owner)
    emit(fmt, found, lambda: usage_table(found))
