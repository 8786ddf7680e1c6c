"""One page-token scheme for every list: opaque, signed, bound to its list and query, and
kept good across a restart and, on a PostgreSQL store, a takeover; paging through each list
returns every item once."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from boruta.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    requests_pb2,
    tokens_pb2,
    tokens_pb2_grpc,
    types_pb2,
    workers_pb2,
)
from boruta_scheduler.errors import InvalidArgument
from boruta_scheduler.listing import PageTokens
from conftest import farm_on
from farm_kit import Client, Farm, SchedulerProcess, board
from test_requests_grpc import expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
Page = tuple[list[object], str]


def test_a_token_decodes_only_for_its_list_and_query_and_unaltered() -> None:
    tokens = PageTokens(b"k" * 32)
    scope = PageTokens.scope("ListRequests", [1, 2], "id", False)
    token = tokens.encode(scope, (7, 7))
    assert tokens.decode(scope, token) == (7, 7)
    assert tokens.encode(scope, None) == ""
    with pytest.raises(InvalidArgument, match="belongs to a list with another filter"):
        tokens.decode(PageTokens.scope("ListRequests", [1], "id", False), token)
    with pytest.raises(InvalidArgument, match="belongs to ListRequests, not ListWorkers"):
        tokens.decode(PageTokens.scope("ListWorkers", [1, 2], "id", False), token)
    body, _, mac = token.partition(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    edited = base64.urlsafe_b64encode(raw.replace(b",7,", b",9,")).decode().rstrip("=")
    assert edited != body
    for forged in (f"{edited}.{mac}", f"{body}.{mac[:-2]}AA", body):
        with pytest.raises(InvalidArgument, match="not issued by this scheduler or was altered"):
            tokens.decode(scope, forged)
    with pytest.raises(InvalidArgument, match="malformed"):
        tokens.decode(scope, "é.é")
    # Another scheduler's key (another farm, or a lost key file) signs other tokens.
    with pytest.raises(InvalidArgument, match="not issued by this scheduler"):
        PageTokens(b"x" * 32).decode(scope, token)


def test_the_key_is_kept_in_the_directory_and_reused(tmp_path: Path) -> None:
    scope = PageTokens.scope("ListAuditEvents")
    token = PageTokens.in_directory(tmp_path / "state").encode(scope, (5, 0))
    key_file = tmp_path / "state" / PageTokens.KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert PageTokens.in_directory(tmp_path / "state").decode(scope, token) == (5, 0)
    # A directory that cannot hold the key still gives working tokens, for this process.
    blocked = tmp_path / "file"
    blocked.write_text("")
    fallback = PageTokens.in_directory(blocked / "state")
    assert fallback.decode(scope, fallback.encode(scope, (5, 0))) == (5, 0)


async def _all_pages(
    call: Callable[[str], Awaitable[Page]],
) -> list[object]:
    items: list[object] = []
    token = ""
    while True:
        page, token = await call(token)
        items.extend(page)
        if not token:
            return items


def _lists(admin: Client) -> dict[str, Callable[[str], Awaitable[Page]]]:
    """Every paged list, two items (one for the history) a page, as the admin."""
    audit = audit_pb2_grpc.AuditStub(admin.channel)
    bearer = tokens_pb2_grpc.TokensStub(admin.channel)
    md = admin.metadata

    async def requests(token: str) -> Page:
        r = await admin.requests.ListRequests(
            requests_pb2.ListRequestsRequest(page_size=2, page_token=token), metadata=md
        )
        return [x.id for x in r.requests], r.next_page_token

    async def workers(token: str) -> Page:
        r = await admin.workers.ListWorkers(
            workers_pb2.ListWorkersRequest(page_size=2, page_token=token), metadata=md
        )
        return [x.uuid for x in r.workers], r.next_page_token

    async def history(token: str) -> Page:
        r = await admin.workers.ListWorkerHistory(
            workers_pb2.ListWorkerHistoryRequest(worker_uuid="w1", page_size=1, page_token=token),
            metadata=md,
        )
        return [(x.time.ToNanoseconds(), x.to_state) for x in r.entries], r.next_page_token

    async def events(token: str) -> Page:
        r = await audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=2, page_token=token), metadata=md
        )
        return [x.id for x in r.events], r.next_page_token

    async def tokens(token: str) -> Page:
        r = await bearer.ListTokens(
            tokens_pb2.ListTokensRequest(page_size=2, page_token=token), metadata=md
        )
        return [x.id for x in r.tokens], r.next_page_token

    return {
        "ListRequests": requests,
        "ListWorkers": workers,
        "ListWorkerHistory": history,
        "ListAuditEvents": events,
        "ListTokens": tokens,
    }


async def _fill(farm: Farm) -> None:
    await farm.add_dryad([board(f"w{i}", board="rpi4") for i in range(1, 6)])
    alice = farm.client("alice")
    for _ in range(7):
        await alice.new({"board": "none"}, accept_unsatisfiable=True)
    await farm.admin.set_state("w1", types_pb2.WORKER_STATE_MAINTENANCE, "bench")
    await farm.admin.wait_worker("w1", types_pb2.WORKER_STATE_MAINTENANCE)
    await farm.admin.set_state("w1", types_pb2.WORKER_STATE_IDLE, "back")
    await farm.admin.wait_worker("w1", types_pb2.WORKER_STATE_IDLE)
    bearer = tokens_pb2_grpc.TokensStub(farm.admin.channel)
    for user in ("ci-a", "ci-b", "ci-c"):
        await bearer.IssueToken(
            tokens_pb2.IssueTokenRequest(user=user), metadata=farm.admin.metadata
        )


async def test_paging_through_every_list_returns_every_item_once(farm: Farm) -> None:
    await _fill(farm)
    lists = _lists(farm.admin)
    seen = {name: await _all_pages(call) for name, call in lists.items()}
    assert seen["ListRequests"] == list(range(1, 8))
    assert seen["ListWorkers"] == [f"w{i}" for i in range(1, 6)]
    history = seen["ListWorkerHistory"]
    assert len(history) >= 5 and len(set(history)) == len(history)
    assert history == sorted(history, reverse=True)  # newest first
    events = seen["ListAuditEvents"]
    assert len(events) >= 7 and events == sorted(set(events), reverse=True)
    assert seen["ListTokens"] == [1, 2, 3]
    whole = await farm.admin.workers.ListWorkerHistory(
        workers_pb2.ListWorkerHistoryRequest(worker_uuid="w1", page_size=1000),
        metadata=farm.admin.metadata,
    )
    assert len(whole.entries) == len(history) and not whole.next_page_token


async def test_a_token_from_another_list_or_query_or_forged_is_invalid_argument(
    farm: Farm,
) -> None:
    await _fill(farm)
    admin = farm.admin
    lists = _lists(admin)
    tokens = {name: (await call(""))[1] for name, call in lists.items()}
    assert all(tokens.values()), tokens
    for name, call in lists.items():
        for other, token in tokens.items():
            if other != name:
                await expect_error(call(token), INVALID, f"belongs to {other}, not {name}")
        body, _, mac = tokens[name].partition(".")
        await expect_error(call(f"{body}x.{mac}"), INVALID, "page_token")
        await expect_error(call(f"{body}.{mac[::-1]}"), INVALID, "was altered")
        await expect_error(call("12"), INVALID, "page_token")
    # The same list with another filter, order, or worker.
    reused = admin.requests.ListRequests(
        requests_pb2.ListRequestsRequest(
            page_size=2,
            page_token=tokens["ListRequests"],
            filter=requests_pb2.RequestFilter(owners=["alice"]),
        ),
        metadata=admin.metadata,
    )
    await expect_error(reused, INVALID, "another filter or order")
    reordered = admin.workers.ListWorkers(
        workers_pb2.ListWorkersRequest(page_token=tokens["ListWorkers"], descending=True),
        metadata=admin.metadata,
    )
    await expect_error(reordered, INVALID, "another filter or order")
    other_worker = admin.workers.ListWorkerHistory(
        workers_pb2.ListWorkerHistoryRequest(
            worker_uuid="w2", page_token=tokens["ListWorkerHistory"]
        ),
        metadata=admin.metadata,
    )
    await expect_error(other_worker, INVALID, "another filter or order")


async def test_a_restart_keeps_page_tokens_good(tmp_path: Path) -> None:
    async with farm_on(tmp_path) as farm:
        alice = farm.client("alice")
        for _ in range(5):
            await alice.new({"board": "none"}, accept_unsatisfiable=True)
        first, token = await _lists(alice)["ListRequests"]("")
        assert first == [1, 2] and token
    async with farm_on(tmp_path) as farm:
        rest = await _all_pages(_lists(farm.client("alice"))["ListRequests"])
        page = await _lists(farm.client("alice"))["ListRequests"](token)
        assert page[0] == [3, 4]
        assert rest == [1, 2, 3, 4, 5]


async def test_a_list_paged_across_a_takeover_goes_on_at_the_new_leader(
    tmp_path: Path, postgres_url: str
) -> None:
    """Schedulers on one PostgreSQL database sign with the database's key, not a file of
    their own data directory: the next page comes from whichever leads now."""
    first = SchedulerProcess(tmp_path / "first", "--store", postgres_url)
    second = SchedulerProcess(tmp_path / "second", "--store", postgres_url)
    try:
        old = Farm(first.start())
        await asyncio.to_thread(first.wait_leading)
        new = Farm(second.start())  # a standby, with a data directory of its own
        alice = old.client("alice")
        for _ in range(5):
            await alice.new({"board": "none"}, accept_unsatisfiable=True)
        page, token = await _lists(alice)["ListRequests"]("")
        assert page == [1, 2] and token
        audit_page, audit_token = await _lists(old.admin)["ListAuditEvents"]("")
        assert len(audit_page) == 2 and audit_token

        first.kill()
        assert await asyncio.to_thread(second.wait_leading) == 2
        lists = _lists(new.client("alice"))
        page, token_after = await lists["ListRequests"](token)
        assert page == [3, 4]
        assert await lists["ListRequests"](token_after) == ([5], "")
        assert (await _lists(new.admin)["ListAuditEvents"](audit_token))[0]
        # Still only the database's key signs: an altered token is refused.
        body, _, mac = token.partition(".")
        await expect_error(lists["ListRequests"](f"{body}.{mac[::-1]}"), INVALID, "was altered")
        assert not (tmp_path / "first" / PageTokens.KEY_FILE).exists()
        assert not (tmp_path / "second" / PageTokens.KEY_FILE).exists()
        await old.close()
        await new.close()
    finally:
        first.stop()
        second.stop()
