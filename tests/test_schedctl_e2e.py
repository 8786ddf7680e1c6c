"""schedctl as a subprocess against a real farm: users run jobs and get shells, admins run
boards, watches stream, and every -o json output parses and matches the API."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from boruta_client import Busy, Client, RequestState, WorkerState
from farm_kit import schedctl_env
from import_kit import loaded_after, schedctl_code
from live_farm import LiveFarm, live_farm
from pipe_kit import LineReader
from schedctl import exits
from schedctl.output import jsonable
from system_kit import unique_uuid

# Unique per run: a board UUID names job users, and another run on this host must never
# share one.
CAMERA_BOARD, PLAIN_BOARD = unique_uuid("sc-a"), unique_uuid("sc-b")
BOARDS = {CAMERA_BOARD: {"board": "rpi4", "camera": "yes"}, PLAIN_BOARD: {"board": "rpi4"}}
SCHEDCTL = [sys.executable, "-m", "schedctl.main"]


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFarm]:
    with live_farm(tmp_path_factory.mktemp("farm"), BOARDS) as running:
        yield running


@pytest.fixture
def env(farm: LiveFarm, tmp_path: Path) -> dict[str, str]:
    farm.reset()
    return schedctl_env(farm.address, tmp_path)


def schedctl(
    env: dict[str, str], *args: str, check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*SCHEDCTL, *args], env=env, capture_output=True, text=True, timeout=120)
    if check is not None:
        assert done.returncode == check, (done.returncode, done.stdout, done.stderr)
    return done


def as_json(env: dict[str, str], *args: str) -> object:
    return json.loads(schedctl(env, *args, "-o", "json").stdout)


def test_run_streams_output_and_exits_with_the_remote_status(env: dict[str, str]) -> None:
    done = schedctl(
        env, "run", "--caps", "board=rpi4", "--", "sh", "-c", "echo hello; echo oops >&2; exit 7",
        check=7,
    )  # fmt: skip
    assert done.stdout == "hello\n"
    assert "oops" in done.stderr and "running on sc-" in done.stderr
    assert "job failed" in done.stderr


def test_run_job_file_uploads_runs_and_fetches(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "input.txt").write_text("from the runner\n")
    job = tmp_path / "job.toml"
    job.write_text(
        'caps = { board = "rpi4", camera = "yes" }\npriority = 3\n'
        'commands = ["cat input.txt > result.txt", "echo $((6 * 7)) >> result.txt", "id -un"]\n'
        '[[upload]]\nsrc = "input.txt"\ndest = "input.txt"\n'
        '[[fetch]]\nsrc = "result.txt"\ndest = "out/result.txt"\n'
    )
    done = schedctl(env, "run", str(job))
    assert (tmp_path / "out" / "result.txt").read_text() == "from the runner\n42\n"
    user = done.stdout.strip()
    result = as_json(env, "run", str(job))
    assert isinstance(result, dict)
    assert result["phase"] == "DONE" and result["worker_uuid"] == CAMERA_BOARD
    assert [c["exit_status"] for c in result["commands"]] == [0, 0, 0]
    assert result["commands"][2]["stdout"].strip() != user  # a fresh job user each time


def test_errors_have_distinct_exit_codes(env: dict[str, str], farm: LiveFarm) -> None:
    done = schedctl(env, "requests", "new", "board=rpi5", check=exits.NO_SUCH_BOARD)
    assert "no registered worker has caps board=rpi5" in done.stderr
    schedctl(env, "requests", "show", "999999", check=exits.NOT_FOUND)
    first = as_json(env, "requests", "new", "camera=yes", "--no-wait")
    waited = schedctl(
        env, "run", "--wait-timeout", "1", "--caps", "camera=yes", "--", "true",
        check=exits.NOT_SCHEDULED,
    )  # fmt: skip
    assert "still waiting after 1 s" in waited.stderr
    done = schedctl(env, "requests", "new", "camera=yes", "--no-wait", check=exits.BUSY)
    assert "busy" in done.stderr
    assert isinstance(first, dict)
    schedctl(env, "requests", "close", str(first["id"]))
    schedctl(env, "requests", "update", str(first["id"]), "-p", "3", check=exits.WRONG_STATE)
    schedctl(env, "requests", "new", "-p", "99", check=exits.USAGE)
    schedctl(env, "--scheduler", "127.0.0.1:1", "status", check=exits.UNAVAILABLE)


def test_messages_name_options_not_api_fields(env: dict[str, str], tmp_path: Path) -> None:
    done = schedctl(env, "requests", "new", "board=rpi5", check=exits.NO_SUCH_BOARD)
    assert "or set --accept-unsatisfiable to queue anyway" in done.stderr, done.stderr
    done = schedctl(
        env, "requests", "new", "camera=yes", "--no-wait", "--valid-after", "+1h",
        check=exits.INVALID,
    )  # fmt: skip
    assert "--no-wait asks for a board now; leave --valid-after unset" in done.stderr
    done = schedctl(env, "requests", "new", "--job-timeout", "1s", check=exits.INVALID)
    assert "--job-timeout must be at least 10 s, got 1 s" in done.stderr, done.stderr
    held = as_json(env, "requests", "new", "camera=yes", "--no-wait")
    assert isinstance(held, dict)
    done = schedctl(env, "requests", "new", "camera=yes", "--no-wait", check=exits.BUSY)
    assert "or queue the request without --no-wait" in done.stderr, done.stderr
    # The library's users get the API's names, which are its keyword arguments too.
    with (
        Client(env["BORUTA_SCHEDULER"], user="alice") as client,
        pytest.raises(Busy, match="without no_wait"),
    ):
        client.new_request({"camera": "yes"}, no_wait=True)
    schedctl(env, "requests", "close", str(held["id"]))


def test_zero_is_not_a_priority_or_a_job_timeout(env: dict[str, str], tmp_path: Path) -> None:
    for args in (
        ["requests", "new", "-p", "0", "board=rpi4"],
        ["requests", "update", "1", "-p", "0"],
        ["run", "-p", "0", "--caps", "board=rpi4", "--", "true"],
        ["ssh", "-p", "0", "--caps", "board=rpi4"],
    ):
        done = schedctl(env, *args, check=exits.USAGE)
        assert "'-p' / '--priority': 0 is not in the range 1<=x<=16" in done.stderr, args
    done = schedctl(env, "requests", "new", "--job-timeout", "0s", check=exits.USAGE)
    assert "must be longer than 0; leave the option out for the default" in done.stderr
    job = tmp_path / "job.toml"
    job.write_text('priority = 0\ncommands = ["true"]\n')
    done = schedctl(env, "run", str(job), check=exits.INVALID)
    assert f"{job}: priority must be a whole number from 1 to 16" in done.stderr, done.stderr


def test_request_lifecycle_and_json_matches_the_api(env: dict[str, str], farm: LiveFarm) -> None:
    created = as_json(env, "requests", "new", "board=rpi4", "-p", "4")
    assert isinstance(created, dict) and created["state"] == "IN_PROGRESS"
    rid = created["id"]
    with Client(farm.address, user="alice") as client:
        assert as_json(env, "requests", "show", str(rid)) == jsonable(client.get_request(rid))
        listed = as_json(env, "requests", "list", "--mine", "--live")
        assert listed == jsonable(
            client.list_requests(
                owners=["alice"],
                states=[RequestState.WAITING, RequestState.IN_PROGRESS],
                descending=True,
            )
        )
        workers = as_json(env, "workers", "list")
        assert isinstance(workers, list)
        assert [(w["uuid"], w["state"], w["caps"]) for w in workers] == [
            (w.uuid, w.state.name, dict(w.caps)) for w in client.list_workers()
        ]
    prolonged = as_json(env, "requests", "prolong", str(rid))
    assert isinstance(prolonged, dict) and "timeout_at" in prolonged
    access = as_json(env, "requests", "acquire", str(rid))
    assert isinstance(access, dict) and access["port"] > 0
    key = Path(access["key_file"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in key.read_text()
    table = schedctl(env, "requests", "acquire", str(rid)).stdout
    assert f"ssh -i {key}" in table and "PRIVATE KEY" not in table
    who = schedctl(env, "ssh", str(rid), "--", "id", "-un")
    assert who.stdout.strip() == access["username"]
    who = schedctl(env, "ssh", "--paramiko", str(rid), "--", "id", "-un")
    assert who.stdout.strip() == access["username"]
    schedctl(env, "ssh", str(rid), "--", "exit 5", check=5)
    status = schedctl(env, "status").stdout
    assert "your live requests" in status and str(rid) in status
    closed = as_json(env, "requests", "close", str(rid))
    assert isinstance(closed, dict) and closed["state"] == "DONE"


def test_show_and_list_say_why_a_request_waits(env: dict[str, str], farm: LiveFarm) -> None:
    running = as_json(env, "requests", "new", "camera=yes")
    assert isinstance(running, dict) and running["state"] == "IN_PROGRESS"
    first, second = (as_json(env, "requests", "new", "camera=yes") for _ in range(2))
    assert isinstance(first, dict) and isinstance(second, dict)
    shown = schedctl(env, "requests", "show", str(first["id"])).stdout
    why = re.search(r"^why it waits: +(.*)$", shown, re.M)
    assert (
        why and why.group(1) == "first in line; every board it could use is taken (1 running a job)"
    )
    assert re.search(r"^expected start: +\S+ \S+ unless jobs are prolonged$", shown, re.M), shown
    assert re.search(r"^latest start: +\S+ \S+ unless boards fail$", shown, re.M), shown
    board = re.search(r"^boards: +(.*)$", shown, re.M)
    assert board, shown
    assert board.group(1).startswith(f"{CAMERA_BOARD} RUNNING, running request {running['id']}")
    assert re.search(r"^queue position: +0 ahead$", shown, re.M), shown
    behind = schedctl(env, "requests", "show", str(second["id"])).stdout
    assert "1 waiting request that could use the same boards goes first" in behind
    assert "expected start" not in behind
    detail = as_json(env, "requests", "show", str(first["id"]))
    assert isinstance(detail, dict)
    assert detail["pending_reason"]["code"] == "BOARDS_BUSY"
    assert detail["pending_reason"]["boards"][0]["uuid"] == CAMERA_BOARD
    rows = schedctl(env, "requests", "list", "--mine", "--live").stdout.splitlines()
    reasons = {line.split()[0]: line for line in rows[1:]}
    assert reasons[str(first["id"])].endswith("boards busy")
    assert reasons[str(second["id"])].endswith("1 ahead")
    for rid in (second["id"], first["id"], running["id"]):
        schedctl(env, "requests", "close", str(rid))


def test_several_boards_in_one_request(env: dict[str, str], farm: LiveFarm) -> None:
    created = as_json(
        env, "requests", "new", "--profile", "cam:camera=yes", "--profile", "plain:board=rpi4"
    )
    assert isinstance(created, dict) and created["state"] == "IN_PROGRESS"
    assert [p["name"] for p in created["profiles"]] == ["cam", "plain"]
    assert [j["worker_uuid"] for j in created["jobs"]] == [CAMERA_BOARD, PLAIN_BOARD]
    rid = str(created["id"])
    shown = schedctl(env, "requests", "show", rid).stdout
    assert "board cam" in shown and f"camera=yes on {CAMERA_BOARD}" in shown
    assert "board plain" in shown and f"board=rpi4 on {PLAIN_BOARD}" in shown
    access = as_json(env, "requests", "acquire", rid)
    assert isinstance(access, dict)
    assert [b["name"] for b in access["boards"]] == ["cam", "plain"]
    keys = [Path(b["key_file"]) for b in access["boards"]]
    assert [k.name for k in keys] == [f"request-{rid}-cam.pem", f"request-{rid}-plain.pem"]
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
    for index, name in enumerate(("cam", "plain")):
        for pick in (name, str(index)):
            who = schedctl(env, "ssh", rid, "--board", pick, "--", "id", "-un")
            assert who.stdout.strip() == access["boards"][index]["username"]
    schedctl(env, "ssh", rid, "--board", "nope", "--", "true", check=exits.USAGE)
    closed = as_json(env, "requests", "close", rid)
    assert isinstance(closed, dict) and closed["state"] == "DONE"
    done = schedctl(env, "requests", "new", "board=rpi4", "--profile", "a:", check=exits.USAGE)
    assert "not both" in done.stderr
    done = schedctl(
        env, "requests", "new", "--profile", "camera=yes", "--profile", "camera=yes",
        check=exits.NO_SUCH_BOARD,
    )  # fmt: skip
    assert "a different one for each of the 2 profiles" in done.stderr


def test_ssh_with_caps_leases_a_board_for_the_session(env: dict[str, str], farm: LiveFarm) -> None:
    done = schedctl(env, "ssh", "--caps", "camera=yes", "--", "echo", "on the board")
    assert done.stdout == "on the board\n"
    with Client(farm.address, user="alice") as client:
        mine = client.list_requests(owners=["alice"], descending=True, limit=1)
    assert mine[0].state is RequestState.DONE and mine[0].caps == {"camera": "yes"}


def test_caps_with_alternatives_and_lists(env: dict[str, str], farm: LiveFarm) -> None:
    new = schedctl(env, "requests", "new", "--help").stdout
    assert "'os=linux|android'" in new and "circuits=usb.pc.vcc,handset.battery" in new
    created = as_json(env, "requests", "new", "board=rpi5|rpi4,camera=yes", "--no-wait")
    assert isinstance(created, dict) and created["state"] == "IN_PROGRESS"
    assert created["caps"] == {"board": "rpi5|rpi4", "camera": "yes"}
    assert created["job"]["worker_uuid"] == CAMERA_BOARD
    # Which requests there are and their states: a running request's stored view gains
    # facts a restart rebuilds (its tunnel) with a later commit, which is no change of it.
    with Client(farm.address, user="alice") as client:
        before = [(r.id, r.state) for r in client.list_requests(owners=["alice"])]
    done = schedctl(env, "requests", "new", "board=rpi4||rpi5", check=exits.INVALID)
    assert "empty alternative" in done.stderr and "as in os=linux|android" in done.stderr
    with Client(farm.address, user="alice") as client:
        assert [(r.id, r.state) for r in client.list_requests(owners=["alice"])] == before
    schedctl(env, "requests", "close", str(created["id"]))


def test_admin_takes_a_board_out_of_service_and_back(env: dict[str, str]) -> None:
    admin = {**env, "BORUTA_USER": "root", "BORUTA_ADMIN": "1"}
    out = schedctl(admin, "workers", "maintenance", PLAIN_BOARD, "-r", "swap the SD card").stdout
    assert "MAINTENANCE" in out and "swap the SD card" in out
    shown = as_json(admin, "workers", "show", PLAIN_BOARD)
    assert isinstance(shown, dict)
    assert (shown["state"], shown["reason"]) == ("MAINTENANCE", "swap the SD card")
    assert "MAINTENANCE" in schedctl(admin, "workers", "list", "-s", "maintenance").stdout
    back = as_json(admin, "workers", "idle", PLAIN_BOARD, "-r", "new card")
    assert isinstance(back, dict) and back["state"] == WorkerState.IDLE.name
    history = as_json(admin, "workers", "history", PLAIN_BOARD, "-n", "6")
    assert isinstance(history, list)
    assert [h["to_state"] for h in history[:4]] == ["IDLE", "PREPARE", "MAINTENANCE", "BUSY"]
    grouped = as_json(admin, "workers", "groups", PLAIN_BOARD, "lab", "ci")
    assert isinstance(grouped, dict) and grouped["groups"] == ["ci", "lab"]
    assert as_json(admin, "workers", "groups", PLAIN_BOARD, "--none")["groups"] == []  # type: ignore[index]


def test_maintenance_after_the_job_returns_at_once_and_shows_the_drain(
    env: dict[str, str], farm: LiveFarm
) -> None:
    admin = {**env, "BORUTA_USER": "root", "BORUTA_ADMIN": "1"}
    created = as_json(env, "requests", "new", f"UUID={PLAIN_BOARD}")
    assert isinstance(created, dict) and created["state"] == "IN_PROGRESS"
    rid = created["id"]
    try:
        # --after-job read from the environment, as every option is.
        done = schedctl(
            {**admin, "BORUTA_WORKERS_MAINTENANCE_AFTER_JOB": "1"},
            "workers",
            "maintenance",
            PLAIN_BOARD,
            "-r",
            "new SD card",
        )
        assert "RUNNING" in done.stdout and "draining: new SD card" in done.stdout
        assert f"will go into maintenance when request {rid} ends" in done.stderr
        listed = schedctl(admin, "workers", "list").stdout
        assert "draining: new SD card" in listed
        shown = schedctl(admin, "workers", "show", PLAIN_BOARD).stdout
        assert f"into MAINTENANCE when request {rid} ends: new SD card" in shown
        as_shown = as_json(admin, "workers", "show", PLAIN_BOARD)
        assert isinstance(as_shown, dict) and as_shown["drain_reason"] == "new SD card"
        assert schedctl(env, "ssh", str(rid), "--", "true").returncode == 0
        schedctl(env, "requests", "close", str(rid))
        with farm.admin() as client:
            give_up = time.monotonic() + 60
            while client.get_worker(PLAIN_BOARD).state is not WorkerState.MAINTENANCE:
                assert time.monotonic() < give_up, "the board did not go into maintenance"
                time.sleep(0.05)
        shown = as_json(admin, "workers", "show", PLAIN_BOARD)
        assert isinstance(shown, dict)
        assert (shown["state"], shown["reason"], shown["drain_reason"]) == (
            "MAINTENANCE",
            "new SD card",
            "",
        )
    finally:
        schedctl(admin, "workers", "idle", PLAIN_BOARD, check=None)
        farm.wait_idle()


def test_stacks_hold_collateral_for_their_holder(env: dict[str, str]) -> None:
    admin = {**env, "BORUTA_USER": "root", "BORUTA_ADMIN": "1"}
    assert "collateral" in schedctl(admin, "stacks", "--help").stdout
    assert "schedctl stacks create bench1" in schedctl(admin, "stacks", "create", "--help").stdout
    made = as_json(admin, "stacks", "create", "bench1", CAMERA_BOARD, PLAIN_BOARD)
    assert isinstance(made, dict) and made["worker_uuids"] == [CAMERA_BOARD, PLAIN_BOARD]
    done = schedctl(admin, "stacks", "create", "bench2", PLAIN_BOARD, CAMERA_BOARD, check=None)
    assert done.returncode == exits.WRONG_STATE and "bench1" in done.stderr
    done = schedctl(admin, "stacks", "create", "bench1", PLAIN_BOARD, CAMERA_BOARD, check=None)
    assert done.returncode == exits.WRONG_STATE and "exists" in done.stderr
    done = schedctl(env, "stacks", "list", check=exits.DENIED)
    assert "only admins may manage stacks" in done.stderr
    created = as_json(env, "requests", "new", "camera=yes")
    assert isinstance(created, dict) and created["job"]["worker_uuid"] == CAMERA_BOARD
    rid = created["id"]
    # The plain board is IDLE, but the collateral of the camera board's request.
    bob = {**env, "BORUTA_USER": "bob"}
    done = schedctl(bob, "requests", "new", "board=rpi4", "--no-wait", check=exits.BUSY)
    shown = schedctl(admin, "workers", "show", PLAIN_BOARD).stdout
    assert f"{rid} (collateral)" in shown and "bench1" in shown
    assert f"{rid} (collateral)" in schedctl(admin, "workers", "list").stdout
    listed = as_json(admin, "stacks", "list")
    assert isinstance(listed, list) and [(s["name"], s["holder"]) for s in listed] == [
        ("bench1", rid)
    ]
    # Admins list what each running request holds: its board and its collateral.
    (held,) = as_json(admin, "allocations")  # type: ignore[misc]
    assert (held["request_id"], held["owner"], held["collateral"]) == (rid, "alice", [PLAIN_BOARD])
    assert [(b["worker_uuid"], b["stack"]) for b in held["boards"]] == [(CAMERA_BOARD, "bench1")]
    table = schedctl(admin, "allocations").stdout
    assert f"0={CAMERA_BOARD}@" in table and "[bench1]" in table and PLAIN_BOARD in table
    done = schedctl(env, "allocations", check=exits.DENIED)
    assert "only admins may list allocations" in done.stderr
    schedctl(env, "requests", "close", str(rid))
    assert schedctl(admin, "stacks", "delete", "-y", "bench1").stdout == "stack bench1 deleted\n"
    assert as_json(admin, "stacks", "list") == []
    schedctl(admin, "stacks", "delete", "-y", "bench1", check=exits.NOT_FOUND)


def test_boards_together_on_one_host_and_bad_groups(env: dict[str, str]) -> None:
    """Both boards are served by the farm's one dryad: together on one host."""
    pair = ["--profile", "cam:camera=yes", "--profile", "plain:board=rpi4"]
    created = as_json(env, "requests", "new", *pair, "--together", "host:cam,plain")
    assert isinstance(created, dict) and created["state"] == "IN_PROGRESS"
    assert created["together"] == [{"profiles": ["cam", "plain"], "placement": "HOST"}]
    shown = schedctl(env, "requests", "show", str(created["id"])).stdout
    assert "cam, plain on one host" in shown
    schedctl(env, "requests", "close", str(created["id"]))
    # A lease of both boards on one host for one command on the plain one, closed after.
    who = schedctl(env, "ssh", *pair, "--together", "host", "--board", "plain", "--", "id", "-un")
    assert who.stdout.strip() and PLAIN_BOARD in who.stderr
    done = schedctl(env, "requests", "new", *pair, "--together", "stack", check=exits.NO_SUCH_BOARD)
    assert "on one stack" in done.stderr
    done = schedctl(env, "requests", "new", *pair, "--together", "rack", check=exits.USAGE)
    assert "must start with host or stack" in done.stderr
    done = schedctl(env, "requests", "new", *pair, "--together", "host:cam", check=exits.INVALID)
    assert "only one profile" in done.stderr
    assert "--together" in schedctl(env, "--help").stdout


