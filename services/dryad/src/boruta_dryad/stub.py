"""A stub dryad: the Dryad service and the dryad's side of Superviser for simulated boards.

It answers Prepare with a key made as the real dryad makes it, but creates no Unix user, so
it needs no root and no sshd. Tests and benchmarks use it to drive a real scheduler over
real gRPC; boards can be told to fail their calls, which then end with the real dryad's
status codes. One process serves any number of boards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import sys
import time
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from boruta.address import join_host_port, split_host_port
from boruta.v1 import dryad_pb2, dryad_pb2_grpc, types_pb2

from boruta_dryad.agent import BoardRegistration, SchedulerLink
from boruta_dryad.hostkeys import read_host_keys
from boruta_dryad.keys import JobKey, generate_job_key
from boruta_dryad.servicer import UnknownBoard, abort_for_error

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


def _stub_key(bits: int) -> JobKey:
    return generate_job_key(bits, "boruta stub job")


class KeySource:
    """Where Prepare's keys come from: fresh ones, or (for benchmarks) a reused pool."""

    def __init__(self, bits: int = 2048, pool_size: int = 0) -> None:
        self.bits = bits
        self._pool = [_stub_key(bits) for _ in range(pool_size)]
        self._cycle = itertools.cycle(self._pool) if self._pool else None

    async def next_key(self) -> JobKey:
        if self._cycle is not None:
            return next(self._cycle)
        return await asyncio.to_thread(_stub_key, self.bits)


@dataclass
class StubBoard:
    """One simulated board; set fail_* to an error of the real dryad (e.g. UserError,
    BackendError) to make the next calls fail as the real dryad would."""

    uuid: str
    caps: dict[str, str]
    fail_prepare: Exception | None = None
    fail_maintenance: Exception | None = None
    unhealthy: str | None = None
    silent: bool = False
    # Answer Prepare as a dryad older than PrepareRequest.run_healthcheck would: prepare
    # without checking, and send no checks back.
    ignores_healthcheck_flag: bool = False
    prepared: int = 0
    # Healthcheck calls answered (a Prepare that runs the checks counts none).
    healthchecks: int = 0
    # When the last Prepare answer left (time.time()): the moment the board became free.
    prepared_at: float = 0.0
    maintenance_messages: list[str] = field(default_factory=list)
    last_username: str = ""
    # Public key of the last key handed out (to install it where a test logs in).
    last_public_key: str = ""
    # Host keys handed out with each Prepare (OpenSSH public key lines); none by default,
    # since a stub board has no sshd of its own.
    ssh_host_keys: tuple[str, ...] = ()


