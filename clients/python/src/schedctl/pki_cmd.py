"""schedctl pki ...: a private CA for the farm and certificates for its members."""

from __future__ import annotations

from pathlib import Path

import click
from boruta import pki

from schedctl.cli import option


def _fail(error: pki.PkiError) -> click.ClickException:
    return click.ClickException(str(error))


@click.group("pki")
def pki_group() -> None:
    """Create the farm's CA and issue certificates (private keys are written 0600)."""


@pki_group.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@option("--name", default="boruta farm CA", help="The CA's common name.")
@option(
    "--days",
    type=click.IntRange(min=1),
    default=pki.DEFAULT_CA_DAYS,
    help="How long the CA is valid.",
)
def init(directory: Path, name: str, days: int) -> None:
    """Create a CA in DIRECTORY: ca.pem (give it to everyone) and ca.key (keep it safe)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key, cert = pki.create_ca(name, days)
    try:
        pki.write_secret(directory / "ca.key", key)
        pki.write_public(directory / "ca.pem", cert)
    except pki.PkiError as error:
        raise _fail(error) from None
    click.echo(f"CA {name!r} in {directory}/ca.pem; its key in {directory}/ca.key (0600)")


@pki_group.command("issue")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("role", type=click.Choice([r.value for r in pki.Role]))
@click.argument("name")
@option("-g", "--group", "groups", multiple=True, help="A group of a user or admin (repeat).")
@option(
    "-w", "--worker", "workers", multiple=True, help="A worker UUID a dryad may speak for (repeat)."
)
@option(
    "-H",
    "--host",
    "hosts",
    multiple=True,
    help="A DNS name or IP address the holder serves on (scheduler, dryad).",
)
@option(
    "--days",
    type=click.IntRange(min=1),
    default=pki.DEFAULT_DAYS,
    help="How long the certificate is valid.",
)
@option(
    "-O",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write NAME.pem and NAME.key [default: DIRECTORY].",
)
def issue(
    directory: Path,
    role: str,
    name: str,
    groups: tuple[str, ...],
    workers: tuple[str, ...],
    hosts: tuple[str, ...],
    days: int,
    out: Path | None,
) -> None:
    """Issue a certificate for NAME in ROLE, signed by the CA in DIRECTORY."""
    chosen = pki.Role(role)
    if workers and chosen is not pki.Role.DRYAD:
        raise click.UsageError("--worker is for dryad certificates")
    if chosen in (pki.Role.SCHEDULER, pki.Role.DRYAD) and not hosts:
        raise click.UsageError(f"a {role} serves gRPC: give its address with --host")
    target = out or directory
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity = pki.CertIdentity(name, chosen, frozenset(groups), frozenset(workers), hosts)
    try:
        key, cert = pki.issue(
            (directory / "ca.key").read_bytes(), (directory / "ca.pem").read_bytes(), identity, days
        )
        pki.write_secret(target / f"{name}.key", key)
        pki.write_public(target / f"{name}.pem", cert)
    except pki.PkiError as error:
        raise _fail(error) from None
    except OSError as error:
        raise click.ClickException(f"cannot read the CA in {directory}: {error}") from None
    click.echo(f"{role} {name}: {target}/{name}.pem, key {target}/{name}.key (0600)")
