"""Uids of job users: in turn from a range, shared by the dryads of a host, never one
that an account, a group or a process still has."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from boruta_dryad import remains
from boruta_dryad.uids import UidAllocator, UidRange, UidsExhausted
from system_kit import require_root


def test_a_range_is_first_to_last_and_goes_round() -> None:
    uids = UidRange.parse("70000-70002")
    assert (len(uids), 70000 in uids, 70003 in uids, str(uids)) == (3, True, False, "70000-70002")
    assert list(uids.after(70001)) == [70002, 70000, 70001]
    assert list(uids.after(5)) == [70000, 70001, 70002]
    for bad in ("70000", "9-10", "70002-70000", "a-b", "0-99999"):
        with pytest.raises(ValueError):
            UidRange.parse(bad)


def test_uids_come_in_turn_and_are_shared_through_the_mark(tmp_path: Path) -> None:
    uids = UidRange(2_000_000_000, 2_000_000_002)
    first, second = UidAllocator(uids, str(tmp_path)), UidAllocator(uids, str(tmp_path))
    assert [first.allocate(), second.allocate(), first.allocate()] == [
        2000000000,
        2000000001,
        2000000002,
    ]
    # Round again, with another dryad's mark as the start.
    assert second.allocate() == 2000000000
    assert first.mark_file.read_text() == "2000000000\n"
    # A dryad with another range keeps a mark of its own and moves nobody else's.
    other = UidAllocator(UidRange(2_000_000_010, 2_000_000_019), str(tmp_path))
    assert other.allocate() == 2_000_000_010
    assert first.allocate() == 2_000_000_001


def test_uids_of_accounts_groups_and_processes_are_skipped(tmp_path: Path) -> None:
    require_root()
    # 65534 is nobody (and nogroup) on every Debian system.
    allocator = UidAllocator(UidRange(65533, 65535), str(tmp_path))
    assert [allocator.allocate(), allocator.allocate()] == [65533, 65535]
    sleeper = subprocess.Popen(["sleep", "600"], user=65533, group=65533, extra_groups=[])
    try:
        assert allocator.allocate() == 65535
    finally:
        sleeper.kill()
        sleeper.wait()
    assert allocator.allocate() == 65533


def test_a_full_range_says_so(tmp_path: Path) -> None:
    with pytest.raises(UidsExhausted, match="65534-65534"):
        UidAllocator(UidRange(65534, 65534), str(tmp_path)).allocate()


def test_files_are_looked_for_only_where_the_uid_could_write(tmp_path: Path) -> None:
    """A job user can make files only in directories writable by group or others (or its
    own): the sweep walks those and skips other users' private trees, however big."""
    uid = 65533
    shared = tmp_path / "shared"
    private = tmp_path / "private"
    for directory, mode in ((shared, 0o1777), (private, 0o755)):
        directory.mkdir()
        directory.chmod(mode)
        leftover = directory / "left"
        leftover.write_text("x")
        os.chown(leftover, uid, uid)
    remains.remove_files_of(uid, (str(tmp_path),))
    assert not (shared / "left").exists()
    # Only root could have put it there; walking such trees is what made sweeps slow.
    assert (private / "left").exists()
