"""schedctl stacks ...: admins name the boards wired together (stacks)."""

from __future__ import annotations

import click
from boruta_client import Stack

from schedctl.cli import State, option, output_option, pass_state
from schedctl.output import Column, emit, table, when

STACK_COLUMNS: list[Column] = [
    ("NAME", lambda s: s.name),
    ("WORKERS", lambda s: ",".join(s.worker_uuids)),
    ("HELD BY", lambda s: s.holder),
    ("CREATED", lambda s: when(s.created_at)),
]


@click.group("stacks")
def stacks_group() -> None:
    """Boards wired together (a phone and the relay on its battery). While a request runs
    on a board of a stack, the stack's other boards are its collateral: no other request
    is given them until it ends (the same request may take them). Admins only."""


@stacks_group.command("create")
@click.argument("name")
@click.argument("uuids", nargs=-1, required=True)
@output_option
@pass_state
def create(state: State, name: str, uuids: tuple[str, ...], fmt: str) -> None:
    """Make stack NAME of two or more registered boards (UUIDS), none in another stack.

    Example: schedctl stacks create bench1 phone-1 relay-1"""
    stack = state.client().create_stack(name, uuids)
    emit(fmt, stack, lambda: table([stack], STACK_COLUMNS))


@stacks_group.command("list")
@output_option
@pass_state
def list_stacks(state: State, fmt: str) -> None:
    """Every stack, with the request that holds it (its other boards are collateral)."""
    found: list[Stack] = state.client().list_stacks()
    emit(fmt, found, lambda: table(found, STACK_COLUMNS))


@stacks_group.command("delete")
@click.argument("name")
@option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def delete(state: State, name: str, yes: bool) -> None:
    """Forget stack NAME; its collateral is free at once."""
    if not yes:
        click.confirm(f"delete stack {name}?", abort=True, err=True)
    state.client().delete_stack(name)
    click.echo(f"stack {name} deleted")