class StubDryadServicer(dryad_pb2_grpc.DryadServicer):
    """Serves the Dryad API for a set of stub boards."""

    def __init__(
        self, boards: Mapping[str, StubBoard], keys: KeySource, user_prefix: str = "boruta-job-"
    ) -> None:
        self._boards = boards
        self._keys = keys
        self._user_prefix = user_prefix
        self._jobs = itertools.count(1)

    async def _board(self, uuid: str, context: Context) -> StubBoard:
        board = self._boards.get(uuid)
        if board is None:
            error = UnknownBoard(f"this dryad serves no board {uuid!r}")
            await abort_for_error(context, error, str(error))
        assert board is not None
        return board

    async def Prepare(
        self, request: dryad_pb2.PrepareRequest, context: Context
    ) -> dryad_pb2.PrepareResponse:
        board = await self._board(request.worker_uuid, context)
        health = None
        if request.run_healthcheck and not board.ignores_healthcheck_flag:
            # As the real dryad: checked first, and an unhealthy board is not prepared.
            health = self._check(board)
            if not health.healthy:
                return dryad_pb2.PrepareResponse(healthcheck=health)
        if board.fail_prepare is not None:
            await abort_for_error(context, board.fail_prepare, f"prepare: {board.fail_prepare}")
        key = await self._keys.next_key()
        board.prepared += 1
        board.last_username = f"{self._user_prefix}{next(self._jobs)}"
        board.last_public_key = key.public_openssh
        board.prepared_at = time.time()
        return dryad_pb2.PrepareResponse(
            username=board.last_username,
            private_key_pem=key.private_pem,
            ssh_host_keys=board.ssh_host_keys,
            healthcheck=health,
        )

    async def PutInMaintenance(
        self, request: dryad_pb2.PutInMaintenanceRequest, context: Context
    ) -> dryad_pb2.PutInMaintenanceResponse:
        board = await self._board(request.worker_uuid, context)
        if board.fail_maintenance is not None:
            error = board.fail_maintenance
            await abort_for_error(context, error, f"maintenance: {error}")
        board.maintenance_messages.append(request.message)
        return dryad_pb2.PutInMaintenanceResponse()

    async def Healthcheck(
        self, request: dryad_pb2.HealthcheckRequest, context: Context
    ) -> dryad_pb2.HealthcheckResponse:
        board = await self._board(request.worker_uuid, context)
        board.healthchecks += 1
        return self._check(board)

    @staticmethod
    def _check(board: StubBoard) -> dryad_pb2.HealthcheckResponse:
        check = dryad_pb2.CheckResult(
            name="stub", ok=board.unhealthy is None, detail=board.unhealthy or "fine"
        )
        return dryad_pb2.HealthcheckResponse(healthy=check.ok, checks=[check])


class StubDryad:
    """A running stub dryad: serves Dryad, registers its boards and keeps them alive."""

    def __init__(
        self,
        scheduler_address: str,
        boards: Sequence[StubBoard],
        *,
        listen: str = "127.0.0.1:0",
        ssh_address: str = "127.0.0.1:22",
        keys: KeySource | None = None,
        metadata: Sequence[tuple[str, str]] = (("x-boruta-role", "dryad"),),
        instance_id: str | None = None,
        user_prefix: str = "boruta-job-",
    ) -> None:
        self.scheduler_address = scheduler_address
        self.boards = {b.uuid: b for b in boards}
        self.listen = listen
        self.ssh_address = ssh_address
        self.keys = keys or KeySource()
        self.metadata = tuple(metadata)
        self.instance_id = instance_id or uuidlib.uuid4().hex
        self.user_prefix = user_prefix
        self.address = ""
        self.link: SchedulerLink | None = None
        self._server: grpc.aio.Server | None = None

    async def start(self) -> str:
        """Serve Dryad and start registering; returns the advertised address."""
        server = grpc.aio.server()
        dryad_pb2_grpc.add_DryadServicer_to_server(
            StubDryadServicer(self.boards, self.keys, self.user_prefix), server
        )
        host = split_host_port(self.listen, "--listen", listen=True)[0]
        port = server.add_insecure_port(self.listen)
        await server.start()
        self._server = server
        self.address = join_host_port(host, port)
        self.link = SchedulerLink(
            self.scheduler_address,
            self.address,
            [
                BoardRegistration(b.uuid, {**b.caps, "UUID": b.uuid}, self.ssh_address)
                for b in self.boards.values()
            ],
            instance_id=self.instance_id,
            version="stub",
            host_status=lambda: types_pb2.HostStatus(load_1m=0.1),
            metadata=self.metadata,
            silent=lambda uuid: self.boards[uuid].silent,
        )
        self.link.start()
        return self.address

    @property
    def registered(self) -> set[str]:
        return self.link.registered if self.link else set()

    async def wait_registered(self, timeout: float = 30.0) -> None:
        assert self.link is not None
        await self.link.wait_registered(timeout)

    async def wait_heartbeats(self, uuid: str, count: int, timeout: float = 30.0) -> None:
        """Return once the scheduler has acknowledged count heartbeats of the board."""
        assert self.link is not None
        await self.link.wait_heartbeats(uuid, count, timeout)

    def heartbeats(self, uuid: str) -> int:
        return self.link.heartbeats[uuid] if self.link else 0

    async def stop(self) -> None:
        if self.link is not None:
            await self.link.stop()
        if self._server is not None:
            await self._server.stop(0)


