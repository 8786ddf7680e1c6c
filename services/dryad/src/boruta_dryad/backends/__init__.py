"""Board backends: what the dryad does to the hardware around the device under test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from boruta_dryad.backends.base import BackendError, BoardBackend
from boruta_dryad.backends.muxpi import MuxPiBackend
from boruta_dryad.backends.simulated import SimulatedBackend

__all__ = ["BackendError", "BoardBackend", "MuxPiBackend", "SimulatedBackend", "make_backend"]


def make_backend(kind: str, options: Mapping[str, Any]) -> BoardBackend:
    if kind == "muxpi":
        return MuxPiBackend(**options)
    if kind == "simulated":
        return SimulatedBackend(**options)
    raise ValueError(f"unknown backend {kind!r}")
