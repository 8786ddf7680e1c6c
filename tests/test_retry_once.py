"""Calls the Python client retries after a dropped connection change the farm once: the
connection (a real TCP proxy in front of a real scheduler) is closed after the scheduler
applied the call and before its answer reached the client, which then calls again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from boruta_client import AlreadyExists, AsyncClient, InvalidArgument, NotFound, WorkerNotFound
from boruta_scheduler.rpc.server import Scheduler
from drop_kit import DroppingProxy, dropping_proxy, until
from farm_kit import Farm, board

T = TypeVar("T")


async def lose_first_answer(
    proxy: DroppingProxy, call: Awaitable[T], applied: Callable[[], Awaitable[bool]]
) -> T:
    """Make call through proxy, losing its first answer once applied() sees its effect;
    returns what the client's retry answered."""
    proxy.hold()
    task = asyncio.ensure_future(call)
    await until(applied, "the first attempt took effect")
    assert not task.done()
    proxy.drop()
    result = await task
    assert proxy.held > 0
    return result


async def test_deregister_retried_after_its_answer_was_lost_succeeds(farm: Farm) -> None:
    dryad = await farm.add_dryad([board("gone-1")], idle=False)
    # A board whose dryad is gone, as an admin deregisters one: a live dryad registers its
    # board again at its next heartbeat (NOT_FOUND), before the test could see it gone.
    assert dryad.link is not None
    await dryad.link.stop()
    direct = AsyncClient(farm.address, user="root", admin=True)
    async with dropping_proxy(farm.address) as proxy:
        client = AsyncClient(proxy.address, user="root", admin=True)
        await client.whoami()  # the connection is up before its answers are held

        async def removed() -> bool:
            return "gone-1" not in {w.uuid for w in await direct.list_workers()}

        await lose_first_answer(proxy, client.deregister_worker("gone-1"), removed)
        # Without a retry, a UUID no worker has is still an error.
        with pytest.raises(WorkerNotFound):
            await client.deregister_worker("gone-1")
        await client.close()
    await direct.close()


async def test_prolong_retried_after_its_answer_was_lost_counts_once(farm: Farm) -> None:
    await farm.add_dryad([board("prolonged-1")])
    direct = AsyncClient(farm.address, user="alice")
    request = await direct.new_request({})
    await direct.acquire_worker(request.id)
    async with dropping_proxy(farm.address) as proxy:
        client = AsyncClient(proxy.address, user="alice")
        await client.whoami()

        async def count() -> int:
            job = (await direct.get_request(request.id)).job
            assert job is not None
            return job.prolong_count

        async def prolonged() -> bool:
            return await count() == 1

        # As a lease prolongs: with the count of the job it holds.
        first = client.prolong_access(request.id, prolong_count=0)
        job = await lose_first_answer(proxy, first, prolonged)
        assert job.prolong_count == await count() == 1
        # The next prolong (which reads the count first when given none) counts again.
        again = await client.prolong_access(request.id)
        assert again.prolong_count == 2 and again.timeout_at >= job.timeout_at
        # A count from before that is a prolong already done: it changes nothing.
        stale = await client.prolong_access(request.id, prolong_count=1)
        assert stale == again
        with pytest.raises(InvalidArgument, match="prolong_count 99 is more than the 2 times"):
            await client.prolong_access(request.id, prolong_count=99)
        await client.close()
    await direct.close_request(request.id)
    await direct.close()


async def test_issue_token_retried_after_its_answer_was_lost_issues_one_token(farm: Farm) -> None:
    direct = AsyncClient(farm.address, user="root", admin=True)
    before = len(await direct.list_tokens())
    async with dropping_proxy(farm.address) as proxy:
        client = AsyncClient(proxy.address, user="root", admin=True)
        await client.whoami()

        async def issued() -> bool:
            return len(await direct.list_tokens()) == before + 1

        first = client.issue_token("ci-bot", groups=["lab"], description="nightly")
        token = await lose_first_answer(proxy, first, issued)
        tokens = await direct.list_tokens()
        assert [t.id for t in tokens[before:]] == [token.token.id]
        # The retry's secret is the token's: the scheduler takes it for ci-bot.
        scheduler: Scheduler = farm.scheduler  # type: ignore[attr-defined]
        assert scheduler.tokens.identify(token.secret).user == "ci-bot"
        # The audit log tells the issue from the retry that handed its secret out again.
        events = [e for e in await direct.audit_events() if e.target == f"token {token.token.id}"]
        assert [e.detail for e in reversed(events)] == [
            "for user ci-bot",
            "for user ci-bot; a retry: the same token and secret handed out again",
        ]
        await client.close()
    await direct.close()


