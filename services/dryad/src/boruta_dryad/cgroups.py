"""A cgroup (v2) per job: every process of a job's logins lives in it, and killing the
cgroup ends them all at once, however fast they fork.

The job cgroups of a dryad live in a subtree of the dryad's own cgroup named after the
dryad (``boruta-dryad-<id>``), so two dryads of one host never touch each other's. The
host may offer cgroup v2 alone at /sys/fs/cgroup, beside v1 ("hybrid", at
/sys/fs/cgroup/unified), or not at all; under systemd the dryad's unit must delegate its
cgroup (Delegate=yes). No controller is enabled: membership and cgroup.kill are all a job
cgroup is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# How long a killed cgroup may take to empty before the kill is sent again.
_EMPTY_POLLS = 200
_POLL_SECONDS = 0.01


class CgroupError(Exception):
    """A job cgroup could not be made, killed or removed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class CgroupHost:
    """What the host offers: where cgroup v2 is mounted and the dryad's place in it."""

    mount: Path | None
    own: str
    systemd: bool
    # cgroup v1 hierarchies mounted too (v2 then usually at /sys/fs/cgroup/unified).
    hybrid: bool = False

    @property
    def kind(self) -> str:
        if self.mount is None:
            return "none"
        return "hybrid" if self.hybrid else "unified"

    def describe(self) -> str:
        if self.mount is None:
            return "no cgroup v2"
        where = f"cgroup v2 at {self.mount} ({self.kind})"
        return where + (", under systemd" if self.systemd else "")


def detect(
    mountinfo: str = "/proc/self/mountinfo", cgroup_file: str = "/proc/self/cgroup"
) -> CgroupHost:
    """Find the cgroup v2 mount and this process's cgroup in it."""
    systemd = os.path.isdir("/run/systemd/system")
    own = ""
    with contextlib.suppress(OSError), open(cgroup_file) as f:
        for line in f:
            if line.startswith("0::"):
                own = line[3:].strip()
    mounts: list[Path] = []
    hybrid = False
    with contextlib.suppress(OSError), open(mountinfo) as f:
        for line in f:
            fields = line.split()
            # Optional fields end at "-"; the file system type follows it.
            fstype = fields[fields.index("-") + 1]
            if fstype == "cgroup2":
                mounts.append(Path(fields[4]))
            hybrid = hybrid or fstype == "cgroup"
    if not own:
        return CgroupHost(None, "", systemd, hybrid)
    for mount in mounts:
        if (mount / own.lstrip("/")).is_dir():
            return CgroupHost(mount, own, systemd, hybrid)
    return CgroupHost(None, own, systemd, hybrid)


def _populated(cgroup: Path) -> bool:
    for line in (cgroup / "cgroup.events").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "populated":
            return value.strip() != "0"
    return True


class JobCgroups:
    """The job cgroups of one dryad: one per job user, named after it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, host: CgroupHost, dryad_id: str) -> JobCgroups:
        """The dryad's subtree, made if needed; CgroupError if the host cannot have one
        with cgroup.kill (no cgroup v2, read-only, or a kernel older than 5.14)."""
        if host.mount is None:
            raise CgroupError("the host has no cgroup v2 hierarchy this process is in")
        root = host.mount / host.own.lstrip("/") / f"boruta-dryad-{dryad_id}"
        try:
            root.mkdir(exist_ok=True)
        except OSError as exc:
            raise CgroupError(f"cannot make {root}: {exc.strerror}") from None
        if not (root / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                root.rmdir()
            raise CgroupError(f"{root} has no cgroup.kill (Linux 5.14 or later needed)")
        return cls(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def create(self, name: str) -> Path:
        path = self.path(name)
        try:
            path.mkdir()
        except FileExistsError:
            # Left from a crash: it may hold processes, so it is no fresh cgroup.
            raise CgroupError(f"job cgroup {path} exists already") from None
        except OSError as exc:
            raise CgroupError(f"cannot make job cgroup {path}: {exc.strerror}") from None
        return path

    def leftovers(self) -> list[str]:
        """Names of the job cgroups in the subtree (e.g. left by a crash)."""
        try:
            return sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        except FileNotFoundError:
            return []

    async def kill(self, name: str) -> None:
        """Kill every process in the job's cgroup and wait until it is empty."""
        path = self.path(name)
        for _ in range(3):
            try:
                (path / "cgroup.kill").write_text("1")
            except FileNotFoundError:
                return
            for _ in range(_EMPTY_POLLS):
                try:
                    if not _populated(path):
                        return
                except FileNotFoundError:
                    return
                await asyncio.sleep(_POLL_SECONDS)
        raise CgroupError(f"job cgroup {path} still holds processes after being killed")

    def remove(self, name: str) -> bool:
        """Remove the job's cgroup; False if a process joined it since it was killed."""
        try:
            self.path(name).rmdir()
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return False
            raise CgroupError(f"cannot remove job cgroup {self.path(name)}: {exc}") from None
        return True

    def close(self) -> None:
        """Remove the dryad's subtree if no job cgroup is left in it."""
        with contextlib.suppress(OSError):
            self.root.rmdir()