def test_watch_shows_changes_as_they_happen(env: dict[str, str]) -> None:
    created = as_json(env, "requests", "new", "board=rpi4")
    assert isinstance(created, dict)
    rid = created["id"]
    watch = subprocess.Popen(
        [*SCHEDCTL, "requests", "watch", "-o", "json", "--owner", "alice"],
        env=env,
        stdout=subprocess.PIPE,
    )
    try:
        assert watch.stdout is not None
        lines = LineReader(watch.stdout)
        # --current (the default) first shows the live request: the watch is in place.
        first = json.loads(lines.next_line())
        assert (first["id"], first["state"]) == (rid, "IN_PROGRESS")
        schedctl(env, "requests", "close", str(rid))
        second = json.loads(lines.next_line())
        assert (second["id"], second["state"], second["reason"]) == (
            rid,
            "DONE",
            "closed by its owner",
        )
    finally:
        watch.terminate()
        watch.wait(10)


def test_help_shows_environment_variables_and_completion_works(env: dict[str, str]) -> None:
    top = schedctl(env, "--help").stdout
    assert "BORUTA_SCHEDULER" in top and "75 busy" in top
    new = schedctl(env, "requests", "new", "--help").stdout
    assert "BORUTA_REQUESTS_NEW_PRIORITY" in new and "BORUTA_OUTPUT" in new
    assert "_SCHEDCTL_COMPLETE" in schedctl(env, "completion", "bash").stdout


