"""schedctl tokens ...: admins issue, list and revoke bearer tokens."""

from __future__ import annotations

import click
from boruta_client import Token

from schedctl.cli import State, option, output_option, pass_state
from schedctl.output import Column, emit, table, when

TOKEN_COLUMNS: list[Column] = [
    ("ID", lambda t: t.id),
    ("USER", lambda t: t.user + (" (admin)" if t.admin else "")),
    ("GROUPS", lambda t: t.groups),
    ("EXPIRES", lambda t: when(t.expires_at)),
    ("REVOKED", lambda t: when(t.revoked_at) if t.revoked_at else None),
    ("BY", lambda t: t.issued_by),
    ("FOR", lambda t: t.description),
]


@click.group("tokens")
def tokens_group() -> None:
    """Bearer tokens for users and CI systems without certificates. Admins only."""


@tokens_group.command("issue")
@click.argument("user")
@option("-g", "--group", "groups", multiple=True, help="A group of the user (repeat).")
@option("--admin", "is_admin", is_flag=True, help="Make it an admin's token.")
@option(
    "--days",
    type=click.FloatRange(min=0, min_open=True, max=3650),
    default=90,
    help="How long it works.",
)
@option("-d", "--description", default="", help="What it is for.")
@output_option
@pass_state
def issue(
    state: State,
    user: str,
    groups: tuple[str, ...],
    is_admin: bool,
    days: float,
    description: str,
    fmt: str,
) -> None:
    """Issue a token for USER. It is printed once: store it now (e.g. in a CI secret)."""
    issued = state.client().issue_token(
        user, groups=groups, admin=is_admin, ttl=days * 86400, description=description
    )
    data = {"token": issued.token, "secret": issued.secret}
    emit(
        fmt,
        data,
        lambda: (
            f"token {issued.token.id} for {user}, until {when(issued.token.expires_at)}; "
            f"it is shown only now:\n{issued.secret}"
        ),
    )


@tokens_group.command("list")
@option("--user", default="", help="Only the tokens of this user.")
@option("--active", is_flag=True, help="Only tokens that work: not expired, not revoked.")
@output_option
@pass_state
def list_tokens(state: State, user: str, active: bool, fmt: str) -> None:
    """The tokens issued, oldest first (never their secrets)."""
    found: list[Token] = state.client().list_tokens(user=user, active_only=active)
    emit(fmt, found, lambda: table(found, TOKEN_COLUMNS))


@tokens_group.command("revoke")
@click.argument("token_id", type=click.IntRange(min=1), metavar="ID")
@output_option
@pass_state
def revoke(state: State, token_id: int, fmt: str) -> None:
    """Make a token useless at once."""
    token = state.client().revoke_token(token_id)
    emit(fmt, token, lambda: table([token], TOKEN_COLUMNS))
