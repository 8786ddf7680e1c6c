"""How an ErrorReason (boruta/v1/errors.proto) travels: the trailing metadata key and the
value's name without its prefix, shared by the scheduler and every client."""

from __future__ import annotations

from typing import TypeAlias

from boruta.v1.errors_pb2 import ErrorReason

# Trailing metadata key of a failed call; its value is wire_name(reason).
ERROR_REASON_KEY = "boruta-error-reason"
_PREFIX = "ERROR_REASON_"

Reason: TypeAlias = ErrorReason.ValueType


def wire_name(reason: Reason) -> str:
    """The text sent for reason, e.g. "BUSY" for ERROR_REASON_BUSY."""
    return ErrorReason.Name(reason).removeprefix(_PREFIX)


def from_wire(name: str) -> Reason:
    """The reason a received text names; ERROR_REASON_UNSPECIFIED for an unknown or empty one
    (a newer scheduler's reason, or none), so the caller falls back to the status code."""
    if not name or name.startswith(_PREFIX):
        return ErrorReason.ERROR_REASON_UNSPECIFIED
    try:
        return ErrorReason.Value(_PREFIX + name)
    except ValueError:
        return ErrorReason.ERROR_REASON_UNSPECIFIED


def all_reasons() -> list[Reason]:
    """Every reason a scheduler may send (all but UNSPECIFIED)."""
    return [r for r in ErrorReason.values() if r != ErrorReason.ERROR_REASON_UNSPECIFIED]
