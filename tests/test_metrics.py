"""Prometheus metrics of a live farm (issue 13): a scripted workload through a real scheduler,
a real dryad and sshd, then the figures read over HTTP from both metrics ports; and the
alert rules and dashboard in deploy/ name only metrics the two really export."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import yaml
from boruta_client import NotFound, PermissionDenied, WorkerState
from boruta_dryad.config import load_config as dryad_config
from boruta_scheduler.config import load_config as scheduler_config
from live_farm import LiveFarm, live_farm
from metrics_kit import Samples, families, poll, scrape, total

ROOT = Path(__file__).resolve().parents[1]
BOARDS = {str(uuid4()): {"board": "rpi4"}, str(uuid4()): {"board": "rpi4"}}
GROUP = "lab"
JOBS = 3  # requests taken through a whole cycle
NOT_FOUND_CLOSES = 2  # refused calls: closing a request that does not exist
REQUESTS = "boruta.v1.Requests"
WORKERS = "boruta.v1.Workers"
CALLS = "boruta_grpc_call_duration_seconds_count"
PREPARES = "boruta_dryad_prepare_duration_seconds_count"


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFarm]:
    metrics = ("--metrics-listen", "127.0.0.1:0", "--metrics-anonymous", "yes")
    dryad = 'metrics_listen = "127.0.0.1:0"\nmetrics_anonymous = true\n'
    with live_farm(
        tmp_path_factory.mktemp("farm"), BOARDS, *metrics, dryad_settings=dryad
    ) as running:
        yield running


@pytest.fixture(scope="module")
def after_workload(farm: LiveFarm) -> tuple[Samples, Samples]:
    """Run the workload once; the scheduler's and the dryad's figures once they show it."""
    with farm.admin() as admin:
        for uuid in BOARDS:
            admin.set_worker_groups(uuid, [GROUP])
    with farm.client("alice", groups=[GROUP]) as alice:
        for priority in range(1, JOBS + 1):
            request = alice.new_request({"board": "rpi4"}, priority=priority)
            alice.acquire_worker(request.id, timeout=120)
            alice.close_request(request.id)
        for _ in range(NOT_FOUND_CLOSES):
            with pytest.raises(NotFound):
                alice.close_request(10**9)
        with pytest.raises(PermissionDenied):
            alice.set_worker_state(next(iter(BOARDS)), WorkerState.MAINTENANCE)
    farm.wait_idle()
    # Every board was prepared once on going into service and once after each job.
    prepares = len(BOARDS) + JOBS
    scheduler = poll(
        farm.metrics_address,
        lambda s: (
            total(s, "boruta_boards", state="IDLE") == len(BOARDS)
            and total(s, "boruta_dryad_call_duration_seconds_count", kind="Prepare") == prepares
        ),
        "every board IDLE again",
    )
    dryad = poll(
        farm.dryad_metrics_address,
        lambda s: total(s, PREPARES) == prepares,
        f"{prepares} prepares",
    )
    return scheduler, dryad


def test_the_requests_of_the_workload_are_counted(after_workload: tuple[Samples, Samples]) -> None:
    found, _ = after_workload
    assert total(found, "boruta_requests_finished_total", state="DONE") == JOBS
    assert total(found, "boruta_requests_finished_total") == JOBS
    assert total(found, "boruta_requests_started_total") == JOBS
    for priority in range(1, JOBS + 1):
        started = total(found, "boruta_requests_started_total", priority=str(priority))
        assert started == 1, priority
    # Nothing is live any more.
    assert total(found, "boruta_requests") == 0
    assert total(found, "boruta_queue_depth") == 0


def test_each_start_is_one_wait_time(after_workload: tuple[Samples, Samples]) -> None:
    found, _ = after_workload
    assert total(found, "boruta_request_wait_seconds_count") == JOBS
    assert total(found, "boruta_request_wait_seconds_bucket", le="+Inf") == JOBS
    # Each got its board through the one group alice and the boards share.
    assert total(found, "boruta_request_wait_seconds_count", group=GROUP) == JOBS
    # Boards were free: no request waited long.
    assert total(found, "boruta_request_wait_seconds_bucket", le="60.0") == JOBS


def test_calls_are_counted_by_method_and_code(after_workload: tuple[Samples, Samples]) -> None:
    found, _ = after_workload
    assert total(found, CALLS, service=REQUESTS, method="NewRequest", code="OK") == JOBS
    assert total(found, CALLS, service=REQUESTS, method="CloseRequest", code="OK") == JOBS
    refused = total(found, CALLS, service=REQUESTS, method="CloseRequest", code="NOT_FOUND")
    assert refused == NOT_FOUND_CLOSES
    denied = total(found, CALLS, service=WORKERS, method="SetState", code="PERMISSION_DENIED")
    assert denied == 1
    # The farm's own set-up put every board into service, as an admin.
    assert total(found, CALLS, service=WORKERS, method="SetState", code="OK") == len(BOARDS)
    registered = total(found, CALLS, service="boruta.v1.Superviser", method="Register", code="OK")
    assert registered >= 1


def test_boards_and_their_busy_time(after_workload: tuple[Samples, Samples]) -> None:
    found, _ = after_workload
    assert total(found, "boruta_boards", state="IDLE") == len(BOARDS)
    assert total(found, "boruta_boards") == len(BOARDS)
    busy = {uuid: total(found, "boruta_board_busy_seconds_total", worker=uuid) for uuid in BOARDS}
    assert sum(busy.values()) > 0, busy
    # Both boards are in the one group: its busy time is theirs (each job ended, so
    # neither figure moves between two scrapes any more).
    group_busy = total(found, "boruta_group_busy_seconds_total", group=GROUP)
    assert group_busy == pytest.approx(sum(busy.values()))
    assert total(found, "boruta_board_failures_total") == 0


def test_dryad_calls_commits_and_the_lead(after_workload: tuple[Samples, Samples]) -> None:
    found, _ = after_workload
    prepares = len(BOARDS) + JOBS
    prepared = total(found, "boruta_dryad_call_duration_seconds_count", kind="Prepare", result="ok")
    assert prepared == prepares
    assert total(found, "boruta_store_commit_duration_seconds_count") > 0
    assert total(found, "boruta_store_commit_batches_count") > 0
    assert total(found, "boruta_leader") == 1


def test_the_dryad_counts_its_prepares_and_checks(after_workload: tuple[Samples, Samples]) -> None:
    _, found = after_workload
    assert total(found, PREPARES, result="ok") == len(BOARDS) + JOBS
    assert total(found, PREPARES, result="error") == 0
    for uuid in BOARDS:
        assert total(found, PREPARES, worker=uuid) >= 1, uuid
    # The scheduler checks a board before each Prepare: sshd and the backend at least.
    assert total(found, "boruta_dryad_healthchecks_total", check="sshd", result="ok") >= 1
    assert total(found, "boruta_dryad_healthchecks_total", result="failed") == 0


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/boruta-rules.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((ROOT / "deploy/grafana/boruta-dashboard.json").read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


METRIC_NAME = re.compile(r"\bboruta_[a-z_]+\b")


@pytest.mark.parametrize("where", ["rules", "dashboard"])
def test_deploy_files_name_only_exported_metrics(
    farm: LiveFarm, after_workload: tuple[Samples, Samples], where: str
) -> None:
    expressions = rule_expressions() if where == "rules" else dashboard_expressions()
    assert expressions, f"no expressions found in the {where}"
    exported = families(scrape(farm.metrics_address)) | families(scrape(farm.dryad_metrics_address))
    named = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert named, where
    assert named <= exported, f"{where} name metrics nobody exports: {named - exported}"


def test_the_deploy_examples_serve_metrics() -> None:
    scheduler = scheduler_config(["--config", str(ROOT / "deploy/scheduler.toml")], environ={})
    assert scheduler.server.metrics_listen == "0.0.0.0:9101"
    assert not scheduler.server.metrics_anonymous
    dryad = dryad_config(["--config", str(ROOT / "deploy/dryad.toml")], environ={})
    assert dryad.metrics_listen == "0.0.0.0:9102"
    assert dryad.tls is not None and not dryad.metrics_anonymous
