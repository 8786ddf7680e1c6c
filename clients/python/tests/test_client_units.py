"""Unit tests of the client's pure parts: the public API, error mapping, config, job files,
lease timing and schedctl's exit codes and output."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boruta_client
import click
import grpc
import pytest
from boruta.schedulers import LEADER_KEY, SchedulerList, leader_of
from boruta_client import errors
from boruta_client._rpc import translate
from boruta_client.config import ClientConfig, Context, find_farm, load_config, parse_config
from boruta_client.lease import (
    LEASE_JOB_TIMEOUT,
    lease_job_timeout,
    next_prolong_delay,
    prolong_lead,
    should_retry_prolong,
)
from boruta_client.runner import Transfer, load_job, parse_job
from boruta_client.types import Access, Job, RequestState
from schedctl import exits
from schedctl.cli import DURATION, TIME, parse_caps
from schedctl.output import jsonable, span, table

EXPECTED_ALL = [
    "LEASE_JOB_TIMEOUT",
    "Access", "Acquired", "AcquiredBoard", "AllocatedBoard", "Allocation", "AlreadyExists",
    "AsyncBoard", "AsyncBoardSSH",
    "AsyncBoards",
    "AsyncBoardsLease", "AsyncClient", "AsyncLease",
    "AsyncWatch", "AuditEvent", "Board", "BoardSSH", "Boards", "BoardsLease", "BorutaError",
    "Busy", "Caller", "Client",
    "ClientConfig", "Colocation",
    "CommandResult", "CommandTimeout", "Context", "DeadlineExceeded", "FailedPrecondition",
    "FailureKind", "HistoryEntry", "HostKeyMismatch",
    "HostStatus", "IdempotencyKeyReused", "InternalError", "InvalidArgument", "IssuedToken",
    "Job", "JobResult", "JobSpec", "JobStatus",
    "Lease",
    "NoSuchWorker", "NotFound", "PendingBoard", "PendingCode", "PendingReason", "PermissionDenied",
    "Phase", "Placement", "PortForward",
    "Profile",
    "ProlongLimitReached", "Request", "RequestEnded", "RequestNotFound", "RequestSort",
    "RequestState", "ResourceExhausted", "SSHError", "ScheduleTimeout", "Stack", "Together",
    "Token",
    "Transfer",
    "Unauthenticated", "Unavailable", "Usage", "UsageBy", "UsageTotals", "Watch", "Worker",
    "WorkerChange", "WorkerFailure", "WorkerNotFound",
    "WorkerSort", "WorkerState", "WrongRequestState", "WrongWorkerState", "load_config",
    "load_job", "parse_job", "run_job",
]  # fmt: skip


def test_public_api_is_pinned() -> None:
    assert boruta_client.__all__ == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert getattr(boruta_client, name) is not None


class FakeCallError(grpc.RpcError):
    """Stands in for a failed call: only the three accessors the client reads."""

    def __init__(self, code: grpc.StatusCode, details: str, reason: str = "") -> None:
        self._code, self._details = code, details
        self._trailing = (("boruta-error-reason", reason),) if reason else ()

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, "NO_CAPABLE_WORKER", errors.NoSuchWorker),
        (grpc.StatusCode.FAILED_PRECONDITION, "PROLONG_LIMIT_REACHED", errors.ProlongLimitReached),
        (grpc.StatusCode.FAILED_PRECONDITION, "WRONG_REQUEST_STATE", errors.WrongRequestState),
        (grpc.StatusCode.FAILED_PRECONDITION, "", errors.FailedPrecondition),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "BUSY", errors.Busy),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "", errors.ResourceExhausted),
        (grpc.StatusCode.NOT_FOUND, "REQUEST_NOT_FOUND", errors.RequestNotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, "", errors.InvalidArgument),
        (grpc.StatusCode.PERMISSION_DENIED, "", errors.PermissionDenied),
        (grpc.StatusCode.UNAVAILABLE, "", errors.Unavailable),
        (grpc.StatusCode.INTERNAL, "", errors.InternalError),
        (grpc.StatusCode.UNKNOWN, "NOT_A_REASON", errors.BorutaError),
    ],
)
def test_errors_map_by_reason_then_code(
    code: grpc.StatusCode, reason: str, expected: type[errors.BorutaError]
) -> None:
    error = translate(FakeCallError(code, "what to fix", reason), "sched:1")
    assert type(error) is expected
    assert "what to fix" in str(error)


def test_unreachable_scheduler_names_the_address() -> None:
    error = translate(FakeCallError(grpc.StatusCode.UNAVAILABLE, "connection refused"), "s:9")
    assert "cannot reach the scheduler at s:9" in str(error)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.NoSuchWorker("x"), 65),
        (errors.Busy("x"), 75),
        (errors.RequestEnded("x", "TIMEOUT"), 74),
        (errors.ScheduleTimeout("x"), 74),
        (errors.InvalidArgument("x"), 64),
        (errors.RequestNotFound("x"), 66),
        (errors.WorkerNotFound("x"), 66),
        (errors.WrongRequestState("x"), 73),
        (errors.ProlongLimitReached("x"), 73),
        (errors.PermissionDenied("x"), 77),
        (errors.Unauthenticated("x"), 77),
        (errors.Unavailable("x"), 69),
        (errors.SSHError("x"), 255),
        (errors.ResourceExhausted("x"), 1),
        (errors.BorutaError("x"), 1),
    ],
)
def test_exit_codes_as_documented(error: errors.BorutaError, code: int) -> None:
    assert exits.exit_code_of(error) == code


def test_config_contexts_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty"))
    config = parse_config(
        {
            "context": "lab",
            "contexts": {"lab": {"scheduler": "s:1", "user": "u", "groups": "a, b"}},
            "profiles": {"rpi": {"caps": {"board": "rpi4"}}},
        }
    )
    assert config.context() == Context("s:1", "u", ("a", "b"), False)
    with pytest.raises(errors.InvalidArgument, match="no context 'x'"):
        config.context("x")
    with pytest.raises(errors.InvalidArgument, match="unknown keys"):
        parse_config({"contxt": "lab"})
    assert load_config(None) == ClientConfig()  # a missing default file is fine
    with pytest.raises(errors.InvalidArgument, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_job_file_with_profile_and_relative_paths(tmp_path: Path) -> None:
    job = tmp_path / "ci" / "job.toml"
    job.parent.mkdir()
    job.write_text(
        'profile = "rpi"\npriority = 2\ncommands = ["make test"]\n'
        '[[upload]]\nsrc = "fw.bin"\ndest = "/tmp/fw.bin"\n'
        '[[fetch]]\nsrc = "log.txt"\ndest = "out/log.txt"\n'
    )
    spec = load_job(job, {"rpi": {"caps": {"board": "rpi4"}, "priority": 9, "wait_timeout": 60}})
    assert spec.caps == {"board": "rpi4"} and spec.priority == 2 and spec.wait_timeout == 60
    assert spec.upload == (Transfer(str(job.parent / "fw.bin"), "/tmp/fw.bin"),)
    assert spec.fetch == (Transfer("log.txt", str(job.parent / "out/log.txt")),)
    with pytest.raises(errors.InvalidArgument, match="no runner profile 'x'"):
        parse_job({"profile": "x", "commands": []})
    with pytest.raises(errors.InvalidArgument, match="unknown keys cmds"):
        parse_job({"cmds": []})
    with pytest.raises(errors.InvalidArgument, match="wait_timeout must be a positive"):
        parse_job({"commands": [], "wait_timeout": -1})


def test_prolong_timing() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    job = Job("w", t0, t0 + timedelta(seconds=90), t0 + timedelta(hours=1), 0)
    lead = prolong_lead(job, t0)
    assert lead == timedelta(seconds=30)
    assert next_prolong_delay(job, t0, lead, moved=True) == 60
    assert next_prolong_delay(job, t0 + timedelta(seconds=80), lead, moved=True) == 0
    assert next_prolong_delay(job, t0 + timedelta(seconds=80), lead, moved=False) == 15
    hour_job = Job("w", t0, t0 + timedelta(hours=1), t0 + timedelta(hours=2), 0)
    assert prolong_lead(hour_job, t0) == timedelta(seconds=60)


def test_a_short_prolong_step_does_not_cause_a_prolong_storm() -> None:
    """A 1 h job on a scheduler that prolongs by 30 s: after each prolong the lease waits
    most of the 30 s, instead of prolonging again at once with the first slice's lead."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    job = Job("w", t0, t0 + timedelta(hours=1), t0 + timedelta(hours=24), 0)
    now = job.timeout_at - prolong_lead(job, t0)
    for _ in range(5):
        prolonged = Job("w", t0, now + timedelta(seconds=30), job.max_timeout_at, 1)
        lead = prolong_lead(prolonged, now)
        delay = next_prolong_delay(prolonged, now, lead, moved=True)
        assert delay == 20
        now += timedelta(seconds=delay)


