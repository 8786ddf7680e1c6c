"""The scheduler's farm metrics, fed with a real core's drained changes: what a scrape says
after scripted commands (no engine, no HTTP; tests/test_metrics.py reads a live farm)."""

from __future__ import annotations

import pytest
from boruta.metrics import LoopHistogram, MetricsSetupError, check_options
from boruta.tls import TlsFiles
from boruta_scheduler.app.metrics import FarmMetrics, SchedulerMetrics
from boruta_scheduler.types import WorkerState
from core_kit import CoreKit
from prometheus_client import CollectorRegistry

LAB, QA = frozenset({"lab"}), frozenset({"lab", "qa"})


class Scraped:
    """A kit's core and a FarmMetrics that has seen every change the kit drained."""

    def __init__(self) -> None:
        self.kit = CoreKit()
        self.farm = FarmMetrics(lambda: self.kit.core, clock=lambda: self.kit.now)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.farm)
        self._published = 0

    def value(self, name: str, **labels: str) -> float | None:
        self.kit.drain()
        for changes in self.kit.changes[self._published :]:
            self.farm.publish(changes)
        self._published = len(self.kit.changes)
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def scraped() -> Scraped:
    found = Scraped()
    found.kit.add_worker("w1", {"board": "rpi4"}, LAB)
    found.kit.add_worker("w2", {"board": "rpi4"}, QA)
    return found


def test_a_job_is_one_start_one_wait_and_its_board_busy_time(scraped: Scraped) -> None:
    kit = scraped.kit
    # Only w2 is open to qa: the request waits for nothing and runs there.
    request = kit.core.new_request(kit.now, "alice", frozenset({"qa"}), {"board": "rpi4"})
    assert scraped.value("boruta_boards", state="RUNNING") == 1
    kit.advance(30)
    kit.core.prolong_access(kit.now, request.id)  # another view of the running request
    assert scraped.value("boruta_board_busy_seconds_total", worker="w2") == pytest.approx(30)
    kit.advance(10)
    kit.core.close_request(kit.now, request.id)
    kit.answer_calls()
    assert scraped.value("boruta_requests_started_total", priority="8") == 1
    assert scraped.value("boruta_request_wait_seconds_count", priority="8", group="qa") == 1
    assert scraped.value("boruta_request_wait_seconds_sum", priority="8", group="qa") == 0
    assert scraped.value("boruta_requests_finished_total", state="DONE", priority="8") == 1
    kit.advance(100)  # an idle board is busy no longer
    assert scraped.value("boruta_board_busy_seconds_total", worker="w2") == pytest.approx(40)
    assert scraped.value("boruta_board_busy_seconds_total", worker="w1") == 0
    # w2 is in both groups: its time counts in each.
    assert scraped.value("boruta_group_busy_seconds_total", group="qa") == pytest.approx(40)
    assert scraped.value("boruta_group_busy_seconds_total", group="lab") == pytest.approx(40)
    assert scraped.value("boruta_boards", state="IDLE") == 2


def test_a_request_that_waited_for_a_board(scraped: Scraped) -> None:
    kit = scraped.kit
    lab = frozenset({"lab"})
    first = kit.core.new_request(kit.now, "alice", lab, {"board": "rpi4"}, priority=4)
    kit.core.new_request(kit.now, "alice", lab, {"board": "rpi4"}, priority=4)
    waiting = kit.core.new_request(kit.now, "bob", lab, {"board": "rpi4"}, priority=2)
    assert scraped.value("boruta_requests", state="IN_PROGRESS", priority="4") == 2
    assert scraped.value("boruta_requests", state="WAITING", priority="2") == 1
    assert scraped.value("boruta_queue_depth") == 1
    kit.advance(100)
    kit.core.close_request(kit.now, first.id)
    kit.answer_calls()  # the freed board is prepared, then takes the waiting request
    assert kit.core.request(waiting.id).job is not None
    assert scraped.value("boruta_requests", state="WAITING", priority="2") is None
    assert scraped.value("boruta_queue_depth") == 0
    assert scraped.value("boruta_request_wait_seconds_sum", priority="2", group="lab") == 100
    assert (
        scraped.value("boruta_request_wait_seconds_bucket", priority="2", group="lab", le="60.0")
        == 0
    )
    assert (
        scraped.value("boruta_request_wait_seconds_bucket", priority="2", group="lab", le="120.0")
        == 1
    )


def test_cancelled_and_failed_requests_and_board_failures(scraped: Scraped) -> None:
    kit = scraped.kit
    running = kit.core.new_request(kit.now, "alice", LAB, {"board": "rpi4"}, priority=5)
    kit.core.new_request(kit.now, "alice", LAB, {"board": "rpi4"}, priority=5)
    queued = kit.core.new_request(kit.now, "alice", LAB, {"board": "rpi4"}, priority=9)
    kit.core.update_request(kit.now, queued.id, priority=6)
    assert scraped.value("boruta_requests", state="WAITING", priority="6") == 1
    kit.core.close_request(kit.now, queued.id)
    worker = kit.core.request(running.id).job
    assert worker is not None
    kit.core.set_fail(kit.now, worker.worker_uuid, "smoke")
    assert scraped.value("boruta_requests_finished_total", state="CANCELLED", priority="6") == 1
    assert scraped.value("boruta_requests_finished_total", state="FAILED", priority="5") == 1
    assert scraped.value("boruta_board_failures_total", worker=worker.worker_uuid) == 1
    assert scraped.value("boruta_boards", state=WorkerState.FAILED.name) == 1
    assert scraped.value("boruta_requests", state="IN_PROGRESS", priority="5") == 1


