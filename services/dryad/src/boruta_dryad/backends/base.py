"""The interface the dryad uses to drive a board's hardware."""

from __future__ import annotations

from typing import Protocol


class BackendError(Exception):
    """The board's hardware did not do what it was told; the message says what failed."""


class BoardBackend(Protocol):
    """Hardware around one device under test."""

    async def prepare(self) -> None:
        """Ready the board for a new job (e.g. power-cycle the device under test)."""
        ...

    async def maintenance(self, message: str) -> None:
        """Show that the board is in maintenance, with the admin's message."""
        ...

    async def check(self) -> str:
        """Confirm the hardware responds; returns what it found, raises BackendError if not."""
        ...
