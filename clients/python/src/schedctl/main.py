"""schedctl's entry point: the root command, its connection options and error handling."""

from __future__ import annotations

import signal
from typing import Any

import click
from boruta_client import BorutaError
from boruta_client.config import find_farm

from schedctl import exits
from schedctl.allocations_cmd import allocations
from schedctl.cli import State, option
from schedctl.flags import command_options, name_options
from schedctl.jobs_cmd import audit, run, ssh, status
from schedctl.pki_cmd import pki_group
from schedctl.requests_cmd import requests_group
from schedctl.stacks_cmd import stacks_group
from schedctl.tokens_cmd import tokens_group
from schedctl.usage_cmd import usage
from schedctl.workers_cmd import workers_group


class _Root(click.Group):
    """Turns the client's errors into one line on stderr and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BorutaError as error:
            message = name_options(str(error), command_options(ctx))
            click.echo(f"schedctl: {message}", err=True)
            raise click.exceptions.Exit(exits.exit_code_of(error)) from None
        except KeyboardInterrupt:
            click.echo("", err=True)
            raise click.exceptions.Exit(130) from None
        except OSError as error:
            click.echo(f"schedctl: {error}", err=True)
            raise click.exceptions.Exit(exits.FAILURE) from None


@click.group(
    cls=_Root,
    context_settings={"auto_envvar_prefix": "BORUTA", "help_option_names": ["-h", "--help"]},
)
@option(
    "--config",
    "config_path",
    envvar="BORUTA_CONFIG",
    type=click.Path(dir_okay=False),
    help="Config file with contexts and runner profiles [default: ~/.config/boruta/config.toml].",
)
@option("-c", "--context", envvar="BORUTA_CONTEXT", help="Named context from the config file.")
@option(
    "-s",
    "--scheduler",
    envvar=["BORUTA_SCHEDULERS", "BORUTA_SCHEDULER"],
    metavar="HOST:PORT[,...]",
    help="Scheduler address, or several separated by commas: the schedulers of a farm with "
    "a standby, whose leader schedctl finds and follows (overrides the context).",
)
@option(
    "-u",
    "--user",
    envvar="BORUTA_USER",
    help="Who you are on a plaintext scheduler (overrides the context; default: your "
    "login). With TLS, your certificate says who you are.",
)
@option(
    "-g",
    "--groups",
    envvar="BORUTA_GROUPS",
    help="Your groups, comma-separated (overrides the context; plaintext only).",
)
@option(
    "--admin/--no-admin",
    default=None,
    envvar="BORUTA_ADMIN",
    help="Call as an admin (overrides the context; plaintext only).",
)
@option(
    "--ca",
    envvar="BORUTA_CA",
    type=click.Path(dir_okay=False),
    help="The farm's CA certificate (overrides the context).",
)
@option(
    "--cert",
    envvar="BORUTA_CERT",
    type=click.Path(dir_okay=False),
    help="Your certificate (overrides the context).",
)
@option(
    "--key",
    envvar="BORUTA_KEY",
    type=click.Path(dir_okay=False),
    help="Your private key (overrides the context).",
)
@option(
    "--token",
    envvar="BORUTA_TOKEN",
    help="A bearer token, for the scheduler's token port (overrides the context's token_file).",
)
@click.version_option(package_name="boruta-client", prog_name="schedctl")
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    context: str | None,
    scheduler: str | None,
    user: str | None,
    groups: str | None,
    admin: bool | None,
    ca: str | None,
    cert: str | None,
    key: str | None,
    token: str | None,
) -> None:
    """Use and run a boruta device farm: get a board by its caps, a shell on it, run jobs;
    admins put boards into service and out of it.

    Caps are KEY=VALUE; a VALUE may name alternatives, 'os=linux|android' (either one;
    quote the |), or items a board's list must hold, circuits=usb.pc.vcc,handset.battery
    (both); see `requests new --help`.

    Several boards at once: one --profile [NAME:]KEY=VALUE,... per board; --together
    host (all on one host, one dryad) or stack (all in one stack), or named groups,
    'host:dut,relay;stack:a,b' (requests new, ssh).

    Exit codes: 0 ok, 1 error, 2 usage, 64 invalid argument, 65 no such board, 66 not
    found, 69 scheduler unavailable, 73 wrong state, 74 request ended or waited too long,
    75 busy (try later), 77 permission denied; `run` and `ssh` exit with the remote status.
    """
    overrides = {
        "scheduler": scheduler or None,
        "user": user or None,
        "groups": groups,
        "admin": admin,
        "ca": ca or None,
        "cert": cert or None,
        "key": key or None,
        "bearer": token or None,
    }
    try:
        # The library's own lookup, so that Client() finds the farm schedctl finds.
        config, chosen = find_farm(config_path, context or "", overrides)
    except BorutaError as error:
        click.echo(f"schedctl: {error}", err=True)
        raise click.exceptions.Exit(exits.exit_code_of(error)) from None
    state = State(config, chosen)
    ctx.obj = state
    ctx.call_on_close(state.close)


@cli.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(schedctl completion bash)"."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "schedctl", "_SCHEDCTL_COMPLETE").source())


cli.add_command(requests_group)
cli.add_command(workers_group)
cli.add_command(stacks_group)
cli.add_command(allocations)
cli.add_command(run)
cli.add_command(ssh)
cli.add_command(status)
cli.add_command(audit)
cli.add_command(usage)
cli.add_command(pki_group)
cli.add_command(tokens_group)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    # CI systems cancel with SIGTERM: treat it like Ctrl-C, so leases close their requests.
    signal.signal(signal.SIGTERM, _interrupt)
    cli(prog_name="schedctl")


if __name__ == "__main__":
    main()