def test_quarantines_and_recoveries_per_board(scraped: Scraped) -> None:
    kit = scraped.kit
    # w1 loses its heartbeats and comes back; a failed recovery is no recovery.
    kit.silent.add("w1")
    kit.advance(kit.core.policy.heartbeat_timeout + 1)
    kit.core.heartbeat(kit.now, "w1")
    assert scraped.value("boruta_board_recoveries_total", worker="w1") == 0
    kit.answer_calls()
    assert scraped.value("boruta_board_recoveries_total", worker="w1") == 1
    kit.advance(kit.core.policy.heartbeat_timeout + 1)
    kit.core.heartbeat(kit.now, "w1")
    kit.answer_calls(fail=True)
    assert scraped.value("boruta_board_recoveries_total", worker="w1") == 1
    # Its third failure within the hour, but heartbeat losses do not count: not quarantined.
    assert scraped.value("boruta_board_quarantined", worker="w1") == 0
    # w2 fails three times within the hour: quarantined until an admin acts.
    for _ in range(3):
        kit.core.set_fail(kit.now, "w2", "flaky")
        if kit.core.worker("w2").state is WorkerState.FAILED:
            kit.core.set_state(kit.now, "w2", WorkerState.IDLE)
            kit.answer_calls()
    assert scraped.value("boruta_board_quarantines_total", worker="w2") == 1
    assert scraped.value("boruta_board_quarantined", worker="w2") == 1
    kit.core.set_state(kit.now, "w2", WorkerState.IDLE)
    kit.answer_calls()
    assert scraped.value("boruta_board_quarantined", worker="w2") == 0
    assert scraped.value("boruta_board_quarantines_total", worker="w2") == 1


def test_a_draining_board_is_counted_until_its_job_ends(scraped: Scraped) -> None:
    """boruta_board_draining is 1 while a board finishes its job before going into
    MAINTENANCE (SetState with after_job), 0 before and after."""
    kit = scraped.kit
    request = kit.core.new_request(kit.now, "alice", frozenset({"qa"}), {"board": "rpi4"})
    assert scraped.value("boruta_board_draining", worker="w2") == 0
    kit.core.set_state(kit.now, "w2", WorkerState.MAINTENANCE, "new SD card", after_job=True)
    assert scraped.value("boruta_board_draining", worker="w2") == 1
    assert scraped.value("boruta_board_draining", worker="w1") == 0
    kit.core.close_request(kit.now, request.id)
    kit.answer_calls()
    assert kit.core.worker("w2").state is WorkerState.MAINTENANCE
    assert scraped.value("boruta_board_draining", worker="w2") == 0


def test_a_deregistered_board_leaves_the_figures(scraped: Scraped) -> None:
    kit = scraped.kit
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE)
    kit.answer_calls()
    kit.core.deregister(kit.now, "w1")
    assert scraped.value("boruta_boards", state="IDLE") == 1
    assert scraped.value("boruta_boards", state="MAINTENANCE") == 0
    assert scraped.value("boruta_board_busy_seconds_total", worker="w1") is None


def test_a_histogram_counts_each_value_in_its_bucket_once() -> None:
    histogram = LoopHistogram((0.5, 1.0))
    for value in (0.1, 0.5, 0.7, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.5", 2), ("1.0", 3), ("+Inf", 4)]
    assert histogram.total == pytest.approx(4.3)


def test_each_scheduler_has_a_registry_of_its_own() -> None:
    one, two = SchedulerMetrics(), SchedulerMetrics()
    one.leader.leading = True
    one.observe_commit(0.003, 2)
    assert one.registry.get_sample_value("boruta_leader") == 1
    assert two.registry.get_sample_value("boruta_leader") == 0
    assert one.registry.get_sample_value("boruta_store_commit_batches_sum") == 2
    assert two.registry.get_sample_value("boruta_store_commit_batches_sum") == 0


def test_metrics_options_that_would_serve_nobody_or_anybody_are_refused() -> None:
    tls = TlsFiles("ca.pem", "cert.pem", "key.pem")
    check_options("127.0.0.1:0", None, True, "metrics_listen")
    check_options("0.0.0.0:9101", tls, False, "metrics_listen")
    with pytest.raises(MetricsSetupError, match="metrics_anonymous"):
        check_options("127.0.0.1:0", None, False, "metrics_listen")
    with pytest.raises(MetricsSetupError, match="loopback"):
        check_options("0.0.0.0:9101", None, True, "metrics_listen")
