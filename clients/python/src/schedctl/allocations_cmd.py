"""schedctl allocations: what each running request holds (admins)."""

from __future__ import annotations

import click
from boruta_client import Allocation

from schedctl.cli import State, output_option, pass_state
from schedctl.output import Column, emit, table, when


def boards_text(a: Allocation) -> str:
    """Each board as PROFILE=WORKER@HOST, with [STACK] when it is in one."""
    return " ".join(
        f"{b.profile or i}={b.worker_uuid}@{b.dryad_address}" + (f"[{b.stack}]" if b.stack else "")
        for i, b in enumerate(a.boards)
    )


ALLOCATION_COLUMNS: list[Column] = [
    ("REQUEST", lambda a: a.request_id),
    ("OWNER", lambda a: a.owner),
    ("BOARDS (PROFILE=WORKER@HOST[STACK])", boards_text),
    ("COLLATERAL", lambda a: ",".join(a.collateral) or "-"),
    ("TIMES OUT", lambda a: when(a.timeout_at)),
]


@click.command("allocations")
@output_option
@pass_state
def allocations(state: State, fmt: str) -> None:
    """Every running request with what it holds: a board per profile (its worker, host and
    stack) and the collateral of its stacks. Admins only."""
    found = state.client().list_allocations()
    emit(fmt, found, lambda: table(found, ALLOCATION_COLUMNS))
