"""What every schedctl command shares: the connection settings, options, parsing helpers
and the progress line shown while a request waits."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click
from boruta_client import Colocation, InvalidArgument, PendingCode, Request
from boruta_client.config import ClientConfig, Context

from schedctl.flags import records_command
from schedctl.output import FORMATS, span

# The client (gRPC, asyncio, the generated code of every service) loads when a command first
# calls the scheduler, not for --help, completion or a usage error.
if TYPE_CHECKING:
    from boruta_client import Client

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    """The resolved connection settings of this run, and the client made from them."""

    config: ClientConfig
    context: Context
    _client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            from boruta_client import Client

            self._client = Client(context=self.context)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def pass_state(f: F) -> F:
    """click's pass decorator for State that also notes which command runs (for flags.py)."""
    return records_command(click.make_pass_decorator(State)(f))  # type: ignore[return-value]


def option(*names: str, **kwargs: Any) -> Callable[[F], F]:
    """click.option that shows its BORUTA_* environment variable in --help."""
    kwargs.setdefault("show_envvar", True)
    return click.option(*names, **kwargs)


def profile_options(help_text: str) -> Callable[[F], F]:
    """--profile (one board of several, repeated) and --together (which of them share a
    host or stack)."""

    def add(fn: F) -> F:
        fn = option("--together", metavar="GROUPS", help=TOGETHER_HELP)(fn)
        return option(
            "--profile",
            "profiles",
            multiple=True,
            metavar="[NAME:]KEY=VALUE,...",
            help=help_text,
        )(fn)

    return add


def output_option(fn: F) -> F:
    return option(
        "-o",
        "--output",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        envvar="BORUTA_OUTPUT",
        help="How to print data.",
    )(fn)


# A comma followed by KEY= starts another cap; any other comma is part of the value, a list.
_CAP_START = re.compile(r"\s*([A-Za-z0-9._:/-]+)=(.*)", re.DOTALL)

CAPS_HELP = (
    "KEY=VALUE: the board's KEY has this value. VALUE may name alternatives, "
    "'os=linux|android' (either; quote the | from the shell), and items of a list the "
    "board's value must hold, circuits=usb.pc.vcc,handset.battery (a relay wired for both; "
    "a plain circuits=usb.pc.vcc matches it too); 'a,b|c' is a and b, or c. Several caps: "
    "repeat, or join them with commas (board=rpi4,camera=yes)."
)


def parse_caps(items: Iterable[str]) -> dict[str, str]:
    """KEY=VALUE words (or comma-separated lists of them) into a caps mapping; a comma not
    followed by KEY= belongs to the value (a list of items, passed on as written)."""
    caps: dict[str, str] = {}
    for item in items:
        key: str | None = None
        for piece in item.split(","):
            start = _CAP_START.fullmatch(piece)
            if start is not None:
                key = start.group(1)
                caps[key] = start.group(2).strip()
            elif key is not None:
                caps[key] += "," + piece.strip()
            elif piece.strip():
                raise click.BadParameter(f"{piece!r} is not KEY=VALUE", param_hint="caps")
    return caps


_PROFILE_NAME = re.compile(r"([^=:]*):(.*)")
_HINT = "--profile"


def parse_profiles(items: Iterable[str]) -> dict[str, dict[str, str]] | list[dict[str, str]]:
    """--profile values, [NAME:]KEY=VALUE,..., into profiles: named (a mapping) when every
    one has a NAME, unnamed (a list) when none has; a mix is refused."""
    named: dict[str, dict[str, str]] = {}
    unnamed: list[dict[str, str]] = []
    for item in items:
        found = _PROFILE_NAME.fullmatch(item)
        if found is None:
            unnamed.append(parse_caps([item]))
            continue
        name = found.group(1).strip()
        if not name:
            raise click.BadParameter(
                f"{item!r} has an empty NAME before ':'", param_hint="--profile"
            )
        if name in named:
            raise click.BadParameter(
                f"profile name {name!r} is given twice", param_hint="--profile"
            )
        named[name] = parse_caps([found.group(2)])
    if named and unnamed:
        raise click.BadParameter(
            "name every --profile (NAME:KEY=VALUE,...) or none of them", param_hint=_HINT
        )
    return named or unnamed


TOGETHER_HELP = (
    "Keep boards together: 'host' (every board on one host, one dryad) or 'stack' (in one "
    "stack), or groups of named profiles, 'host:dut,relay;stack:a,b'."
)