def test_a_lease_asks_for_a_short_job_timeout_only_while_it_prolongs() -> None:
    # Minutes, not the scheduler's hour: a dead client's board comes free this soon.
    assert timedelta(minutes=1) <= LEASE_JOB_TIMEOUT <= timedelta(minutes=10)
    assert lease_job_timeout(None, auto_prolong=True) == LEASE_JOB_TIMEOUT
    assert lease_job_timeout(None, auto_prolong=False) is None
    given = timedelta(seconds=30)
    assert lease_job_timeout(given, auto_prolong=True) == given
    assert lease_job_timeout(given, auto_prolong=False) == given


def test_known_hosts_lines_name_the_port_as_openssh_does() -> None:
    keys = ("ssh-ed25519 AAAAC3Nz", "ssh-rsa AAAAB3Nz")
    tunnel = Access("sched.lab", 40022, "job1", "PEM", keys)
    assert tunnel.known_hosts() == (
        "[sched.lab]:40022 ssh-ed25519 AAAAC3Nz\n[sched.lab]:40022 ssh-rsa AAAAB3Nz\n"
    )
    assert Access("board.lab", 22, "job1", "PEM", keys[:1]).known_hosts() == (
        "board.lab ssh-ed25519 AAAAC3Nz\n"
    )
    assert Access("board.lab", 22, "job1", "PEM").known_hosts() == ""


