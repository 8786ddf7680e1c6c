"""ListTokens over real gRPC and TLS: pages in the order tokens were issued, filtered by
user and by being live, with page tokens bound to the filter; a farm with thousands of
tokens lists them all under gRPC's message limit; the client and schedctl page through."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from boruta.v1 import tokens_pb2, tokens_pb2_grpc
from boruta_client import AsyncClient
from boruta_scheduler.rpc.server import Scheduler
from pki_kit import FarmPki
from test_requests_grpc import expect_error
from test_tls import channel, farm_pki, scheduler  # noqa: F401 - fixtures

INVALID = grpc.StatusCode.INVALID_ARGUMENT
# gRPC's default limit on a message a client receives.
CLIENT_LIMIT = 4 << 20
SCHEDCTL = [sys.executable, "-m", "schedctl.main"]


@pytest.fixture
async def admin(
    scheduler: Scheduler,  # noqa: F811 - the fixture
    farm_pki: FarmPki,  # noqa: F811 - the fixture
) -> AsyncIterator[tokens_pb2_grpc.TokensStub]:
    """The Tokens service as the farm's admin, by certificate."""
    async with channel(scheduler, farm_pki.admin()) as ch:
        yield tokens_pb2_grpc.TokensStub(ch)


async def issue(
    tokens: tokens_pb2_grpc.TokensStub, user: str, ttl: float | None = None, **fields: object
) -> tokens_pb2.TokenInfo:
    message = tokens_pb2.IssueTokenRequest(user=user, **fields)  # type: ignore[arg-type]
    if ttl is not None:
        message.ttl.FromMilliseconds(round(ttl * 1000))
    return (await tokens.IssueToken(message, timeout=60)).token


async def pages(
    tokens: tokens_pb2_grpc.TokensStub, page_size: int, user: str = "", active_only: bool = False
) -> list[list[int]]:
    """The ids of every page of a listing, first to last."""
    found: list[list[int]] = []
    token = ""
    while True:
        reply = await tokens.ListTokens(
            tokens_pb2.ListTokensRequest(
                page_size=page_size, page_token=token, user=user, active_only=active_only
            ),
            timeout=60,
        )
        assert reply.ByteSize() < CLIENT_LIMIT
        found.append([t.id for t in reply.tokens])
        token = reply.next_page_token
        if not token:
            return found


async def expire(issued: list[tokens_pb2.TokenInfo]) -> None:
    """Wait until every token of issued has expired (their ttl is a millisecond)."""
    latest = max(t.expires_at.ToNanoseconds() for t in issued) / 1e9
    while time.time() <= latest:
        await asyncio.sleep(0.01)


