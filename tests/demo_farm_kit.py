"""The demo farm as `make run` (or, with ha=True, `make run-ha`) starts it
(tools/local_farm.py), for tests that follow the README: on free ports, under unique board
and job user names, in a temporary directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from boruta_client import Client, WorkerState
from system_kit import remove_users, require_sshd, unique_prefix, users_with_prefix

ROOT = Path(__file__).resolve().parent.parent
UP = "boruta farm is up: "
CONFIG_LINE = "export BORUTA_CONFIG="
TOKENS_LINE = "Bearer tokens (for CI) work on the token port "


class DemoFarm:
    """A running demo farm: its output so far, the config file it wrote, its board names."""

    def __init__(
        self, data_dir: Path, name: str, output: list[str], proc: subprocess.Popen[str]
    ) -> None:
        self.data_dir = data_dir
        self.name = name
        self.output = output
        self.proc = proc
        # Job users the farm left behind when it stopped: it should leave none.
        self.leftover_users: list[str] = []
        self.config = next(
            line.strip().removeprefix(CONFIG_LINE) for line in output if CONFIG_LINE in line
        )
        self.token_address = next(
            line.removeprefix(TOKENS_LINE).strip().rstrip(":")
            for line in output
            if line.startswith(TOKENS_LINE)
        )

    def read_until(self, prefix: str) -> str:
        """The farm's next line that starts with prefix (what it says while it runs)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"the farm ended before saying {prefix!r}:\n{''.join(self.output)}")

    def wait_idle(self) -> None:
        """Until every board is IDLE again, as the docs show the farm: a board given back
        by the previous test is being wiped for a moment."""
        with Client(config=self.config, context="farm-admin") as admin:
            uuids = {w.uuid for w in admin.list_workers()}
            states: dict[str, WorkerState] = {}
            with admin.watch_workers(uuids=uuids, include_current=True) as watch:
                for change in watch:
                    states[change.worker.uuid] = change.worker.state
                    if states.keys() == uuids and set(states.values()) == {WorkerState.IDLE}:
                        return
        raise AssertionError(f"the watch ended before every board was IDLE: {states}")

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """The environment of a user who followed the README: BORUTA_CONFIG set, nothing
        else of boruta's, and their own home."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BORUTA_")}
        return {**env, "BORUTA_CONFIG": self.config, "HOME": str(home), **extra}


@contextmanager
def demo_farm(tmp: Path, boards: int = 3, *, ha: bool = False) -> Iterator[DemoFarm]:
    """Start tools/local_farm.py (with --ha: make run-ha) and wait for its "farm is up"
    message; stop it with SIGTERM (as Ctrl-C) afterwards and check it stopped cleanly."""
    require_sshd()
    name = unique_prefix().rstrip("-")
    argv = [sys.executable, str(ROOT / "tools" / "local_farm.py")]
    argv += ["--listen", "127.0.0.1:0", "--listen-tokens", "127.0.0.1:0"]
    argv += ["--metrics-listen", "127.0.0.1:0"]
    argv += ["--name", name, "--boards", str(boards), "--data-dir", str(tmp / "farm")]
    if ha:
        argv += ["--ha", "--second-listen", "127.0.0.1:0", "--second-listen-tokens", "127.0.0.1:0"]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
    )
    assert proc.stdout is not None
    output: list[str] = []
    farm: DemoFarm | None = None
    try:
        for line in proc.stdout:
            output.append(line)
            if line.startswith(UP):
                break
        else:
            raise AssertionError(f"the demo farm did not start:\n{''.join(output)}")
        # The rest of the message, to the line that says how to stop it.
        for line in proc.stdout:
            output.append(line)
            if line.startswith("Ctrl-C stops the farm"):
                break
        farm = DemoFarm(tmp / "farm", name, output, proc)
        yield farm
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        proc.wait()
        if farm is not None:
            farm.output.append(rest)
            farm.leftover_users = users_with_prefix(name)
        remove_users(name)
    assert proc.returncode == 0, f"the demo farm did not stop cleanly:\n{''.join(output)}{rest}"