def test_commands_load_ssh_only_when_they_open_it(env: dict[str, str]) -> None:
    """A command that only calls the scheduler loads no paramiko or cryptography (on a
    plaintext farm no certificate is read); one that runs on a board loads paramiko."""
    heavy = ("paramiko", "cryptography", "grpc")
    listed = loaded_after(schedctl_code("requests", "list"), heavy, env)
    assert {m.split(".")[0] for m in listed} == {"grpc"}, listed
    ran = loaded_after(schedctl_code("run", "--caps", "board=rpi4", "--", "true"), heavy, env)
    assert {m.split(".")[0] for m in ran} == set(heavy), ran


def test_contexts_from_the_config_file(env: dict[str, str], farm: LiveFarm, tmp_path: Path) -> None:
    config = tmp_path / "config" / "boruta" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'context = "lab"\n[contexts.lab]\nscheduler = "{farm.address}"\nuser = "carol"\n'
        '[contexts.nowhere]\nscheduler = "127.0.0.1:1"\n'
        '[profiles.cam]\ncaps = { camera = "yes" }\npriority = 2\n'
    )
    plain = {k: v for k, v in env.items() if k not in ("BORUTA_SCHEDULER", "BORUTA_USER")}
    assert json.loads(schedctl(plain, "status", "-o", "json").stdout)["user"] == "carol"
    schedctl(plain, "-c", "nowhere", "status", check=exits.UNAVAILABLE)
    done = schedctl(plain, "-c", "missing", "status", check=exits.INVALID)
    assert "no context 'missing'" in done.stderr
    ran = json.loads(schedctl(plain, "run", "--profile", "cam", "-o", "json", "--", "true").stdout)
    assert ran["worker_uuid"] == CAMERA_BOARD
    done = schedctl(plain, "run", "--profile", "nope", "--", "true", check=exits.INVALID)
    assert "no runner profile 'nope' (known: cam)" in done.stderr