def test_prolong_retries_only_what_may_pass() -> None:
    for passing in (errors.Unavailable("x"), errors.DeadlineExceeded("x"), errors.BorutaError("x")):
        assert should_retry_prolong(passing)
    for final in (
        errors.ProlongLimitReached("x"),
        errors.WrongRequestState("x"),
        errors.RequestNotFound("x"),
        errors.PermissionDenied("x"),
    ):
        assert not should_retry_prolong(final)


def test_schedctl_helpers() -> None:
    assert parse_caps(["board=rpi4,camera=yes", "x=a=b"]) == {
        "board": "rpi4",
        "camera": "yes",
        "x": "a=b",
    }
    # A comma not followed by KEY= is part of the value: a list the board's value must hold.
    assert parse_caps(["circuits=usb.pc.vcc,handset.battery,os=linux|android"]) == {
        "circuits": "usb.pc.vcc,handset.battery",
        "os": "linux|android",
    }
    assert parse_caps(["circuits=vcc, battery", "x=a,,b"]) == {
        "circuits": "vcc,battery",
        "x": "a,,b",  # passed on, for the scheduler to refuse with what to fix
    }
    with pytest.raises(click.BadParameter, match="not KEY=VALUE"):
        parse_caps(["vcc,circuits=x"])
    soon = TIME.convert("+5m", None, None)
    assert timedelta(minutes=4) < soon - datetime.now(UTC) <= timedelta(minutes=5)
    assert TIME.convert("2026-01-01T10:00:00", None, None).tzinfo is UTC
    assert DURATION.convert("90s", None, None) == timedelta(seconds=90)
    assert DURATION.convert("5m", None, None) == timedelta(minutes=5)
    with pytest.raises(click.BadParameter, match="not N"):
        DURATION.convert("5 minutes", None, None)
    assert span(timedelta(seconds=3725)) == "1h02m"
    assert table([1, 22], [("N", lambda n: n)]) == "N\n1\n22"
    data = jsonable(
        {"s": RequestState.DONE, "t": datetime(2026, 1, 1, tzinfo=UTC), "g": {"b", "a"}}
    )
    assert json.dumps(data) == '{"s": "DONE", "t": "2026-01-01T00:00:00Z", "g": ["a", "b"]}'


