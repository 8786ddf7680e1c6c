"""Caps with alternatives and list-valued board caps over real gRPC on loopback, against a
scheduler on SQLite: matching, refusal of malformed values, and a restart."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from boruta.v1 import types_pb2
from conftest import farm_on
from farm_kit import Farm, board
from test_requests_grpc import all_requests, expect_error, reason_of

WAITING, IN_PROGRESS = types_pb2.REQUEST_STATE_WAITING, types_pb2.REQUEST_STATE_IN_PROGRESS


async def test_alternatives_and_subsets_match_over_grpc(farm: Farm) -> None:
    await farm.add_dryad(
        [
            board("relay", circuits="usb.pc.vcc,handset.battery"),
            board("tux", os="linux"),
            board("win", os="windows"),
        ]
    )
    alice = farm.client("alice")
    either = await alice.new({"os": "android|linux"})
    assert either.state == IN_PROGRESS
    assert either.job.worker_uuid == "tux"
    assert dict(either.caps) == {"os": "android|linux"}  # kept as asked
    wired = await alice.new({"circuits": "handset.battery,usb.pc.vcc"})
    assert wired.state == IN_PROGRESS
    assert wired.job.worker_uuid == "relay"
    # A plain item is in the relay's list: it waits for the relay, not for windows.
    one = await alice.new({"circuits": "usb.pc.vcc"})
    assert one.state == WAITING
    await alice.close(wired.id)
    acquired = await alice.acquire(one.id)
    assert acquired.job.worker_uuid == "relay"
    await expect_error(
        alice.new({"circuits": "usb.pc.vcc,handset.usb"}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "no registered worker has caps circuits=usb.pc.vcc,handset.usb",
    )
    with_grpc_error = alice.new({"os": "android|linux"}, no_wait=True)
    await expect_error(with_grpc_error, grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")


async def test_a_malformed_alternative_is_invalid_argument_and_changes_nothing(
    farm: Farm,
) -> None:
    await farm.add_dryad([board("tux", os="linux")])
    alice = farm.client("alice")
    before = await all_requests(alice)
    for value, fragment in [
        ("linux||android", "has an empty alternative"),
        ("linux|", "has an empty alternative"),
        ("vcc,,battery", "has an empty item"),
        ("linux | android", "has spaces around '|' or ','"),
    ]:
        with_error = alice.new({"os": value}, accept_unsatisfiable=True)
        details = await expect_error(
            with_error, grpc.StatusCode.INVALID_ARGUMENT, f"caps value {value!r} of 'os'", fragment
        )
        assert "as in" in details  # says how to write it
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.new({"os": "linux||android"})
    assert reason_of(refused.value) == "INVALID_ARGUMENT"
    assert await all_requests(alice) == before
    # The board is still free for a well-formed request.
    assert (await alice.new({"os": "linux|android"})).job.worker_uuid == "tux"


async def test_a_restart_keeps_a_waiting_request_with_alternatives_matchable(
    tmp_path: Path,
) -> None:
    async with farm_on(tmp_path) as farm:
        await farm.add_dryad([board("relay", os="linux", circuits="vcc,battery")], idle=False)
        either = await farm.client("alice").new({"os": "android|linux", "circuits": "battery"})
        assert either.state == WAITING
    async with farm_on(tmp_path) as farm:
        alice = farm.client("alice")
        restored = await alice.info(either.id)
        assert restored.state == WAITING
        assert dict(restored.caps) == {"os": "android|linux", "circuits": "battery"}
        # The board's dryad finds the new scheduler; put into service, it takes the request.
        await farm.add_dryad([board("relay", os="linux", circuits="vcc,battery")], idle=False)
        await farm.admin.set_state("relay", types_pb2.WORKER_STATE_IDLE)
        acquired = await alice.acquire(either.id)
        assert acquired.job.worker_uuid == "relay"