def test_builtin_shell_reads_commands_from_stdin(env: dict[str, str]) -> None:
    done = subprocess.run(
        [*SCHEDCTL, "ssh", "--paramiko", "--caps", "board=rpi4"],
        env=env,
        input="echo from the shell\nexit 4\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 4, done.stderr
    assert "from the shell" in done.stdout


def test_workers_watch_yaml_and_deregister_errors(env: dict[str, str]) -> None:
    import yaml

    admin = {**env, "BORUTA_USER": "root", "BORUTA_ADMIN": "1"}
    watch = subprocess.Popen(
        [*SCHEDCTL, "workers", "watch", "-o", "json"], env=admin, stdout=subprocess.PIPE
    )
    try:
        assert watch.stdout is not None
        lines = LineReader(watch.stdout)
        current = [json.loads(lines.next_line()) for _ in BOARDS]
        assert sorted(c["worker"]["uuid"] for c in current) == sorted(BOARDS)
        # BUSY and MAINTENANCE often both come before the first is read.
        schedctl(admin, "workers", "maintenance", PLAIN_BOARD, "--no-wait")
        states = []
        while "MAINTENANCE" not in states:
            change = json.loads(lines.next_line())
            assert change["worker"]["uuid"] == PLAIN_BOARD and not change["removed"]
            states.append(change["worker"]["state"])
        assert states == ["BUSY", "MAINTENANCE"]
    finally:
        watch.terminate()
        watch.wait(10)
        schedctl(admin, "workers", "idle", PLAIN_BOARD)
    listed = yaml.safe_load(schedctl(admin, "workers", "list", "-o", "yaml").stdout)
    assert sorted(w["uuid"] for w in listed) == sorted(BOARDS)
    schedctl(admin, "workers", "deregister", "-y", "no-such-board", check=exits.NOT_FOUND)
    done = schedctl(admin, "workers", "deregister", "-y", CAMERA_BOARD, check=exits.WRONG_STATE)
    assert "IDLE" in done.stderr


# gRPC's C-core log line prefix: severity letter, MMDD, time.
CORE_LOG_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d", re.MULTILINE)


def test_grpc_core_log_lines_stay_off_schedctls_stderr(env: dict[str, str]) -> None:
    """With gRPC's API tracing on (it logs at INFO whenever grpc is used), schedctl's stderr
    still holds only its own lines, unless the user asks for gRPC's log."""
    traced = {k: v for k, v in env.items() if k != "GRPC_VERBOSITY"} | {"GRPC_TRACE": "api"}
    quiet = schedctl(traced, "run", "--caps", "board=rpi4", "--", "true")
    assert "job done" in quiet.stderr
    assert not CORE_LOG_LINE.search(quiet.stderr), quiet.stderr
    loud = schedctl(traced | {"GRPC_VERBOSITY": "INFO"}, "status")
    assert CORE_LOG_LINE.search(loud.stderr), loud.stderr