async def test_pages_join_to_the_whole_list_with_and_without_filters(
    admin: tokens_pb2_grpc.TokensStub,
) -> None:
    expired = [await issue(admin, "alice", ttl=0.001), await issue(admin, "bob", ttl=0.001)]
    issued = [await issue(admin, user) for user in ["alice", "bob", "carol"] * 4]
    for revoked in (issued[0], issued[4]):  # one of alice's, one of bob's
        await admin.RevokeToken(tokens_pb2.RevokeTokenRequest(token_id=revoked.id))
    await expire(expired)
    everyone = sorted(expired + issued, key=lambda t: t.id)
    dead = {t.id for t in expired} | {issued[0].id, issued[4].id}
    for user in ("", "alice", "bob", "nobody"):
        for active_only in (False, True):
            expected = [
                t.id
                for t in everyone
                if (not user or t.user == user) and not (active_only and t.id in dead)
            ]
            for page_size in (1, 3, 0, 1000):
                listed = await pages(admin, page_size, user, active_only)
                assert [i for page in listed for i in page] == expected, (user, active_only)
                # Full pages until the last; no empty page after a full one.
                size = page_size or max(1, len(expected))
                assert all(len(page) == size for page in listed[:-1])
                assert len(listed) == max(1, -(-len(expected) // size))
    whole = await admin.ListTokens(tokens_pb2.ListTokensRequest())
    assert [t.id for t in whole.tokens] == [t.id for t in everyone]
    assert not whole.next_page_token  # an old client's call: all of them, in one reply
    assert whole.tokens[2].HasField("revoked_at") and whole.tokens[2].user == "alice"


async def test_a_page_token_of_another_filter_or_forged_is_invalid_argument(
    admin: tokens_pb2_grpc.TokensStub,
) -> None:
    for _ in range(3):
        await issue(admin, "alice")
    await issue(admin, "bob")

    def call(token: str, user: str = "alice", active_only: bool = False) -> object:
        return admin.ListTokens(
            tokens_pb2.ListTokensRequest(
                page_size=1, page_token=token, user=user, active_only=active_only
            )
        )

    first = await admin.ListTokens(tokens_pb2.ListTokensRequest(page_size=1, user="alice"))
    token = first.next_page_token
    assert token and [t.user for t in first.tokens] == ["alice"]
    for user, active_only in (("bob", False), ("", False), ("alice", True)):
        await expect_error(call(token, user, active_only), INVALID, "another filter or order")
    body, _, mac = token.partition(".")
    await expect_error(call(f"{body}.{mac[::-1]}"), INVALID, "was altered", "start again")
    await expect_error(call(f"{body}x.{mac}"), INVALID, "page_token")
    await expect_error(call("12"), INVALID, "page_token")
    for bad in ("a b", "x" * 65):
        await expect_error(call("", user=bad), INVALID, "user: name", "1 to 64 letters")
    # Unaltered, with its own filter, it goes on.
    second = await admin.ListTokens(
        tokens_pb2.ListTokensRequest(page_size=1, page_token=token, user="alice")
    )
    assert [t.user for t in second.tokens] == ["alice"]
    assert second.tokens[0].id > first.tokens[0].id


async def test_thousands_of_large_tokens_list_in_pages_under_the_client_limit(
    scheduler: Scheduler,  # noqa: F811 - the fixture
    farm_pki: FarmPki,  # noqa: F811 - the fixture
    admin: tokens_pb2_grpc.TokensStub,
) -> None:
    """Tokens as large as IssueToken allows, more of them than one 4 MiB reply holds: an
    old client's call (page_size 0) gets what fits and a next_page_token, not an error."""
    largest = {
        "groups": [f"g{i:02d}-" + "x" * 60 for i in range(32)],
        "description": "d" * 200,
    }
    users = ["u" * 63 + c for c in "ab"]
    first = await issue(admin, users[0], **largest)
    count = CLIENT_LIMIT // first.ByteSize() + 50
    owner = {first.id: users[0]}
    for start in range(1, count, 200):
        batch = [
            issue(admin, users[i % 2], **largest) for i in range(start, min(count, start + 200))
        ]
        owner.update((t.id, t.user) for t in await asyncio.gather(*batch))
    issued = sorted(owner)
    theirs = {user: [i for i in issued if owner[i] == user] for user in users}

    whole = await admin.ListTokens(tokens_pb2.ListTokensRequest(), timeout=60)
    assert whole.next_page_token and 0 < len(whole.tokens) < count
    for page_size in (0, 1000):
        assert [i for page in await pages(admin, page_size) for i in page] == issued
    mine = [i for page in await pages(admin, 0, users[1]) for i in page]
    assert mine == theirs[users[1]]

    address = f"127.0.0.1:{scheduler.port}"
    async with AsyncClient(address, tls=farm_pki.admin()) as client:
        assert [t.id for t in await client.list_tokens()] == issued
        listed = await client.list_tokens(user=users[0], active_only=True)
        assert [t.id for t in listed] == theirs[users[0]]
        assert listed[0].description == "d" * 200 and len(listed[0].groups) == 32


async def test_the_client_and_schedctl_list_one_users_live_tokens(
    scheduler: Scheduler,  # noqa: F811 - the fixture
    farm_pki: FarmPki,  # noqa: F811 - the fixture
    admin: tokens_pb2_grpc.TokensStub,
    tmp_path: Path,
) -> None:
    ci = f"ci-{uuid.uuid4().hex[:8]}"
    gone = await issue(admin, ci, ttl=0.001)
    live = await issue(admin, ci, description="nightly")
    revoked = await issue(admin, ci)
    other = await issue(admin, "bob")
    await admin.RevokeToken(tokens_pb2.RevokeTokenRequest(token_id=revoked.id))
    await expire([gone])

    address = f"127.0.0.1:{scheduler.port}"
    async with AsyncClient(address, tls=farm_pki.admin()) as client:
        assert [t.id for t in await client.list_tokens()] == [
            gone.id, live.id, revoked.id, other.id
        ]  # fmt: skip
        assert [t.id for t in await client.list_tokens(user=ci)] == [gone.id, live.id, revoked.id]
        assert [t.id for t in await client.list_tokens(active_only=True)] == [live.id, other.id]
        assert [t.id for t in await client.list_tokens(user=ci, active_only=True)] == [live.id]

    files = farm_pki.admin()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BORUTA_")},
        "BORUTA_SCHEDULER": address,
        "BORUTA_CA": files.ca,
        "BORUTA_CERT": files.cert,
        "BORUTA_KEY": files.key,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }

    async def schedctl(*args: str, **extra: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *SCHEDCTL,
            *args,
            env={**env, **extra},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    def ids(text: str) -> list[int]:
        return [t["id"] for t in json.loads(text)]

    assert ids(await schedctl("tokens", "list", "-o", "json")) == [
        gone.id, live.id, revoked.id, other.id
    ]  # fmt: skip
    assert ids(await schedctl("tokens", "list", "--user", ci, "--active", "-o", "json")) == [
        live.id
    ]
    assert ids(await schedctl("tokens", "list", "--user", ci, "-o", "json")) == [
        gone.id, live.id, revoked.id
    ]  # fmt: skip
    # Each option also reads its BORUTA_* variable, as every schedctl option does.
    by_env = await schedctl(
        "tokens", "list", "-o", "json", BORUTA_TOKENS_LIST_USER=ci, BORUTA_TOKENS_LIST_ACTIVE="1"
    )
    assert ids(by_env) == [live.id]
    table = await schedctl("tokens", "list", "--user", ci, "--active")
    assert "nightly" in table and "bob" not in table
    helped = await schedctl("tokens", "list", "--help")
    assert "BORUTA_TOKENS_LIST_USER" in helped and "BORUTA_TOKENS_LIST_ACTIVE" in helped
