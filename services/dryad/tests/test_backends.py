"""Board backends: the simulated one records and fails on demand; MuxPi speaks its protocol."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from boruta_dryad.backends import BackendError, MuxPiBackend, SimulatedBackend


async def test_simulated_records_and_fails_on_demand(tmp_path: Path) -> None:
    record, fail = tmp_path / "record.jsonl", tmp_path / "fail"
    backend = SimulatedBackend(record_file=str(record), fail_file=str(fail))
    await backend.prepare()
    await backend.maintenance("reflash")
    assert await backend.check() == "simulated board responds"
    actions = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(a["action"], a.get("message")) for a in actions] == [
        ("power-tick", None),
        ("maintenance", "reflash"),
    ]
    fail.write_text("relay stuck\n")
    for call in (backend.prepare(), backend.maintenance("x"), backend.check()):
        with pytest.raises(BackendError, match="relay stuck"):
            await call


class FakeStm:
    """Stands in for the MuxPi STM service on a Unix socket: answers each line, records it."""

    def __init__(self, refuse: str = "") -> None:
        self.lines: list[str] = []
        self.refuse = refuse

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            command = line.decode().strip()
            self.lines.append(command)
            if self.refuse and command.startswith(self.refuse):
                writer.write(b"ERR no such LED\n")
            else:
                writer.write(b"OK MuxPi STM v1\n" if command == "PING" else b"OK\n")
            await writer.drain()
        writer.close()


async def test_muxpi_speaks_the_stm_protocol(tmp_path: Path) -> None:
    stm = FakeStm()
    path = str(tmp_path / "stm.socket")
    server = await asyncio.start_unix_server(stm.serve, path)
    backend = MuxPiBackend(socket=path)
    assert await backend.check() == "MuxPi STM v1"
    await backend.maintenance("new DUT\x1b[2J firmware")
    await backend.prepare()
    assert stm.lines == [
        "PING",
        "LED 1 255 128 0",
        "LED 2 255 128 0",
        "CLEAR",
        "PRINT 0 0 new DUT[2J firmware",
        "DUT",
        "CLEAR",
        "LED 1 0 0 0",
        "LED 2 0 0 0",
        "TICK",
    ]
    server.close()


async def test_muxpi_reports_refusals_and_a_missing_socket(tmp_path: Path) -> None:
    stm = FakeStm(refuse="LED")
    path = str(tmp_path / "stm.socket")
    server = await asyncio.start_unix_server(stm.serve, path)
    with pytest.raises(BackendError, match="STM refused LED: ERR no such LED"):
        await MuxPiBackend(socket=path).maintenance("x")
    server.close()
    with pytest.raises(BackendError, match="unreachable"):
        await MuxPiBackend(socket=str(tmp_path / "none")).check()
