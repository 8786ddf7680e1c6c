"""The HA demo farm (`make run-ha`) as the README's reader meets it: two schedulers on a
throwaway PostgreSQL cluster, one leading by its health; kill -9 the leader it names, the
other takes over and the killed one comes back as its standby, a request gets a board
before and after; stopped, it leaves no process, cluster or job user behind (and a cluster
that a killed farm left is removed when the next one starts)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from boruta.tls import TlsFiles, channel_credentials
from demo_farm_kit import DemoFarm, demo_farm
from grpc_health.v1 import health_pb2, health_pb2_grpc
from metrics_kit import poll, total

SCHEDCTL = [sys.executable, "-m", "schedctl.main"]
ROW = re.compile(r"^    ([AB])  (\S+)  tokens (\S+)  pid (\d+)  health (\w+) \((leads|standby)\)$")
KILL = re.compile(r"^    (?:sudo )?kill -9 (\d+)$")
CLUSTER = "... starting PostgreSQL for both schedulers in "


@dataclass(frozen=True)
class Row:
    """A scheduler as the farm's message lists it."""

    name: str
    address: str
    pid: int
    health: str


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A directory the postgres user may pass through (pytest's own is private to root),
    so that the farm keeps its cluster in its state directory, as `make run-ha` does."""
    directory = Path(tempfile.mkdtemp(prefix="boruta-ha-demo-"))
    directory.chmod(0o711)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def health(address: str, tls: TlsFiles) -> str:
    with grpc.secure_channel(address, channel_credentials(tls)) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def metrics_addresses(farm: DemoFarm) -> tuple[list[str], ssl.SSLContext]:
    """The schedulers' metrics ports from the message's curl lines (A's, then B's), and the
    admin's TLS context they name."""
    lines = [shlex.split(line) for line in farm.output if line.strip().startswith("curl ")]
    argv = lines[0]
    ca, cert, key = (argv[argv.index(flag) + 1] for flag in ("--cacert", "--cert", "--key"))
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    return [a[-1].removeprefix("https://").removesuffix("/metrics") for a in lines], context


def leads_by_metrics(address: str, context: ssl.SSLContext, leads: bool) -> None:
    """Until the scheduler's boruta_leader gauge says it leads (1) or stands by (0)."""
    want = 1 if leads else 0
    poll(
        address,
        lambda s: total(s, "boruta_leader") == want,
        f"boruta_leader {want}",
        context=context,
    )


def runs_a_job(farm: DemoFarm, home: Path) -> None:
    """The README's example: one command on any board, through whichever scheduler leads."""
    ran = subprocess.run(
        [*SCHEDCTL, "run", "--", "id", "-un"], env=farm.env(home), capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(farm.name) and "-job" in ran.stdout, ran.stdout


def processes_naming(text: str) -> list[str]:
    """Command lines of running processes that mention text (a path of the farm's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:  # gone meanwhile
                continue
            if text in line:
                found.append(f"{entry.name}: {line}")
    return found


def test_kill_9_the_leader_the_ha_demo_farm_names_and_the_other_takes_over(
    state_dir: Path,
) -> None:
    # What a farm killed with -9 leaves: a cluster whose server is gone.
    ended = subprocess.Popen(["true"])
    ended.wait()
    stale = state_dir / "farm" / "boruta-pg-stale"
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "postmaster.pid").write_text(f"{ended.pid}\n")
    with demo_farm(state_dir, ha=True) as farm:
        assert not stale.exists()
        rows = [Row(m[1], m[2], int(m[4]), m[5]) for m in map(ROW.match, farm.output) if m]
        assert [(r.name, r.health) for r in rows] == [("A", "SERVING"), ("B", "NOT_SERVING")]
        leader, standby = rows
        kill = [int(m[1]) for m in map(KILL.match, farm.output) if m]
        assert kill == [leader.pid]
        cluster = Path(
            next(x for x in farm.output if x.startswith(CLUSTER))[len(CLUSTER) :].strip()
        )
        # Kept in the farm's state directory, so that nothing of it is elsewhere.
        assert cluster.parent == farm.data_dir and (cluster / "data").is_dir()
        admin = TlsFiles(
            *(str(farm.data_dir / "client" / name) for name in ("ca.pem", "admin.pem", "admin.key"))
        )
        runs_a_job(farm, state_dir)
        (metrics_a, metrics_b), context = metrics_addresses(farm)
        leads_by_metrics(metrics_a, context, leads=True)
        leads_by_metrics(metrics_b, context, leads=False)

        os.kill(leader.pid, 9)
        took = farm.read_until(f"*** scheduler B ({standby.address}, pid {standby.pid}) leads")
        assert took.rstrip().endswith("as epoch 2")
        assert health(standby.address, admin) == "SERVING"
        back = farm.read_until("*** scheduler A is back on ")
        assert back.startswith(f"*** scheduler A is back on {leader.address}, pid ")
        # Restarted, as systemd would, on the same ports: now the standby.
        assert health(leader.address, admin) == "NOT_SERVING"
        # Both metrics ports say so too; A's came back on the same port.
        leads_by_metrics(metrics_b, context, leads=True)
        leads_by_metrics(metrics_a, context, leads=False)
        farm.wait_idle()
        runs_a_job(farm, state_dir)

    said = "".join(farm.output)
    assert "*** scheduler A (pid" in said and "was killed by SIGKILL" in said
    assert "stopping the farm ..." in said
    assert farm.leftover_users == []
    assert not cluster.exists()
    assert processes_naming(str(farm.data_dir)) == []
    assert processes_naming(str(cluster)) == []
