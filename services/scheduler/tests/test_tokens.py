"""Bearer tokens go through the engine like every write: a token counts once its issue is
committed (with its audit event), and the checks on each call follow the engine's commits."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from boruta_scheduler.app.audit import AuditLog
from boruta_scheduler.app.engine import Engine
from boruta_scheduler.app.tokens import TokenAuthority, TokenOrder
from boruta_scheduler.app.upkeep import UPKEEP_INTERVAL
from boruta_scheduler.app.watch import Publishers
from boruta_scheduler.core import Core, Policy
from boruta_scheduler.core.tokens import SEAL_KEPT
from boruta_scheduler.errors import (
    FailedPrecondition,
    IdempotencyKeyReused,
    InvalidArgument,
    StoreUnavailable,
    Unauthenticated,
)
from boruta_scheduler.listing import TokenQuery
from boruta_scheduler.store import MemoryStore, SQLiteStore, Store, open_store
from boruta_scheduler.types import Identity, Role, TokenRecord
from pg_kit import postgres_fixture, postgres_url_fixture  # noqa: F401 - fixtures
from test_engine import Dryads, FillingStore, GatedStore, settle

ROOT = Identity("root", role=Role.ADMIN)
ADMIN = Identity("other-admin", role=Role.ADMIN)


@dataclass
class Tokens:
    engine: Engine
    authority: TokenAuthority


def start_tokens(
    store: Store,
    clock: Callable[[], float] = time.time,
    token_retention: float = 0.0,
    policy: Policy | None = None,
) -> Tokens:
    """An engine restored from store, and a token authority fed by its commits (with a
    token retention, upkeep runs only when the test calls housekeep())."""
    publishers = Publishers()
    engine = Engine(
        Core.restore(store.load(), clock(), policy),
        store,
        Dryads(),
        publishers,
        clock,
        token_retention=token_retention,
        upkeep_interval=0 if token_retention else UPKEEP_INTERVAL,
    )
    authority = TokenAuthority(engine, clock, AuditLog(engine, store))
    publishers.add(authority.publish)
    engine.start()
    return Tokens(engine, authority)


def listed(
    authority: TokenAuthority, user: str = "", active_only: bool = False, after: int = 0
) -> list[TokenRecord]:
    """Every token the query selects, oldest first."""
    return list(authority.select(ROOT, TokenQuery(user, active_only, None, after)))


@pytest.fixture
async def gated() -> AsyncIterator[tuple[GatedStore, Tokens]]:
    store = GatedStore()
    store.gate.set()
    tokens = start_tokens(store)
    yield store, tokens
    store.gate.set()
    await tokens.engine.stop()


async def test_a_token_counts_only_once_it_is_committed_with_its_event(
    gated: tuple[GatedStore, Tokens],
) -> None:
    store, tokens = gated
    store.gate.clear()
    issued = asyncio.ensure_future(
        tokens.authority.issue(ROOT, "ci", ["lab"], False, None, "nightly")
    )
    await settle(tokens.engine)
    assert [t.user for t in tokens.engine.core.tokens()] == ["ci"]  # applied, not stored
    assert not issued.done()
    assert listed(tokens.authority) == [] and store.load().tokens == []
    store.gate.set()
    record, secret = await issued
    assert secret.startswith(f"{record.id}.")
    assert tokens.authority.identify(secret) == Identity(
        "ci", frozenset({"lab"}), Role.USER, token_id=record.id
    )
    # One transaction held the token and the event that records its issue.
    assert [(c.tokens, [(e.action, e.target) for e in c.audit]) for c in store.committed] == [
        ([record], [("IssueToken", f"token {record.id}")])
    ]
    assert store.load().tokens == [record]


async def test_the_checks_follow_the_commits_not_the_core(
    gated: tuple[GatedStore, Tokens],
) -> None:
    store, tokens = gated
    authority = tokens.authority
    record, secret = await authority.issue(ROOT, "ci", [], False, None, "")
    who = authority.identify(secret)
    # Any engine command that revokes counts, once committed; TokenAuthority writes nothing.
    store.gate.clear()
    revoked = asyncio.ensure_future(
        tokens.engine.execute(lambda core, now: core.revoke_token(now, record.id))
    )
    await settle(tokens.engine)
    authority.revalidate(who)  # applied, not yet durable: not yet true
    store.gate.set()
    assert (await revoked).revoked_at is not None
    for check in (lambda: authority.identify(secret), lambda: authority.revalidate(who)):
        with pytest.raises(Unauthenticated, match="was revoked"):
            check()
    assert listed(authority)[0].revoked_at is not None
    again = await authority.revoke(ROOT, record.id)  # as before: it keeps the first time
    assert again.revoked_at == listed(authority)[0].revoked_at
    with pytest.raises(InvalidArgument, match="no token 99; see ListTokens"):
        await authority.revoke(ROOT, 99)
    actions = [(e.action, e.target) for e in reversed(store.audit(10))]
    assert actions == [("IssueToken", "token 1"), ("RevokeToken", "token 1")]
    # A restart takes the tokens from the store.
    await tokens.engine.stop()
    restarted = start_tokens(store)
    with pytest.raises(Unauthenticated, match="was revoked"):
        restarted.authority.identify(secret)
    await restarted.engine.stop()


async def test_a_token_whose_commit_fails_is_refused_and_never_usable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = FillingStore()
    store.gate.set()
    tokens = start_tokens(store)
    authority = tokens.authority
    kept, kept_secret = await authority.issue(ROOT, "ci", [], False, None, "")
    store.full = True
    # The secret the lost token would have had, so that the test can present it.
    monkeypatch.setattr("secrets.token_urlsafe", lambda n: "lost")
    with pytest.raises(StoreUnavailable, match="disk full"):
        await authority.issue(ROOT, "eve", [], True, None, "")
    monkeypatch.undo()
    lost = f"{kept.id + 1}.lost"
    with pytest.raises(Unauthenticated, match="not valid"):
        authority.identify(lost)
    with pytest.raises(StoreUnavailable, match="disk full"):
        await authority.revoke(ROOT, kept.id)
    assert listed(authority) == [kept]
    assert authority.identify(kept_secret).user == "ci"  # its revoke was refused
    store.full = False
    while tokens.engine.outage is not None:
        await asyncio.sleep(0.01)
    later, later_secret = await authority.issue(ROOT, "eve", [], True, None, "")
    assert later.id == kept.id + 1  # the lost token's id was never acknowledged
    assert authority.identify(later_secret).role is Role.ADMIN
    with pytest.raises(Unauthenticated, match="not valid"):
        authority.identify(lost)
    await tokens.engine.stop()
    assert store.load().tokens == [kept, later]
    issued = [e.target for e in reversed(store.audit(10)) if e.action == "IssueToken"]
    assert issued == ["token 1", "token 2"]


async def test_token_expiry_and_validation() -> None:
    now = [1000.0]
    tokens = start_tokens(MemoryStore(), clock=lambda: now[0])
    authority = tokens.authority
    record, secret = await authority.issue(ROOT, "ci", ["lab"], False, 60.0, "")
    assert (record.created_at, record.expires_at) == (1000.0, 1060.0)
    who = authority.identify(secret)
    assert who == Identity("ci", frozenset({"lab"}), Role.USER, token_id=record.id)
    for odd in ("²." + secret.partition(".")[2], "9" * 5000 + ".x", "", "."):
        with pytest.raises(Unauthenticated, match="not valid"):
            authority.identify(odd)
    authority.revalidate(who)
    await authority.revoke(ROOT, record.id)
    with pytest.raises(Unauthenticated, match="was revoked"):
        authority.revalidate(who)  # e.g. before AcquireWorker hands out a key
    record, secret = await authority.issue(ROOT, "ci", ["lab"], False, 60.0, "")
    now[0] += 61
    with pytest.raises(Unauthenticated, match="has expired"):
        authority.identify(secret)
    for user, ttl in (("a b", None), ("ok", 0.0), ("ok", 3651 * 86400.0), ("anonymous", None)):
        with pytest.raises(InvalidArgument):
            await authority.issue(ROOT, user, [], False, ttl, "")
    assert [t.id for t in listed(authority)] == [1, record.id]
    await tokens.engine.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite://{tmp_path / 'boruta.db'}"


async def test_a_retried_issue_gets_the_same_token_and_secret_across_a_restart(
    store_url: str,
) -> None:
    """The idempotency key is stored with its token: a retry after a restart (or a
    takeover, which loads the same database) finds it, and the secret sealed with it."""
    now = [1_700_000_000.0]
    key = str(uuid.uuid4())
    store = open_store(store_url)
    tokens = start_tokens(store, clock=lambda: now[0])
    record, secret = await tokens.authority.issue(ROOT, "ci", ["lab"], False, None, "", key)
    again = await tokens.authority.issue(ROOT, "ci", ["lab"], False, None, "", key)
    assert again == (record, secret)
    with pytest.raises(IdempotencyKeyReused, match=f"for token {record.id}, with other"):
        await tokens.authority.issue(ROOT, "ci", ["lab"], False, None, "other", key)
    # Keys are per admin: another admin's call with the same key is another token.
    other, _ = await tokens.authority.issue(ADMIN, "ci", ["lab"], False, None, "", key)
    assert other.id == record.id + 1
    await tokens.engine.stop()
    store.close()

    now[0] += SEAL_KEPT - 1
    store = open_store(store_url)
    tokens = start_tokens(store, clock=lambda: now[0])
    retried = await tokens.authority.issue(ROOT, "ci", ["lab"], False, None, "", key)
    assert retried == (record, secret)
    assert tokens.authority.identify(secret).user == "ci"
    assert [t.id for t in listed(tokens.authority)] == [record.id, other.id]
    # After SEAL_KEPT the store no longer holds the sealed secret, and a retry is refused.
    now[0] += 1
    with pytest.raises(FailedPrecondition, match=f"revoke token {record.id} and issue"):
        await tokens.authority.issue(ROOT, "ci", ["lab"], False, None, "", key)
    assert [t.sealed_secret for t in store.load().tokens] == [None, None]
    assert len(listed(tokens.authority)) == 2
    await tokens.engine.stop()
    store.close()


async def test_a_stored_key_and_seal_do_not_give_the_secret() -> None:
    """What the store keeps of a key-issued token: hashes of the key and the secret, and
    the secret sealed with a pad the key gives; none of them is the key or the secret."""
    store = MemoryStore()
    tokens = start_tokens(store)
    key = str(uuid.uuid4())
    _, secret = await tokens.authority.issue(ROOT, "ci", [], False, None, "", key)
    stored = store.load().tokens[0]
    raw = base64.urlsafe_b64decode(secret.partition(".")[2] + "=")
    kept = (stored.idempotency_key_hash, stored.sealed_secret, stored.secret_hash)
    assert stored.sealed_secret is not None and stored.sealed_secret != raw
    for value in kept:
        assert key.encode() not in value and secret.encode() not in value and raw not in value
    for short in ("too-short", "x" * 129, "tab\there-and-longer"):
        with pytest.raises(InvalidArgument, match="idempotency_key"):
            await tokens.authority.issue(ROOT, "ci", [], False, None, "", short)
    assert len(store.load().tokens) == 1
    await tokens.engine.stop()


async def test_tokens_stopped_longer_ago_than_the_retention_are_forgotten_through_the_engine(
    tmp_path: Path,
) -> None:
    """Upkeep purges them with a core command: their rows go in the batch's commit with one
    audit event (no secret in it), the checks forget them, RevokeToken says why, and a
    scheduler restarted on the store gives the next token a new id."""
    now = [1000.0]
    path = tmp_path / "tokens.db"
    store = SQLiteStore(path)
    tokens = start_tokens(store, clock=lambda: now[0], token_retention=100.0)
    authority = tokens.authority
    expiring, expiring_secret = await authority.issue(ROOT, "ci", [], False, 60.0, "")  # 1
    lasting, _ = await authority.issue(ROOT, "dashboard", [], False, 3600.0, "")  # 2
    revoked, _ = await authority.issue(ROOT, "ci", [], False, 3600.0, "")  # 3
    now[0] = 1010.0
    await authority.revoke(ROOT, revoked.id)
    now[0] = 1100.0  # revoked 90 s ago, expired 40 s ago: both within the retention
    assert (await tokens.engine.housekeep()).tokens_purged == 0
    now[0] = 1170.0
    assert (await tokens.engine.housekeep()).tokens_purged == 2
    assert [t.id for t in listed(authority)] == [lasting.id]
    assert listed(authority, user="ci") == [] and listed(authority, after=lasting.id) == []
    assert [t.id for t in store.load().tokens] == [lasting.id]
    (event,) = [e for e in store.audit(10) if e.action == "PurgeTokens"]
    assert (event.actor, event.target, event.time) == ("boruta-scheduler", "tokens", 1170.0)
    assert event.detail == (
        "2 tokens forgotten: expired or revoked more than 100s ago (token_retention); ids 3, 1"
    )
    with pytest.raises(Unauthenticated, match="not valid"):
        authority.identify(expiring_secret)
    with pytest.raises(InvalidArgument, match="forgotten"):
        await authority.revoke(ROOT, expiring.id)
    await authority.revoke(ROOT, lasting.id)
    now[0] = 1300.0
    assert (await tokens.engine.housekeep()).tokens_purged == 1
    await tokens.engine.stop()
    store.close()
    store = SQLiteStore(path)
    again = start_tokens(store, clock=lambda: now[0], token_retention=100.0)
    assert listed(again.authority) == []
    newest, _ = await again.authority.issue(ROOT, "ci", [], False, 60.0, "")
    assert newest.id == revoked.id + 1
    await again.engine.stop()
    store.close()


def test_the_token_order_keeps_ids_in_order_overall_and_per_user() -> None:
    order = TokenOrder()
    for token_id, user in ((3, "ci"), (1, "ci"), (2, "bob"), (5, "ci"), (4, "bob"), (3, "ci")):
        order.add(token_id, user)  # restored out of order, and 3 once more (a revoke)
    assert list(order.after(0)) == [1, 2, 3, 4, 5]
    assert list(order.after(2)) == [3, 4, 5]
    assert list(order.after(0, "ci")) == [1, 3, 5]
    assert list(order.after(3, "ci")) == [5]
    assert list(order.after(5)) == [] and list(order.after(0, "nobody")) == []
    # A purge drops ids; a page token that continues after a dropped id still works.
    order.remove(3, "ci")
    order.remove(2, "bob")
    order.remove(9, "ci")  # never kept: nothing changes
    assert list(order.after(2)) == [4, 5] and list(order.after(3, "ci")) == [5]
    order.remove(4, "bob")
    assert list(order.after(0, "bob")) == [] and list(order.after(0)) == [1, 5]


async def test_select_filters_by_user_and_live_tokens_and_goes_on_after_an_id() -> None:
    now = [1000.0]
    tokens = start_tokens(MemoryStore(), clock=lambda: now[0])
    authority = tokens.authority
    issued = [
        (await authority.issue(ROOT, user, [], False, ttl, ""))[0]
        for user, ttl in (("ci", 60.0), ("bob", None), ("ci", None), ("bob", 60.0), ("ci", None))
    ]
    ids = [t.id for t in issued]
    await authority.revoke(ROOT, ids[2])
    assert [t.id for t in listed(authority)] == ids
    assert [t.id for t in listed(authority, "ci")] == [ids[0], ids[2], ids[4]]
    assert [t.id for t in listed(authority, after=ids[1])] == ids[2:]
    assert [t.id for t in listed(authority, "ci", after=ids[0])] == [ids[2], ids[4]]
    assert [t.id for t in listed(authority, active_only=True)] == [ids[0], ids[1], ids[3], ids[4]]
    now[0] += 60  # at expires_at a token still works (identify), so it is still live
    assert len(listed(authority, active_only=True)) == 4
    now[0] += 1
    assert [t.id for t in listed(authority, active_only=True)] == [ids[1], ids[4]]
    assert [t.id for t in listed(authority, "ci", True)] == [ids[4]]
    assert listed(authority, "nobody") == []
    for bad in ("a b", "x" * 65, "anonymous"):
        with pytest.raises(InvalidArgument, match="user: "):
            authority.select(ROOT, TokenQuery(user=bad))
    await tokens.engine.stop()


async def test_a_token_s_groups_obey_the_farm_s_configured_limits() -> None:
    """The groups a token carries are checked as the farm is configured (the [policy]
    limits), as a board's groups are, not against the defaults."""
    tokens = start_tokens(MemoryStore(), policy=Policy(max_groups=2, max_group_len=4))
    with pytest.raises(InvalidArgument, match="3 groups given; at most 2"):
        await tokens.authority.issue(ROOT, "ci", ["a", "b", "c"], False, None, "")
    with pytest.raises(InvalidArgument, match="lab-long"):
        await tokens.authority.issue(ROOT, "ci", ["lab-long"], False, None, "")
    await tokens.engine.stop()
    roomy = start_tokens(MemoryStore(), policy=Policy(max_groups=40))
    many = [f"g{n}" for n in range(35)]  # more than the default 32
    record, _ = await roomy.authority.issue(ROOT, "ci", many, False, None, "")
    assert len(record.groups) == 35
    await roomy.engine.stop()
