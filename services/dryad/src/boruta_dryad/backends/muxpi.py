"""MuxPi backend: talks to the STM controller service over its Unix socket.

One command per line; the service answers each with one line, "OK [detail]" or
"ERR message". Commands used: PING; LED <n> <r> <g> <b>; CLEAR; PRINT <x> <y> <text>;
DUT (route the SD card to the device under test); TICK (power-cycle it). This protocol
has not yet been verified against MuxPi hardware; the commands are options so a site can
adapt them.
"""

from __future__ import annotations

import asyncio

from boruta_dryad.backends.base import BackendError

_MAX_TEXT = 64


class MuxPiBackend:
    """Implements BoardBackend on a MuxPi's STM socket."""

    def __init__(
        self,
        socket: str = "/run/stm.socket",
        timeout: float = 5.0,
        maintenance_led: str = "255 128 0",
        power_tick: bool = True,
    ) -> None:
        self.socket = socket
        self.timeout = timeout
        self.maintenance_led = maintenance_led
        self.power_tick = power_tick

    async def _send(self, *commands: str) -> list[str]:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.socket), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise BackendError(f"STM socket {self.socket} unreachable: {exc}") from None
        replies = []
        try:
            for command in commands:
                writer.write(command.encode() + b"\n")
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), self.timeout)
                reply = line.decode(errors="replace").strip()
                if not reply.startswith("OK"):
                    raise BackendError(f"STM refused {command.split()[0]}: {reply or 'no answer'}")
                replies.append(reply[2:].strip())
        except (OSError, TimeoutError) as exc:
            raise BackendError(f"STM socket {self.socket}: {exc}") from None
        finally:
            writer.close()
        return replies

    async def prepare(self) -> None:
        commands = ["DUT", "CLEAR", "LED 1 0 0 0", "LED 2 0 0 0"]
        if self.power_tick:
            commands.append("TICK")
        await self._send(*commands)

    async def maintenance(self, message: str) -> None:
        # Only printable characters reach the display, and only one short line.
        text = "".join(c for c in message if c.isprintable())[:_MAX_TEXT] or "maintenance"
        await self._send(
            f"LED 1 {self.maintenance_led}",
            f"LED 2 {self.maintenance_led}",
            "CLEAR",
            f"PRINT 0 0 {text}",
        )

    async def check(self) -> str:
        (detail,) = await self._send("PING")
        return detail or "STM responds"