def test_several_schedulers_from_the_config_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty"))
    config = parse_config(
        {"contexts": {"ha": {"schedulers": ["a:1", "b:2"]}, "one": {"scheduler": "a:1, b:2"}}}
    )
    assert config.context("ha").schedulers() == ("a:1", "b:2")
    assert config.context("one").schedulers() == ("a:1", "b:2")
    with pytest.raises(errors.InvalidArgument, match="not both"):
        parse_config({"contexts": {"x": {"scheduler": "a:1", "schedulers": ["b:2"]}}})
    env = {"BORUTA_SCHEDULER": "a:1", "BORUTA_SCHEDULERS": "b:2,c:3"}
    _, found = find_farm(environ=env)
    assert found.schedulers() == ("b:2", "c:3")
    _, given = find_farm(environ=env, overrides={"scheduler": ["d:4", "e:5"]})
    assert given.schedulers() == ("d:4", "e:5")


def test_a_scheduler_list_follows_the_named_leader_else_the_next_address() -> None:
    schedulers = SchedulerList(["a:1", "b:2", "c:3"])
    assert schedulers.current == "a:1"
    assert not schedulers.failed("a:1")  # nothing named: the next one
    assert schedulers.current == "b:2"
    assert schedulers.failed("b:2", "x:9")  # a standby named a leader outside the list
    assert schedulers.current == "x:9"
    assert not schedulers.failed("b:2", "c:3")  # an old answer changes nothing
    assert schedulers.current == "x:9"
    assert not schedulers.failed("x:9")  # the leader went away: back to the list
    assert schedulers.current == "a:1"
    assert not schedulers.failed("a:1", "a:1")  # naming itself is naming nobody
    assert schedulers.current == "b:2"
    assert leader_of([("other", "v"), (LEADER_KEY, b"c:3")]) == "c:3"
    assert leader_of(None) == ""


def test_together_syntax_reads_groups_and_refuses_what_it_cannot() -> None:
    from boruta_client import Colocation, Placement
    from boruta_client._convert import colocations, parse_together, together_text

    assert parse_together("host") == (Colocation((), Placement.HOST),)
    both = parse_together("host:dut, relay;stack:a,b")
    assert both == (
        Colocation(("dut", "relay"), Placement.HOST),
        Colocation(("a", "b"), Placement.STACK),
    )
    assert together_text(both) == "host:dut,relay;stack:a,b"
    assert [(list(c.profiles), c.placement) for c in colocations("stack")] == [([], 2)]
    for bad in ("rack", "host:dut,,relay", ""):
        with pytest.raises(errors.InvalidArgument):
            parse_together(bad)


def test_the_progress_line_says_why_a_request_waits(capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import UTC, datetime

    from boruta_client import PendingCode, PendingReason, Request, RequestState
    from schedctl.cli import Progress

    now = datetime.now(UTC)

    def waiting(code: PendingCode, ahead: int) -> Request:
        why = PendingReason(code, "explained", ahead)
        return Request(7, 4, "alice", frozenset(), {}, now, now, RequestState.WAITING, "",
                       now, now, queue_position=ahead, pending_reason=why)  # fmt: skip

    progress = Progress(7)
    progress(waiting(PendingCode.BOARDS_BUSY, 0))
    progress(waiting(PendingCode.HIGHER_PRIORITY, 2))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("request 7 WAITING, 0 ahead (boards busy), waiting "), lines
    assert lines[1].startswith("request 7 WAITING, 2 ahead, waiting "), lines
