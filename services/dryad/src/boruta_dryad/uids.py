"""Uids for job users: taken in turn from a configured range, never the one just freed.

Every dryad of a host with the same range draws from one high-water mark (a file per
range, under flock), so a uid comes back only after the whole range has gone round, and
never while a process or account of its last owner remains. Group ids are the same
numbers.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Where the dryads of the host keep the last uid handed out of each range.
DEFAULT_MARK_DIR = "/var/lib/boruta-dryad"


class UidsExhausted(Exception):
    """Every uid of the range is in use."""


@dataclass(frozen=True, slots=True)
class UidRange:
    """first..last, both included."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not 1000 <= self.first <= self.last < 2**31 - 1:
            raise ValueError(f"not a usable uid range: {self.first}-{self.last}")

    @classmethod
    def parse(cls, text: str) -> UidRange:
        first, sep, last = text.partition("-")
        if not (sep and first.strip().isdigit() and last.strip().isdigit()):
            raise ValueError(f"a uid range is FIRST-LAST, e.g. 70000-99999, not {text!r}")
        return cls(int(first), int(last))

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.first <= uid <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def after(self, uid: int) -> Iterator[int]:
        """Every uid of the range once, starting after uid and wrapping round."""
        start = uid + 1 if uid in self else self.first
        for offset in range(len(self)):
            yield self.first + (start - self.first + offset) % len(self)


def uids_in_use() -> set[int]:
    """Uids that own a process (as real, effective, saved or file-system uid)."""
    used: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as status:
                for line in status:
                    if line.startswith("Uid:"):
                        used.update(int(u) for u in line.split()[1:])
                        break
        except (FileNotFoundError, ProcessLookupError):
            continue
    return used


def _taken(uid: int, running: set[int]) -> bool:
    if uid in running:
        return True
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        pass
    try:
        grp.getgrgid(uid)
        return True
    except KeyError:
        return False


class UidAllocator:
    """Hands out uids of a range in turn, shared by every dryad that uses the mark file."""

    def __init__(self, uid_range: UidRange, mark_dir: str = DEFAULT_MARK_DIR) -> None:
        self.range = uid_range
        # One mark per range: a dryad with another range must not move this one's.
        self.mark_file = Path(mark_dir) / f"job-uids-{uid_range}.mark"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.mark_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = os.open(self.mark_file.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock)

    def _mark(self) -> int:
        """The last uid handed out (before the range's first if none yet)."""
        try:
            return int(self.mark_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return self.range.first - 1

    def allocate(self) -> int:
        """The next free uid after the mark (blocking: call it from a thread)."""
        with self._locked():
            running = uids_in_use()
            for uid in self.range.after(self._mark()):
                if not _taken(uid, running):
                    tmp = self.mark_file.with_suffix(".tmp")
                    tmp.write_text(f"{uid}\n")
                    os.replace(tmp, self.mark_file)
                    return uid
        raise UidsExhausted(f"every uid of {self.range} is taken by an account or a process")
