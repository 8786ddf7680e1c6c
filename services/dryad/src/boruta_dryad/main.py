"""The dryad command: clean up after a crash, serve Dryad, register with the scheduler."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import signal
import sys
import uuid as uuidlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc
from boruta import logs
from boruta.address import AddressError, join_host_port, split_host_port
from boruta.ports import CannotListen, add_port
from boruta.probes import Probes, add_probes
from boruta.tls import PeerCertificates, channel_credentials, server_credentials
from boruta.v1 import dryad_pb2, dryad_pb2_grpc

from boruta_dryad import __version__, sessions
from boruta_dryad.agent import BoardRegistration, SchedulerLink
from boruta_dryad.backends import make_backend
from boruta_dryad.cgroups import CgroupError, JobCgroups, detect
from boruta_dryad.config import ConfigError, DryadConfig, advertised_host, load_config
from boruta_dryad.hoststatus import host_status
from boruta_dryad.selfcheck import SelfChecks
from boruta_dryad.servicer import Board, DryadServicer
from boruta_dryad.state import dryad_id, ensure_uuids
from boruta_dryad.uids import UidAllocator
from boruta_dryad.users import JobHost, JobUsers, UserError

if TYPE_CHECKING:  # loaded only when a metrics port is configured: they take 0.6 s
    from boruta.metrics_http import MetricsServer

    from boruta_dryad.metrics import DryadMetrics

log = logging.getLogger(__name__)

READY = "boruta-dryad listening on "
METRICS_READY = "boruta-dryad metrics on "
DRYAD_SERVICE = dryad_pb2.DESCRIPTOR.services_by_name["Dryad"].full_name


class Dryad:
    """A running dryad process."""

    def __init__(self, config: DryadConfig) -> None:
        os.makedirs(config.state_dir, mode=0o700, exist_ok=True)
        self.config = ensure_uuids(config)
        self.host = job_host(self.config)
        self.boards = {
            b.uuid: Board(
                b,
                make_backend(b.backend, b.backend_options),
                JobUsers(b, self.config.key_bits, self.config.state_dir, self.host),
            )
            for b in self.config.boards
        }
        self.address = ""
        self.link: SchedulerLink | None = None
        self.selfchecks: SelfChecks | None = None
        self._server: grpc.aio.Server | None = None
        self._probes: Probes | None = None
        # The metrics and their HTTP port, if configured; its address once started.
        self.metrics: DryadMetrics | None = None
        self.http: MetricsServer | None = None
        if self.config.metrics_listen:
            from boruta.metrics_http import MetricsServer

            from boruta_dryad.metrics import DryadMetrics

            self.metrics = DryadMetrics()
            try:
                self.http = MetricsServer(
                    self.metrics.registry,
                    self.config.metrics_listen,
                    self.config.tls,
                    anonymous=self.config.metrics_anonymous,
                    setting="metrics_listen in the config file, --metrics-listen or "
                    "BORUTA_METRICS_LISTEN",
                )
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        self.metrics_address = ""

    async def start(self) -> str:
        """Remove job users left from before, serve, and start registering."""
        for board in self.boards.values():
            stale = await board.users.remove_all(legacy=True)
            if stale:
                log.warning(
                    "removed job users left from before",
                    extra={"board": board.config.name, "users": ",".join(stale)},
                )
        await self._remove_orphans()
        server = grpc.aio.server()
        tls = self.config.tls
        peers = None if tls is None else PeerCertificates(tls.read()[0])
        dryad_pb2_grpc.add_DryadServicer_to_server(
            DryadServicer(self.boards, peers, self.metrics, self._left_service, self._checks_ran),
            server,
        )
        self._probes = await add_probes(server, (DRYAD_SERVICE,), serving=True)
        if tls is None:
            log.warning("PLAINTEXT: no TLS; anyone on this machine can call this dryad")
        port = add_port(
            server,
            self.config.listen,
            None if tls is None else server_credentials(tls),
            "listen in the config file, --listen or BORUTA_LISTEN",
        )
        await server.start()
        self._server = server
        self.address = self._advertised(port)
        if self.http is not None:
            metrics_port = await self.http.start()
            host = split_host_port(self.config.metrics_listen, listen=True)[0] or "0.0.0.0"
            self.metrics_address = join_host_port(host, metrics_port)
        disk = self.config.boards[0].checks.disk_path
        self.link = SchedulerLink(
            self.config.scheduler,
            self.address,
            [
                BoardRegistration(b.uuid, {**b.caps, "UUID": b.uuid}, b.ssh_address)
                for b in self.config.boards
            ],
            instance_id=uuidlib.uuid4().hex,
            version=__version__,
            host_status=lambda: host_status(disk),
            credentials=None if tls is None else channel_credentials(tls),
            keepers={uuid: board.users for uuid, board in self.boards.items()},
        )
        self.link.start()
        self.selfchecks = SelfChecks(self.boards, self.link, self.metrics)
        self.selfchecks.start()
        return self.address

    def _left_service(self, uuid: str) -> None:
        if self.link is not None:
            self.link.left_service(uuid)

    def _checks_ran(self, uuid: str) -> None:
        if self.link is not None:
            self.link.checks_ran(uuid)

    def _advertised(self, port: int) -> str:
        advertise = self.config.advertise
        if not advertise:
            return join_host_port(split_host_port(self.config.listen, listen=True)[0], port)
        try:
            if split_host_port(advertise, "advertise", listen=True)[1]:
                return advertise
        except AddressError:
            pass  # a host alone: the port is the one bound
        return join_host_port(advertised_host(advertise), port)

    async def stop(self) -> None:
        """Stop serving and remove the job users: nobody may use a board without its dryad."""
        if self._probes is not None:
            await self._probes.set_serving(False)
        if self.selfchecks is not None:
            await self.selfchecks.stop()
        if self.link is not None:
            await self.link.stop()
        if self._server is not None:
            await self._server.stop(2)
        if self.http is not None:
            await self.http.stop()
        for board in self.boards.values():
            await board.users.remove_all()
        if self.host.cgroups is not None:
            self.host.cgroups.close()

    async def _remove_orphans(self) -> None:
        """Job cgroups whose user is gone (a crash between the two) are killed and removed;
        session entries of users that no longer exist are dropped."""
        cgroups = self.host.cgroups
        for name in cgroups.leftovers() if cgroups is not None else []:
            assert cgroups is not None
            try:
                await cgroups.kill(name)
                cgroups.remove(name)
            except CgroupError as exc:
                raise UserError(f"cannot end a job left from before: {exc}") from None
            log.warning("removed a job cgroup left from before", extra={"cgroup": name})
        for name in sessions.registered():
            try:
                pwd.getpwnam(name)
            except KeyError:
                sessions.unregister(name)


def job_host(config: DryadConfig) -> JobHost:
    """The dryad's id, the host's job uids and, where the host offers them, job cgroups."""
    identity = dryad_id(config.state_dir)
    host = detect()
    cgroups: JobCgroups | None = None
    try:
        cgroups = JobCgroups.open(host, identity)
        log.info(
            "jobs run in cgroups of their own",
            extra={"cgroups": host.describe(), "root": str(cgroups.root)},
        )
    except CgroupError as exc:
        log.warning(
            "NO JOB CGROUPS: jobs are ended by killing their uid's processes only",
            extra={"cgroups": host.describe(), "why": str(exc)},
        )
    return JobHost(identity, UidAllocator(config.job_uids, config.uid_mark_dir), cgroups)


async def serve(config: DryadConfig) -> None:
    dryad = Dryad(config)
    try:
        address = await dryad.start()
    except CannotListen:
        await dryad.stop()
        raise
    print(f"{READY}{address}", flush=True)
    if dryad.metrics_address:
        print(f"{METRICS_READY}{dryad.metrics_address}", flush=True)
    log.info(
        "serving",
        extra={
            "address": address,
            "scheduler": config.scheduler,
            "metrics": dryad.metrics_address or "none",
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await dryad.stop()


def main(argv: Sequence[str] | None = None) -> None:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"dryad: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.configure(config.log_level)
    try:
        asyncio.run(serve(config))
    except (ConfigError, CannotListen) as exc:  # e.g. a bad UUID in uuids.json, a busy port
        print(f"dryad: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