def parse_together_option(text: str | None) -> tuple[Colocation, ...] | None:
    """--together as groups; a malformed value is a usage error naming what to fix."""
    if text is None:
        return None
    from boruta_client._convert import parse_together

    try:
        return parse_together(text)
    except InvalidArgument as error:
        raise click.BadParameter(str(error), param_hint="--together") from None


_RELATIVE = re.compile(r"^\+(\d+(?:\.\d+)?)([smhd])$")
_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DurationParam(click.ParamType):  # type: ignore[type-arg]
    """A length of time longer than zero: N[s|m|h|d], e.g. 90s or 5m. Zero is refused: on
    the wire it means "not given", which would quietly become the scheduler's default."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        match = _SPAN.match(str(value).strip())
        if not match:
            self.fail(f"{value!r} is not N[s|m|h|d], e.g. 90s or 5m", param, ctx)
        span = timedelta(seconds=float(match.group(1)) * _UNIT[match.group(2)])
        if not span:
            self.fail("must be longer than 0; leave the option out for the default", param, ctx)
        return span


DURATION = DurationParam()

# 1 is the most important; 0 is not a priority but the API's "not given" (the scheduler's
# default), so the option refuses it rather than silently meaning the default.
PRIORITY = click.IntRange(1, 16)
UNSET_PRIORITY = 0


class TimeParam(click.ParamType):  # type: ignore[type-arg]
    """A moment: ISO 8601 (UTC unless it names a zone) or +N[s|m|h|d] from now."""

    name = "TIME"
    # A span from now, forward (+10m) or back (7d ago), and what else the text may be.
    _span = _RELATIVE
    _sign = 1
    _forms = "neither ISO 8601 nor +N[s|m|h|d]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        match = self._span.match(text)
        if match:
            seconds = float(match.group(1)) * _UNIT[match.group(2)]
            return datetime.now(UTC) + timedelta(seconds=self._sign * seconds)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is {self._forms}", param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


TIME = TimeParam()


class PastParam(TimeParam):
    """A moment in the past: N[s|m|h|d] ago (7d, 12h) or ISO 8601 (UTC unless it names a
    zone)."""

    name = "AGO|TIME"
    _span = _SPAN
    _sign = -1
    _forms = "neither N[s|m|h|d] ago (7d, 12h) nor ISO 8601"


PAST = PastParam()


def request_id_arg(fn: F) -> F:
    return click.argument("request_id", type=click.IntRange(min=1), metavar="REQ")(fn)


# The REASON column of a waiting request: its pending reason in a word or two.
PENDING_SHORT = {
    PendingCode.NO_MATCHING_BOARD: "no such board",
    PendingCode.NO_BOARD_IN_GROUPS: "no board in groups",
    PendingCode.NOT_VALID_YET: "not valid yet",
    PendingCode.BOARDS_UNAVAILABLE: "boards unavailable",
    PendingCode.WAITING_FOR_SET: "waiting for set",
    PendingCode.BOARDS_BUSY: "boards busy",
}


def reason_text(r: Request) -> str:
    """Why the request is in its state: the stored reason, or why a waiting one waits."""
    why = r.pending_reason
    if r.reason or why is None:
        return r.reason
    if why.code is PendingCode.HIGHER_PRIORITY:
        return f"{why.requests_ahead} ahead"
    return PENDING_SHORT.get(why.code, why.code.name.lower())


class Progress:
    """The live line on stderr while a request waits: state, queue position, why it
    waits, time waited."""

    def __init__(self, request_id: int) -> None:
        self.request_id = request_id
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._last = ""

    def __call__(self, request: Request) -> None:
        position = "" if request.queue_position is None else f", {request.queue_position} ahead"
        why = request.pending_reason
        if why is not None and why.code is not PendingCode.HIGHER_PRIORITY:
            position += f" ({reason_text(request)})"
        waited = span(timedelta(seconds=time.monotonic() - self.started))
        line = f"request {request.id} {request.state.name}{position}, waiting {waited}"
        if self.tty:
            click.echo(f"\r\033[K{line}", nl=False, err=True)
        elif line.split(", waiting")[0] != self._last.split(", waiting")[0]:
            click.echo(line, err=True)
        self._last = line

    def done(self, message: str) -> None:
        if self.tty:
            click.echo("\r\033[K", nl=False, err=True)
        click.echo(message, err=True)
