"""The demo farm (`make run`) as the README's reader meets it: it says what it is doing
while it starts, and a token an admin issues there works on its token port."""

from __future__ import annotations

import json
import shlex
import ssl
import subprocess
import sys
from pathlib import Path

from dashboard_kit import get
from demo_farm_kit import DemoFarm
from metrics_kit import https, poll, total

SCHEDCTL = [sys.executable, "-m", "schedctl.main"]


def schedctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SCHEDCTL, *args], env=env, capture_output=True, text=True)


def test_the_demo_farm_shows_each_step_while_it_starts(demo_farm: DemoFarm) -> None:
    steps = [line for line in demo_farm.output if line.startswith("... ")]
    assert [s.split(" ")[1:4] for s in steps] == [
        ["starting", "sshd", "for"],
        ["starting", "the", "relay"],
        ["starting", "the", "scheduler"],
        ["starting", "3", "dryads,"],
        ["putting", "the", "boards"],
    ]
    assert f"    {demo_farm.name}-0  board=rpi4 camera=yes\n" in demo_farm.output


def test_a_token_issued_on_the_demo_farm_works_on_its_token_port(
    demo_farm: DemoFarm, tmp_path: Path
) -> None:
    env = demo_farm.env(tmp_path)
    issued = schedctl(env, "-c", "farm-admin", "tokens", "issue", "ci-bot", "-g", "ci")
    assert issued.returncode == 0, issued.stderr
    secret = issued.stdout.splitlines()[-1]
    # As the farm's message says: BORUTA_TOKEN and the farm-token context.
    with_token = {**env, "BORUTA_TOKEN": secret}
    status = schedctl(with_token, "-c", "farm-token", "status")
    assert status.returncode == 0, status.stderr
    # The token's user, not the local login the client runs under.
    assert status.stdout.startswith(f"scheduler {demo_farm.token_address}, you are ci-bot\n")
    made = schedctl(with_token, "-c", "farm-token", "requests", "new", "board=rpi4", "-o", "json")
    assert made.returncode == 0, made.stderr
    request = json.loads(made.stdout)
    assert (request["owner"], request["owner_groups"]) == ("ci-bot", ["ci"])
    closed = schedctl(with_token, "-c", "farm-token", "requests", "close", str(request["id"]))
    assert closed.returncode == 0, closed.stderr
    # Without the token, the token port says what is missing rather than "cannot reach".
    bare = schedctl(env, "-c", "farm-token", "status")
    assert bare.returncode == 69
    assert "requires TLS (it is a token port), and this client called it in plaintext" in (
        bare.stderr
    )


def test_the_metrics_scrape_the_demo_farm_shows_works(demo_farm: DemoFarm) -> None:
    """The curl line of the farm's message, done in Python with the same files: the
    admin's certificate reads the metrics, and they show every board IDLE (once the
    other tests' jobs on this farm have ended and their boards are prepared again)."""
    line = next(line for line in demo_farm.output if line.strip().startswith("curl "))
    argv = shlex.split(line)
    ca, cert, key = (argv[argv.index(flag) + 1] for flag in ("--cacert", "--cert", "--key"))
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    address = argv[-1].removeprefix("https://").removesuffix("/metrics")
    found = poll(
        address,
        lambda s: total(s, "boruta_boards", state="IDLE") == 3,
        "every board IDLE",
        context=context,
    )
    assert total(found, "boruta_boards") == 3
    assert total(found, "boruta_leader") == 1


def test_the_dashboard_login_the_demo_farm_shows_works(demo_farm: DemoFarm, tmp_path: Path) -> None:
    """As the farm's message says: an admin's token from schedctl, pasted into the login
    form at the printed address, opens the dashboard, which shows the farm's boards."""
    command = next(line for line in demo_farm.output if "tokens issue dashboard" in line)
    login = next(line.strip() for line in demo_farm.output if line.strip().endswith("/login"))
    argv = shlex.split(command.split("|")[0])[1:]  # without .venv/bin/schedctl and the pipe
    issued = schedctl(demo_farm.env(tmp_path), *argv)
    assert issued.returncode == 0, issued.stderr
    secret = issued.stdout.splitlines()[-1]
    ca = next(
        shlex.split(line)[shlex.split(line).index("--cacert") + 1]
        for line in demo_farm.output
        if line.strip().startswith("curl ")
    )
    address = login.removeprefix("https://").removesuffix("/login")
    reply = get(address, "/login", https(ca), form={"token": secret})
    assert reply.status == 303, reply.body
    cookie = reply.headers["Set-Cookie"].split(";")[0]
    boards = get(address, "/boards", https(ca), {"Cookie": cookie})
    assert boards.status == 200
    assert "dashboard (admin)" in boards.body
    assert f"{demo_farm.name}-0" in boards.body