def boards_from_args(
    count: int, caps: Sequence[str], round_robin: Sequence[str], prefix: str
) -> list[StubBoard]:
    """Boards with the same caps, plus caps whose values go round robin over the boards."""
    fixed = dict(item.split("=", 1) for item in caps)
    cycling = {k: v.split(",") for k, v in (item.split("=", 1) for item in round_robin)}
    boards = []
    for i in range(count):
        own = {**fixed, **{k: values[i % len(values)] for k, values in cycling.items()}}
        boards.append(StubBoard(f"{prefix}{i}", own))
    return boards


async def _main(args: argparse.Namespace) -> None:
    keys = KeySource(args.key_bits, args.key_pool)
    boards = boards_from_args(args.boards, args.caps, args.round_robin, args.prefix)
    if args.ssh_host_keys:
        host_keys = read_host_keys(args.ssh_host_keys)
        for board in boards:
            board.ssh_host_keys = host_keys
    dryad = StubDryad(
        args.scheduler,
        boards,
        listen=args.listen,
        ssh_address=args.ssh_address,
        keys=keys,
    )
    address = await dryad.start()
    print(f"boruta-stub-dryad listening on {address}", flush=True)
    await dryad.wait_registered(timeout=600)
    print(f"boruta-stub-dryad registered {len(dryad.boards)} boards", flush=True)
    await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="boruta-stub-dryad", description="Serve simulated boards to a boruta scheduler."
    )
    parser.add_argument(
        "--scheduler",
        default=env("BORUTA_SCHEDULER", "127.0.0.1:50051"),
        help="scheduler address [env: BORUTA_SCHEDULER]",
    )
    parser.add_argument(
        "--listen",
        default=env("BORUTA_LISTEN", "127.0.0.1:0"),
        help="host:port to serve Dryad on [env: BORUTA_LISTEN]",
    )
    parser.add_argument(
        "--boards",
        type=int,
        default=int(env("BORUTA_BOARDS", "1")),
        help="number of boards [env: BORUTA_BOARDS]",
    )
    parser.add_argument(
        "--prefix",
        default=env("BORUTA_PREFIX", "stub-"),
        help="UUID prefix of the boards [env: BORUTA_PREFIX]",
    )
    parser.add_argument(
        "--caps", nargs="*", default=[], metavar="KEY=VALUE", help="caps of every board"
    )
    parser.add_argument(
        "--round-robin",
        nargs="*",
        default=[],
        metavar="KEY=V1,V2",
        help="caps whose values go round robin over the boards",
    )
    parser.add_argument(
        "--ssh-address",
        default=env("BORUTA_SSH_ADDRESS", "127.0.0.1:22"),
        help="SSH address to advertise [env: BORUTA_SSH_ADDRESS]",
    )
    parser.add_argument(
        "--ssh-host-keys",
        nargs="*",
        default=env("BORUTA_SSH_HOST_KEYS", "").split(),
        metavar="FILE",
        help="public host key files of the sshd at the SSH address, handed out with each "
        "Prepare (default none) [env: BORUTA_SSH_HOST_KEYS]",
    )
    parser.add_argument(
        "--key-bits",
        type=int,
        default=int(env("BORUTA_KEY_BITS", "2048")),
        help="RSA key size [env: BORUTA_KEY_BITS]",
    )
    parser.add_argument(
        "--key-pool",
        type=int,
        default=int(env("BORUTA_KEY_POOL", "0")),
        help="reuse this many pre-generated keys instead of fresh ones "
        "(benchmarks only) [env: BORUTA_KEY_POOL]",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
