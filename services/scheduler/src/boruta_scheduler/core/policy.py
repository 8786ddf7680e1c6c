"""Tunable rules of the core: defaults, timeouts, prolong limits and input size limits."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from boruta import address as address_rules

from boruta_scheduler.core.health import KEPT
from boruta_scheduler.errors import InvalidArgument, PermissionDenied
from boruta_scheduler.types import UUID_CAP

HOUR = 3600.0
MIB = 1 << 20

# The last second the API can carry (protobuf's Timestamp ends with 9999-12-31).
LATEST_TIME = 253_402_300_799.0
MIN_PRIORITY = 1
MAX_PRIORITY = 16

_NAME = re.compile(r"[A-Za-z0-9._:/-]+")
_UUID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_PROFILE_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class Policy:
    """Scheduling rules; every duration is in seconds."""

    default_priority: int = 8
    default_deadline: float = 24 * HOUR
    job_timeout: float = 1 * HOUR
    prolong_step: float = 1 * HOUR
    # The shortest job timeout a request may ask for (see job_timeouts).
    min_job_timeout: float = 10.0
    max_prolongs: int = 1000
    max_job_duration: float = 24 * HOUR
    heartbeat_timeout: float = 30.0
    # Check a worker's health at each Prepare (so after every job and before it goes into
    # service: the dryad runs the checks within the Prepare call), and with a Healthcheck
    # call every healthcheck_interval while it is IDLE (0: never).
    healthcheck_before_prepare: bool = True
    healthcheck_interval: float = 300.0
    # Quarantine (core/health.py): a worker that fails quarantine_failures times within
    # quarantine_window goes into MAINTENANCE until an admin puts it back (0: never).
    quarantine_failures: int = 3
    quarantine_window: float = 1 * HOUR
    max_caps: int = 32
    max_cap_key_len: int = 64
    max_cap_value_len: int = 256
    max_groups: int = 32
    max_group_len: int = 64
    max_reason_len: int = 1024
    # Boards one request may ask for (its profiles), and how long a profile's name may be.
    max_profiles: int = 16
    max_profile_name_len: int = 64
    # Workers one stack may name.
    max_stack_workers: int = 64
    # Who may use the most important priorities (Boruta's TODO): users may ask for
    # max_priority or less important, members of a group in group_max_priority for that
    # group's value. Admins may use any priority.
    max_priority: int = MIN_PRIORITY
    # One user's share of the queue, so that a runaway script cannot fill memory: a number
    # of waiting requests, and the bytes of caps they carry in all (keys and values, UTF-8).
    max_waiting_per_user: int = 100_000
    max_waiting_caps_bytes_per_user: int = 16 * MIB
    # Different sets of caps (or of profiles) among one user's waiting requests: a freed
    # worker looks at each set that shares a cap with it, so without a bound one user could
    # make every freed worker walk all their requests.
    max_waiting_cap_sets_per_user: int = 1_000
    group_max_priority: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not MIN_PRIORITY <= self.default_priority <= MAX_PRIORITY:
            raise ValueError("default_priority must be between 1 and 16")
        for name in (
            "default_deadline",
            "job_timeout",
            "prolong_step",
            "min_job_timeout",
            "heartbeat_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in (
            "max_waiting_per_user",
            "max_waiting_caps_bytes_per_user",
            "max_waiting_cap_sets_per_user",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in (
            "max_caps",
            "max_cap_key_len",
            "max_cap_value_len",
            "max_groups",
            "max_group_len",
            "max_reason_len",
            "max_profiles",
            "max_profile_name_len",
            "max_stack_workers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("healthcheck_interval", "quarantine_failures", "quarantine_window"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.quarantine_failures > KEPT:
            raise ValueError(
                f"quarantine_failures must be at most {KEPT}, the failures kept per board "
                "(0 turns quarantine off)"
            )
        if self.max_job_duration < self.job_timeout:
            raise ValueError("max_job_duration must be at least job_timeout")
        for name, value in [("max_priority", self.max_priority), *self.group_max_priority.items()]:
            if not MIN_PRIORITY <= value <= MAX_PRIORITY:
                raise ValueError(f"the priority limit of {name} must be between 1 and 16")

    def check_job_timeout(self, asked: float) -> float:
        """The job timeout a request keeps: 0 (none asked), or what it asked (at least
        min_job_timeout) cut down to the longest the policy gives, so it is stored bounded."""
        if asked != 0 and not asked >= self.min_job_timeout:
            raise InvalidArgument(
                f"job_timeout must be at least {self.min_job_timeout:g} s, got {asked:g} s; "
                "leave it unset for the scheduler's default"
            )
        return min(asked, max(self.job_timeout, self.prolong_step))

    def job_timeouts(self, asked: float) -> tuple[float, float]:
        """(first timeout, prolong step) of a job whose request asked for this job timeout:
        a request may shorten the leash (so that a dead client's board comes free soon),
        never lengthen it."""
        if asked == 0:
            return self.job_timeout, self.prolong_step
        return min(asked, self.job_timeout), min(asked, self.prolong_step)

    def best_priority_for(self, groups: Iterable[str]) -> int:
        """The most important priority members of these groups may use."""
        limits = [self.group_max_priority[g] for g in groups if g in self.group_max_priority]
        return min([self.max_priority, *limits])

    def check_allowed_priority(self, priority: int, groups: frozenset[str]) -> None:
        best = self.best_priority_for(groups)
        if priority < best:
            raise PermissionDenied(
                f"priority {priority} is reserved; your groups may use {best} to "
                f"{MAX_PRIORITY} (ask an admin, or leave the priority out)"
            )

    def check_priority(self, priority: int, groups: frozenset[str] | None = None) -> int:
        """Return the priority to use for a requested one (0 means the default, but never
        more important than the groups may use); groups None means no limit (admins)."""
        if priority == 0:
            if groups is None:
                return self.default_priority
            return max(self.default_priority, self.best_priority_for(groups))
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise InvalidArgument(
                f"priority must be between {MIN_PRIORITY} (most important) and "
                f"{MAX_PRIORITY} (least important), got {priority}"
            )
        if groups is not None:
            self.check_allowed_priority(priority, groups)
        return priority

    def check_caps(self, caps: Collection[tuple[str, str]], *, what: str = "caps") -> None:
        """Refuse caps (key-value pairs) over the size limits or with unprintable keys and
        values."""
        if len(caps) > self.max_caps:
            raise InvalidArgument(f"{what} has {len(caps)} entries; at most {self.max_caps}")
        for key, value in caps:
            if not 0 < len(key) <= self.max_cap_key_len or not _NAME.fullmatch(key):
                raise InvalidArgument(
                    f"{what} key {key[:80]!r} must be 1 to {self.max_cap_key_len} characters "
                    "of letters, digits and . _ : / -"
                )
            if not 0 < len(value) <= self.max_cap_value_len or not value.isprintable():
                raise InvalidArgument(
                    f"{what} value of {key!r} must be 1 to {self.max_cap_value_len} "
                    "printable characters"
                )

    def check_stack(self, name: str, workers: Sequence[str]) -> tuple[str, ...]:
        """A stack's name and its distinct worker UUIDs, in the order given, refusing a
        malformed name or too few or too many workers."""
        if not 0 < len(name) <= self.max_profile_name_len or not _PROFILE_NAME.fullmatch(name):
            raise InvalidArgument(
                f"stack name {name[:80]!r} must be 1 to {self.max_profile_name_len} "
                "characters of letters, digits and . _ -"
            )
        members = tuple(dict.fromkeys(workers))
        if not 2 <= len(members) <= self.max_stack_workers:
            raise InvalidArgument(
                f"a stack names 2 to {self.max_stack_workers} distinct workers, not "
                f"{len(members)}; a board wired to nothing needs no stack"
            )
        return members

    def check_profile_names(self, names: Sequence[str]) -> None:
        """Refuse too many profiles, or names that are too long, malformed or given twice
        (a name may be empty: the profile is then known by its place only)."""
        if not 0 < len(names) <= self.max_profiles:
            raise InvalidArgument(
                f"a request asks for 1 to {self.max_profiles} boards (profiles), not "
                f"{len(names)}; split a larger set into several requests"
            )
        seen: set[str] = set()
        for index, name in enumerate(names):
            if not name:
                continue
            if len(name) > self.max_profile_name_len or not _PROFILE_NAME.fullmatch(name):
                raise InvalidArgument(
                    f"profile {index} name {name[:80]!r} must be at most "
                    f"{self.max_profile_name_len} characters of letters, digits and . _ -"
                )
            if name in seen:
                raise InvalidArgument(
                    f"profile name {name!r} is given twice; give each profile its own name "
                    "(or none)"
                )
            seen.add(name)

    def check_groups(self, groups: Iterable[str]) -> frozenset[str]:
        """Return groups as a set, refusing too many, too long or malformed names."""
        result = frozenset(groups)
        if len(result) > self.max_groups:
            raise InvalidArgument(f"{len(result)} groups given; at most {self.max_groups}")
        for group in result:
            if not 0 < len(group) <= self.max_group_len or not _NAME.fullmatch(group):
                raise InvalidArgument(
                    f"group {group[:80]!r} must be 1 to {self.max_group_len} characters "
                    "of letters, digits and . _ : / -"
                )
        return result

    def check_reason(self, reason: str) -> str:
        """Refuse a reason text that is too long to keep in a history."""
        if len(reason) > self.max_reason_len:
            raise InvalidArgument(
                f"reason is {len(reason)} characters long; at most {self.max_reason_len}"
            )
        return reason


def caps_size(pairs: Iterable[tuple[str, str]]) -> int:
    """Bytes of caps as a user's quota counts them: their keys and values in UTF-8."""
    return sum(
        (len(k) if k.isascii() else len(k.encode())) + (len(v) if v.isascii() else len(v.encode()))
        for k, v in pairs
    )


def check_worker_uuid(caps: Mapping[str, str]) -> str:
    """Return the worker UUID carried in caps, refusing a missing or malformed one."""
    uuid = caps.get(UUID_CAP)
    if uuid is None:
        raise InvalidArgument(f"caps must contain the worker's UUID under the key {UUID_CAP!r}")
    if not _UUID.fullmatch(uuid):
        raise InvalidArgument(
            f"worker UUID {uuid[:80]!r} must be 1 to 64 characters of letters, digits and . _ : -"
        )
    return uuid


def check_dial_address(address: str, *, what: str) -> tuple[str, int]:
    """(host, port) of an address the scheduler is to dial; refuses one without a port or
    with a wildcard host."""
    try:
        return address_rules.check_dial_address(address, what)
    except address_rules.AddressError as exc:
        raise InvalidArgument(str(exc)) from None


def format_caps(caps: Iterable[tuple[str, str]]) -> str:
    """Render caps for messages as 'k=v, k2=v2', sorted."""
    text = ", ".join(f"{k}={v}" for k, v in sorted(caps))
    return text or "(none)"
