"""A scheduler whose data directory is read-only, on a real file system of the test's own
(tmpfs): it refuses to start with one line that says why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from farm_kit import READY, SCHEDULER, SchedulerProcess
from system_kit import remount_read_only, tmpfs


@pytest.mark.parametrize("state", ["missing", "empty", "existing"])
def test_a_read_only_data_dir_is_one_line_and_exit_73(tmp_path: Path, state: str) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        data_dir = disk if state == "empty" else disk / "state"
        if state == "existing":
            process = SchedulerProcess(data_dir)
            process.log_path = tmp_path / "first.log"
            process.start()
            assert process.stop() == 0
        remount_read_only(disk)
        options = ["--plaintext", "yes", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
        proc = subprocess.Popen(
            [*SCHEDULER, *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        if proc.stdout.readline().startswith(READY):
            proc.kill()
            proc.wait()
            pytest.fail("the scheduler served from a read-only data directory")
        errors = proc.stderr.read()
        assert proc.wait() == 73, errors
        ours = [line for line in errors.splitlines() if line.startswith("boruta-scheduler:")]
        assert ours == [
            f"boruta-scheduler: cannot write the store's directory {data_dir}: "
            "Read-only file system"
        ], errors
        assert "Traceback" not in errors