async def test_stack_calls_retried_after_their_answers_were_lost_succeed(farm: Farm) -> None:
    uuids = [f"stacked-{i}" for i in range(3)]
    await farm.add_dryad([board(u) for u in uuids], idle=False)
    direct = AsyncClient(farm.address, user="root", admin=True)
    async with dropping_proxy(farm.address) as proxy:
        client = AsyncClient(proxy.address, user="root", admin=True)
        await client.whoami()

        async def names() -> set[str]:
            return {s.name for s in await direct.list_stacks()}

        async def made() -> bool:
            return "bench" in await names()

        stack = await lose_first_answer(proxy, client.create_stack("bench", uuids[:2]), made)
        assert (stack.name, set(stack.worker_uuids)) == ("bench", set(uuids[:2]))
        # Without a retry, a name in use is still an error.
        with pytest.raises(AlreadyExists):
            await client.create_stack("bench", uuids[:2])

        async def gone() -> bool:
            return "bench" not in await names()

        await lose_first_answer(proxy, client.delete_stack("bench"), gone)
        with pytest.raises(NotFound):
            await client.delete_stack("bench")
        await client.close()
    await direct.close()


async def lose_first_refusal(proxy: DroppingProxy, call: Awaitable[T]) -> T:
    """Make call through proxy, losing the scheduler's first answer (a refusal that changed
    nothing) once it has come; returns what the client's retry answered."""
    proxy.hold()
    task = asyncio.ensure_future(call)

    async def answered() -> bool:
        return proxy.held > 0

    await until(answered, "the first attempt was answered")
    proxy.drop()
    return await task


async def test_a_mistyped_name_stays_not_found_when_its_answer_was_lost(farm: Farm) -> None:
    """A retry's NOT_FOUND is taken as done only if the first attempt did remove the
    worker or stack (its event is in the audit log); a name nobody removed stays an error."""
    await farm.add_dryad([board("typo-1")], idle=False)
    async with dropping_proxy(farm.address) as proxy:
        client = AsyncClient(proxy.address, user="root", admin=True)
        await client.whoami()
        with pytest.raises(WorkerNotFound):
            await lose_first_refusal(proxy, client.deregister_worker("typo-2"))
        with pytest.raises(NotFound):
            await lose_first_refusal(proxy, client.delete_stack("no-such-bench"))
        assert "typo-1" in {w.uuid for w in await client.list_workers()}
        await client.close()


async def test_calling_off_a_drain_retried_after_its_answer_was_lost_succeeds(
    farm: Farm,
) -> None:
    from boruta_client import WorkerState

    await farm.add_dryad([board("drained-1")])
    direct = AsyncClient(farm.address, user="root", admin=True)
    user = AsyncClient(farm.address, user="alice")
    request = await user.new_request({"UUID": "drained-1"})
    await user.acquire_worker(request.id)
    await direct.set_worker_state("drained-1", WorkerState.MAINTENANCE, "later", after_job=True)
    async with dropping_proxy(farm.address) as proxy:
        client = AsyncClient(proxy.address, user="root", admin=True)
        await client.whoami()

        async def called_off() -> bool:
            return (await direct.get_worker("drained-1")).drain_reason == ""

        off = client.set_worker_state("drained-1", WorkerState.IDLE)
        worker = await lose_first_answer(proxy, off, called_off)
        assert (worker.state, worker.drain_reason) == (WorkerState.RUNNING, "")
        await client.close()
    await user.close_request(request.id)
    await user.close()
    await direct.close()
