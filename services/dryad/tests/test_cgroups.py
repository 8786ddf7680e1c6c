"""How the dryad finds what cgroups a host offers, and its job cgroups on this host."""

from __future__ import annotations

import subprocess
import uuid as uuidlib
from pathlib import Path

import pytest
from boruta_dryad.cgroups import CgroupError, CgroupHost, JobCgroups, detect
from system_kit import require_root


def mountinfo_line(mount: Path, fstype: str) -> str:
    return f"26 25 0:23 / {mount} rw,nosuid shared:9 - {fstype} {fstype} rw\n"


@pytest.mark.parametrize(
    ("v2_at", "with_v1", "own", "kind"),
    [
        ("sys/fs/cgroup/unified", True, "/", "hybrid"),
        ("sys/fs/cgroup", False, "/system.slice/dryad.service", "unified"),
        ("", True, "", "none"),
    ],
)
def test_what_the_host_offers_is_read_from_its_mounts(
    tmp_path: Path, v2_at: str, with_v1: bool, own: str, kind: str
) -> None:
    mountinfo = ""
    if with_v1:
        mountinfo += mountinfo_line(tmp_path / "sys/fs/cgroup/memory", "cgroup")
    if v2_at:
        mount = tmp_path / v2_at
        (mount / own.lstrip("/")).mkdir(parents=True)
        mountinfo += mountinfo_line(mount, "cgroup2")
    (tmp_path / "mountinfo").write_text(mountinfo)
    (tmp_path / "cgroup").write_text("4:memory:/x\n" + (f"0::{own}\n" if own else ""))
    host = detect(str(tmp_path / "mountinfo"), str(tmp_path / "cgroup"))
    assert (host.kind, host.own) == (kind, own)
    assert host.mount == (tmp_path / v2_at if v2_at else None)


def test_a_host_without_cgroup_v2_has_no_job_cgroups() -> None:
    with pytest.raises(CgroupError, match="no cgroup v2"):
        JobCgroups.open(CgroupHost(None, "", False), "x")


async def test_job_cgroups_of_a_dryad_here_kill_what_they_hold() -> None:
    require_root()
    host = detect()
    assert host.kind == "hybrid" or host.kind == "unified", host.describe()
    cgroups = JobCgroups.open(host, uuidlib.uuid4().hex)
    try:
        name = "job"
        path = cgroups.create(name)
        with pytest.raises(CgroupError, match="exists"):
            cgroups.create(name)
        sleeper = subprocess.Popen(["sleep", "600"])
        (path / "cgroup.procs").write_text(str(sleeper.pid))
        assert not cgroups.remove(name)  # busy
        assert cgroups.leftovers() == [name]
        await cgroups.kill(name)
        assert sleeper.wait() == -9
        assert cgroups.remove(name)
        assert cgroups.leftovers() == []
    finally:
        for name in cgroups.leftovers():
            cgroups.path(name).rmdir()
        cgroups.close()
    assert not cgroups.root.exists()
