"""Reading a child process's output line by line, with a failure instead of a hung suite."""

from __future__ import annotations

import os
import select
import time
from typing import IO, Any

_CHUNK = 65536


class LineReader:
    """The lines written to a pipe, each awaited for at most a given time.

    It reads the pipe's descriptor itself and keeps what came after a line. select() sees
    only the descriptor: a line that a buffered file object (readline) had already read
    along with the line before would never wake it, and the wait would fail on a line
    that had come.
    """

    def __init__(self, pipe: IO[Any]) -> None:
        self._fd = pipe.fileno()
        self._pending = bytearray()

    def next_line(self, timeout: float = 60) -> str:
        """The next whole line, without its newline; fails if none is complete within
        timeout seconds or the pipe ends first."""
        give_up = time.monotonic() + timeout
        while (end := self._pending.find(b"\n")) < 0:
            left = max(0.0, give_up - time.monotonic())
            ready, _, _ = select.select([self._fd], [], [], left)
            assert ready, f"no whole line within {timeout:g} s; so far {bytes(self._pending)!r}"
            chunk = os.read(self._fd, _CHUNK)
            assert chunk, f"the pipe ended before a whole line; so far {bytes(self._pending)!r}"
            self._pending += chunk
        line = self._pending[:end].decode()
        del self._pending[: end + 1]
        return line
