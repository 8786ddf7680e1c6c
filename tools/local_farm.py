"""A real boruta farm on this machine: `make run`.

The scheduler (SQLite in .farm/), one dryad per board (simulated backend, real job users),
and a private OpenSSH server the boards' job users log in to. Needs root, like a dryad.
Stops cleanly on Ctrl-C, removing its job users; state survives for the next run.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from boruta.v1 import types_pb2, workers_pb2, workers_pb2_grpc
from boruta_dryad.devsshd import DevSshd

ADMIN = (("x-boruta-user", "admin"), ("x-boruta-role", "admin"))
DEFAULT_SCHEDULER = "127.0.0.1:50051"
BOARD_CAPS = [
    {"board": "rpi4", "camera": "yes"},
    {"board": "rpi4"},
    {"board": "odroid-xu4"},
    {"board": "rpi4", "camera": "yes", "wifi": "yes"},
]


def spawn(argv: list[str], ready: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=open(log, "a"),  # noqa: SIM115 - lives as long as the process
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(ready):
        proc.kill()
        sys.exit(f"{argv[2]} did not start; see {log}")
    return proc, line[len(ready) :].strip()


def dryad_config(scheduler: str, sshd: str, state: Path, index: int) -> str:
    caps = BOARD_CAPS[index % len(BOARD_CAPS)]
    caps_toml = ", ".join(f'{k} = "{v}"' for k, v in caps.items())
    return (
        f'scheduler = "{scheduler}"\nlisten = "127.0.0.1:0"\n'
        f'plaintext = true\nstate_dir = "{state}"\n\n'
        f'[[board]]\nname = "farm-{index}"\nuuid = "farm-{index}"\ncaps = {{ {caps_toml} }}\n'
        f'ssh_address = "{sshd}"\nuser_prefix = "farm{index}-job"\n'
        f'backend_options = {{ record_file = "{state}/board.record" }}\n'
    )


def wait_idle(channel: grpc.Channel, uuids: list[str], timeout: float = 120) -> None:
    workers = workers_pb2_grpc.WorkersStub(channel)
    deadline = time.monotonic() + timeout
    known: set[str] = set()
    while len(known) < len(uuids):  # dryads register by themselves
        if time.monotonic() > deadline:
            sys.exit("the dryads did not register; see .farm/*.log")
        reply = workers.ListWorkers(workers_pb2.ListWorkersRequest(), metadata=ADMIN)
        known = {w.uuid for w in reply.workers} & set(uuids)
        time.sleep(0.1)
    for uuid in uuids:
        workers.SetState(
            workers_pb2.SetStateRequest(
                worker_uuid=uuid, state=types_pb2.WORKER_STATE_IDLE, reason="local farm"
            ),
            metadata=ADMIN,
        )
    stream = workers.WatchWorkers(
        workers_pb2.WatchWorkersRequest(
            filter=workers_pb2.WorkerFilter(uuids=uuids), include_current=True
        ),
        metadata=ADMIN,
        timeout=timeout,
    )
    idle: set[str] = set()
    for event in stream:
        if event.worker.state == types_pb2.WORKER_STATE_IDLE:
            idle.add(event.worker.uuid)
        elif event.worker.state == types_pb2.WORKER_STATE_FAILED:
            sys.exit(f"board {event.worker.uuid} failed: {event.worker.reason}")
        if idle == set(uuids):
            stream.cancel()
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--boards",
        type=int,
        default=int(os.environ.get("BORUTA_BOARDS", "3")),
        help="number of boards [env: BORUTA_BOARDS]",
    )
    parser.add_argument(
        "--listen",
        default=os.environ.get("BORUTA_LISTEN", DEFAULT_SCHEDULER),
        help="scheduler address [env: BORUTA_LISTEN]",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("BORUTA_DATA_DIR", ".farm"),
        help="where the farm keeps its state [env: BORUTA_DATA_DIR]",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit(
            "make run starts dryads, which create Unix users, and an sshd: run it as root "
            "(sudo make run)"
        )
    data = Path(args.data_dir).absolute()
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    sshd = DevSshd(workdir=str(data / "sshd"))
    sshd.start()
    scheduler, address = spawn(
        [
            sys.executable,
            "-m",
            "boruta_scheduler.main",
            "--plaintext",
            "yes",
            "--listen",
            args.listen,
            "--data-dir",
            str(data / "scheduler"),
            "--public-host",
            "127.0.0.1",
        ],
        "boruta-scheduler listening on ",
        data / "scheduler.log",
    )
    dryads = []
    uuids = []
    for i in range(args.boards):
        state = data / f"dryad-{i}"
        config = data / f"dryad-{i}.toml"
        config.write_text(dryad_config(address, sshd.address, state, i))
        proc, _ = spawn(
            [sys.executable, "-m", "boruta_dryad.main", "--config", str(config)],
            "boruta-dryad listening on ",
            data / f"dryad-{i}.log",
        )
        dryads.append(proc)
        uuids.append(f"farm-{i}")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with grpc.insecure_channel(address) as channel:
            wait_idle(channel, uuids)
        boards = "\n".join(
            f"    farm-{i}  "
            + " ".join(f"{k}={v}" for k, v in BOARD_CAPS[i % len(BOARD_CAPS)].items())
            for i in range(args.boards)
        )
        where = "" if address == DEFAULT_SCHEDULER else f" -s {address}"
        print(
            f"\nboruta farm is up: scheduler on {address}, {args.boards} boards IDLE "
            f"(state and logs in {args.data_dir}/)\n{boards}\n\n"
            "Try, in another terminal:\n"
            f"    .venv/bin/schedctl{where} ssh --caps board=rpi4,camera=yes   "
            "# a shell on any rpi4 with a camera\n"
            f"    .venv/bin/schedctl{where} run -- uname -a                    "
            "# one command on any board\n"
            f"    .venv/bin/schedctl{where} status                             "
            "# the farm at a glance\n\n"
            "Ctrl-C stops the farm.",
            flush=True,
        )
        stop.wait()
    finally:
        print("stopping the farm ...", flush=True)
        for proc in [*dryads, scheduler]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*dryads, scheduler]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        sshd.stop()


if __name__ == "__main__":
    main()
