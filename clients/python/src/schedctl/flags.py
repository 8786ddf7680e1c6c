"""Scheduler messages name the API's fields (``no_wait``), as every client reads them;
schedctl's users know its options (``--no-wait``). The scheduler cannot know which client
called, so schedctl swaps a field for the option of the command that ran, where it has one."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import update_wrapper
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_COMMAND = "schedctl.command"
# Only snake_case words: "deadline" or "priority" also occur as plain English.
_FIELD = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")


def records_command(f: F) -> F:
    """Note which command runs, so that an error it ends with can be worded in its options."""

    def new(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        ctx.meta[_COMMAND] = ctx.command
        return f(*args, **kwargs)

    return update_wrapper(new, f)  # type: ignore[return-value]


def command_options(ctx: click.Context) -> frozenset[str]:
    """The long options of the command that ran (recorded by records_command), or none."""
    command = ctx.meta.get(_COMMAND)
    if not isinstance(command, click.Command):
        return frozenset()
    return frozenset(
        name
        for param in command.params
        if isinstance(param, click.Option)
        for name in param.opts
        if name.startswith("--")
    )


def name_options(message: str, options: frozenset[str]) -> str:
    """message with every API field that is one of options written as that option."""

    def swap(match: re.Match[str]) -> str:
        flag = "--" + match.group(0).replace("_", "-")
        return flag if flag in options else match.group(0)

    return _FIELD.sub(swap, message)
