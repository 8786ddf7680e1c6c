"""The dryad's own checks: counted in failing rounds, reported with SetFail only while the
scheduler says the board is in service. (The whole path, on a live farm, is in
tests/test_board_health.py.)"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from boruta.v1 import types_pb2
from boruta_dryad.agent import BoardRegistration, SchedulerLink
from boruta_dryad.config import BoardConfig, ChecksConfig
from boruta_dryad.health import Check
from boruta_dryad.selfcheck import MAX_REASON, FailCounter, SelfChecks, failure_reason
from boruta_dryad.servicer import Board

BROKEN = [Check("sshd", True, "SSH-2.0"), Check("camera", False, "no /dev/video0")]


def test_a_report_after_fail_after_failing_rounds_in_a_row() -> None:
    counter = FailCounter(2)
    assert [counter.round(ok) for ok in (False, True, False, False, False, False)] == [
        False,
        False,  # a healthy round starts the count again
        False,
        True,
        False,  # and so does a report
        True,
    ]


def test_the_reason_names_every_failing_check_and_stays_short() -> None:
    reason = failure_reason(BROKEN, 2)
    assert reason == "local checks failed 2 times in a row: camera: no /dev/video0"
    long = [Check(f"c{n}", False, "x" * 200) for n in range(10)]
    assert len(failure_reason(long, 2)) == MAX_REASON


class FakeLink:
    """What SelfChecks needs of the scheduler link: the state it was told, and SetFail."""

    def __init__(self) -> None:
        self.serving = False
        self.asked = 0
        self.epoch = 0
        self.reports: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def in_service(self, uuid: str) -> bool:
        self.asked += 1
        return self.serving

    def check_epoch(self, uuid: str) -> int:
        return self.epoch

    async def set_fail(self, uuid: str, reason: str) -> None:
        await self.reports.put((uuid, reason))


async def test_only_a_board_in_service_is_checked_and_reported() -> None:
    config = BoardConfig("b0", {}, "127.0.0.1:22", "w1", checks=ChecksConfig(interval=0.01))
    board = Board(config, cast(Any, None), cast(Any, None))
    link = FakeLink()
    rounds = 0

    async def run(_: Board) -> list[Check]:
        nonlocal rounds
        rounds += 1
        return BROKEN

    checks = SelfChecks({"w1": board}, cast(Any, link), run=run)
    checks.start()
    try:
        # Out of service (MAINTENANCE, FAILED, or not known): asked, never checked.
        while link.asked < 5:
            await asyncio.sleep(0.01)
        assert rounds == 0 and link.reports.empty()
        link.serving = True
        uuid, reason = await link.reports.get()
        assert uuid == "w1" and rounds == 2
        assert reason == "local checks failed 2 times in a row: camera: no /dev/video0"
        assert checks.reported == {"w1": 1}
    finally:
        await checks.stop()


async def test_a_round_begun_before_a_prepare_ran_the_checks_reports_nothing() -> None:
    """The board was broken when the round began; a Prepare ran the checks while it went
    on (the admin had fixed the board): the round's failure is stale, only later rounds
    count."""
    checks_config = ChecksConfig(interval=0.01, fail_after=1)
    config = BoardConfig("b0", {}, "127.0.0.1:22", "w1", checks=checks_config)
    board = Board(config, cast(Any, None), cast(Any, None))
    link = FakeLink()
    link.serving = True
    rounds = 0

    async def run(_: Board) -> list[Check]:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            link.epoch += 1  # as SchedulerLink.checks_ran does when a Prepare comes
        return BROKEN

    checks = SelfChecks({"w1": board}, cast(Any, link), run=run)
    checks.start()
    try:
        uuid, _ = await link.reports.get()
        assert uuid == "w1" and rounds == 2  # the first round's failure was not reported
        assert checks.reported == {"w1": 1}
    finally:
        await checks.stop()


def test_the_link_s_check_epoch_moves_when_the_board_enters_or_leaves_service() -> None:
    boards = [BoardRegistration("w1", {}, "")]
    link = SchedulerLink("127.0.0.1:1", "127.0.0.1:2", boards, instance_id="i", version="v")
    seen = [link.check_epoch("w1")]
    for step in (
        lambda: link.told("w1", types_pb2.WORKER_STATE_MAINTENANCE),  # still out: no move
        lambda: link.told("w1", types_pb2.WORKER_STATE_PREPARE),  # in
        lambda: link.told("w1", types_pb2.WORKER_STATE_IDLE),  # still in: no move
        lambda: link.checks_ran("w1"),
        lambda: link.left_service("w1"),  # out
    ):
        step()
        seen.append(link.check_epoch("w1"))
    assert seen == [0, 0, 1, 1, 2, 3]
