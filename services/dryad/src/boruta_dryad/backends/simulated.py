"""A backend for hosts without a MuxPi: records what it was told and can be made to fail.

Options (backend_options in the dryad config):
- record_file: append one JSON line per action, for tests and demos to read;
- fail_file: while this file exists, every action and check fails with its content.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from boruta_dryad.backends.base import BackendError


class SimulatedBackend:
    """Implements BoardBackend without hardware."""

    def __init__(self, record_file: str = "", fail_file: str = "") -> None:
        self.record_file = Path(record_file) if record_file else None
        self.fail_file = Path(fail_file) if fail_file else None
        self.actions: list[dict[str, str]] = []

    def _failure(self) -> str | None:
        if self.fail_file is not None and self.fail_file.exists():
            return self.fail_file.read_text().strip() or "simulated failure"
        return None

    def _record(self, action: str, **details: str) -> None:
        entry = {"time": f"{time.time():.3f}", "action": action, **details}
        self.actions.append(entry)
        if self.record_file is not None:
            self.record_file.parent.mkdir(parents=True, exist_ok=True)
            with self.record_file.open("a") as f:
                f.write(json.dumps(entry) + "\n")

    async def prepare(self) -> None:
        if (failure := self._failure()) is not None:
            raise BackendError(failure)
        self._record("power-tick")

    async def maintenance(self, message: str) -> None:
        if (failure := self._failure()) is not None:
            raise BackendError(failure)
        self._record("maintenance", message=message)

    async def check(self) -> str:
        if (failure := self._failure()) is not None:
            raise BackendError(failure)
        return "simulated board responds"
