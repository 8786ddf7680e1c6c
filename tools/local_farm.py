"""A real boruta farm on this machine: `make run` (and, with --ha, `make run-ha`).

The scheduler (SQLite in .farm/), the relay that holds the SSH tunnels (so a session
survives a restart of the scheduler), one dryad per board (simulated backend, real job users),
and a private OpenSSH server the boards' job users log in to. Needs root, like a dryad.
Secure by default: a local CA in .farm/pki gives the scheduler, every dryad, you and an
admin certificates, and every link is TLS. A token port takes the bearer tokens an admin
issues (schedctl -c farm-admin tokens issue NAME). Stops cleanly on Ctrl-C, removing its job
users; state (and the CA) survive for the next run.

With --ha (`make run-ha`), two schedulers share one PostgreSQL database instead of SQLite:
a throwaway cluster in the state directory, stopped and removed with the farm. One leads,
the other is a standby; each is restarted when it fails, as its systemd unit would be, so a
killed leader comes back as the standby of the one that took over.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from boruta import pki
from boruta.address import AddressError, split_host_port
from boruta.tls import TlsFiles, channel_credentials
from boruta_client import Client, WorkerState
from boruta_dryad.devsshd import DevSshd
from boruta_scheduler.store.devpg import PREFIX as PG_PREFIX
from boruta_scheduler.store.devpg import DevPostgres
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_SCHEDULER = "127.0.0.1:50051"
DEFAULT_TOKENS = "127.0.0.1:50052"
DEFAULT_METRICS = "127.0.0.1:9101"
TOKENS_READY = "boruta-scheduler tokens on "
METRICS_READY = "boruta-scheduler metrics on "
SCHEDULER_READY = "boruta-scheduler listening on "
LEADING = "boruta-scheduler leading as epoch "
# The second scheduler of `make run-ha`.
DEFAULT_SECOND_SCHEDULER = "127.0.0.1:50053"
DEFAULT_SECOND_TOKENS = "127.0.0.1:50054"
# Exits the scheduler's systemd unit does not restart after: a clean stop, and what only an
# admin can fix (RestartPreventExitStatus=2 73).
NOT_RESTARTED = (0, 2, 73)
# A scheduler that failed is restarted once another leads, or after this long if none does:
# restarted at once, a killed leader would take its own lease back (it may, as its own
# restart), and the demo would show no takeover.
RESTART_WITHIN_S = 10
# A Unix socket's path has at most 107 bytes.
MAX_SOCKET_PATH = 100
BOARD_CAPS = [
    {"board": "rpi4", "camera": "yes"},
    {"board": "rpi4"},
    {"board": "odroid-xu4"},
    {"board": "rpi4", "camera": "yes", "wifi": "yes"},
]


def step(text: str) -> None:
    """One line of progress: starting a farm takes a while, and silence looks like a hang."""
    print(f"... {text}", flush=True)


def spawn(argv: list[str], ready: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=open(log, "a"),  # noqa: SIM115 - lives as long as the process
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
    except BaseException:  # Ctrl-C while it starts: the caller has no process to stop yet
        proc.kill()
        proc.wait()
        raise
    if not line.startswith(ready):
        proc.kill()
        sys.exit(f"{argv[2]} did not start; see {log}")
    return proc, line[len(ready) :].strip()


def scheduler_argv(
    tls: TlsFiles, listen: str, listen_tokens: str, data_dir: Path, relay: Path, *store: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "boruta_scheduler.main",
        "--tls-ca",
        tls.ca,
        "--tls-cert",
        tls.cert,
        "--tls-key",
        tls.key,
        "--listen",
        listen,
        "--listen-tokens",
        listen_tokens,
        "--data-dir",
        str(data_dir),
        "--relay",
        str(relay),
        *store,
    ]


class SchedulerUnit:
    """One scheduler of the HA farm: its process now, and how to start it (again on the
    ports it bound first, which clients and dryads know)."""

    def __init__(self, name: str, argv: Callable[[str, str, str], list[str]], log: Path) -> None:
        self.name = name
        self.log = log
        self._argv = argv
        self.address = ""
        self.token_address = ""
        self.metrics_address = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self, listen: str, listen_tokens: str, metrics: str) -> subprocess.Popen[str]:
        argv = self._argv(listen, listen_tokens, metrics)
        proc, self.address = spawn(argv, SCHEDULER_READY, self.log)
        self.proc = proc
        assert proc.stdout is not None
        self.token_address = proc.stdout.readline().removeprefix(TOKENS_READY).strip()
        self.metrics_address = proc.stdout.readline().removeprefix(METRICS_READY).strip()
        return proc

    def restart(self) -> subprocess.Popen[str]:
        return self.start(self.address, self.token_address, self.metrics_address)


class HaSchedulers:
    """The schedulers of `make run-ha`. Each is restarted when it fails (kill -9, or exit 75
    after losing the lead), as its systemd unit would be; who leads is read from their
    "leading as epoch" lines, and said on the terminal once the farm is up."""

    def __init__(self) -> None:
        self.units: list[SchedulerUnit] = []
        self.leader: SchedulerUnit | None = None
        self.tell = False  # say takeovers and restarts: the farm is up
        self._changed = threading.Condition()
        self._stopping = False

    def start(self, unit: SchedulerUnit, listen: str, listen_tokens: str, metrics: str) -> None:
        self.units.append(unit)  # from here on, stopped with the farm
        unit.start(listen, listen_tokens, metrics)
        threading.Thread(target=self._supervise, args=(unit,), daemon=True).start()

    def wait_leader(self, timeout: float = 120) -> SchedulerUnit:
        with self._changed:
            self._changed.wait_for(lambda: self.leader is not None, timeout)
            if self.leader is None:
                sys.exit("no scheduler took the lead; see the scheduler-*.log files")
            return self.leader

    def _say(self, text: str) -> None:
        if self.tell:
            print(f"*** {text}", flush=True)

    def _supervise(self, unit: SchedulerUnit) -> None:
        while True:
            proc = unit.proc
            assert proc is not None and proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(LEADING):
                    with self._changed:  # said before the other is said to be back
                        self.leader = unit
                        self._changed.notify_all()
                        self._say(
                            f"scheduler {unit.name} ({unit.address}, pid {proc.pid}) leads "
                            f"now, as epoch {line.removeprefix(LEADING).strip()}"
                        )
            code = proc.wait()
            with self._changed:
                if self.leader is unit:
                    self.leader = None
                if self._stopping:
                    return
                ended = (
                    f"was killed by {signal.Signals(-code).name}"
                    if code < 0
                    else (f"exited {code}" + (" (lost the lead)" if code == 75 else ""))
                )
                if code in NOT_RESTARTED:
                    self._say(f"scheduler {unit.name} (pid {proc.pid}) {ended}; not restarted")
                    return
                self._say(
                    f"scheduler {unit.name} (pid {proc.pid}) {ended}; restarting it once "
                    "another leads, as systemd would"
                )
                self._changed.wait_for(
                    lambda: self._stopping or self.leader is not None, RESTART_WITHIN_S
                )
                if self._stopping:
                    return
                try:
                    restarted = unit.restart()
                except SystemExit as exc:
                    self._say(f"scheduler {unit.name} did not restart: {exc}")
                    return
                self._say(f"scheduler {unit.name} is back on {unit.address}, pid {restarted.pid}")

    def stop_restarting(self) -> list[subprocess.Popen[str]]:
        """Restart nothing more; returns the processes running now, to be stopped."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            return [u.proc for u in self.units if u.proc is not None]


def health(address: str, tls: TlsFiles) -> str:
    """A scheduler's answer on grpc.health.v1: SERVING leads, NOT_SERVING is a standby."""
    with grpc.secure_channel(address, channel_credentials(tls)) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=30
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def ha_message(schedulers: HaSchedulers, tls: TlsFiles) -> tuple[str, str, str]:
    """What `make run-ha` says besides `make run`'s message: the schedulers, who leads by
    their health, and how to kill the leader and watch the other take over."""
    leader = schedulers.wait_leader()
    rows = []
    for unit in schedulers.units:
        assert unit.proc is not None
        status = health(unit.address, tls)
        role = "leads" if status == "SERVING" else "standby"
        rows.append(
            f"    {unit.name}  {unit.address}  tokens {unit.token_address}  pid {unit.proc.pid}"
            f"  health {status} ({role})\n"
        )
    other = next(u for u in schedulers.units if u is not leader)
    assert leader.proc is not None
    sudo = "sudo " if os.environ.get("SUDO_USER") else ""
    where = (
        "Schedulers on one PostgreSQL database, each restarted here when it exits, as "
        "systemd would:\n" + "".join(rows) + "Clients and dryads are given both (the "
        "config file's contexts, as\n"
        f"BORUTA_SCHEDULERS={','.join(u.address for u in schedulers.units)} would): they "
        "find the leader and follow it.\n\n"
    )
    takeover = (
        f"Kill the leader as a crash would, and {other.name} takes over within about 3 s "
        f"(this terminal says so;\n{leader.name} comes back as its standby). Watch it "
        "from a third terminal, and run a job again after:\n"
        "    .venv/bin/schedctl -c farm-admin workers watch        "
        "# every board change, across the takeover\n"
        f"    {sudo}kill -9 {leader.proc.pid}\n"
        "    .venv/bin/schedctl run -- uname -a                    "
        "# now on the new leader\n"
    )
    return "2 schedulers on one PostgreSQL database", where, takeover


def remove_stale_clusters(data: Path) -> None:
    """Remove the clusters of farms that were killed rather than stopped (kill -9 leaves
    its cluster behind); refuse to start beside one whose server still runs."""
    for old in data.glob(f"{PG_PREFIX}*"):
        try:
            pid = int((old / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = 0
        if pid and Path(f"/proc/{pid}").exists():
            sys.exit(
                f"the PostgreSQL server of an earlier farm still runs in {old} (pid {pid}): "
                "stop that farm's processes first"
            )
        shutil.rmtree(old, ignore_errors=True)


def cluster_parent(data: Path) -> Path | None:
    """Where the throwaway PostgreSQL cluster goes: in the farm's state directory, unless the
    postgres user (the server refuses to run as root) cannot pass through the directories
    above it, or its socket's path would be too long; then in the system's temporary one."""
    socket = data / f"{PG_PREFIX}12345678" / ".s.PGSQL.5432"
    if len(str(socket)) > MAX_SOCKET_PATH:
        return None
    if not all(os.stat(parent).st_mode & stat.S_IXOTH for parent in data.parents):
        return None
    os.chmod(data, 0o711)  # passing through only: what is in it is not listed
    return data


def dryad_config(
    scheduler: str, sshd: DevSshd, state: Path, index: int, tls: TlsFiles, name: str
) -> str:
    caps = BOARD_CAPS[index % len(BOARD_CAPS)]
    caps_toml = ", ".join(f'{k} = "{v}"' for k, v in caps.items())
    return (
        f'scheduler = "{scheduler}"\nlisten = "127.0.0.1:0"\nstate_dir = "{state}"\n'
        f'tls_ca = "{tls.ca}"\ntls_cert = "{tls.cert}"\ntls_key = "{tls.key}"\n'
        'metrics_listen = "127.0.0.1:0"\n\n'
        f'[[board]]\nname = "{name}-{index}"\nuuid = "{name}-{index}"\n'
        f"caps = {{ {caps_toml} }}\n"
        f'ssh_address = "{sshd.address}"\nssh_host_keys = ["{sshd.host_key_public}"]\n'
        f'user_prefix = "{name}{index}-job"\n'
        f'backend_options = {{ record_file = "{state}/board.record" }}\n'
    )


def wait_idle(admin: Client, uuids: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while {w.uuid for w in admin.list_workers()} < set(uuids):  # dryads register by themselves
        if time.monotonic() > deadline:
            sys.exit("the dryads did not register; see .farm/*.log")
        time.sleep(0.1)
    for uuid in uuids:
        admin.set_worker_state(uuid, WorkerState.IDLE, "local farm")
    idle: set[str] = set()
    with admin.watch_workers(uuids=uuids, include_current=True, timeout=timeout) as watch:
        for change in watch:
            worker = change.worker
            if worker.state is WorkerState.IDLE:
                idle.add(worker.uuid)
            elif worker.state is WorkerState.FAILED:
                sys.exit(f"board {worker.uuid} failed: {worker.reason}")
            if idle == set(uuids):
                return
    sys.exit("the boards did not become IDLE; see .farm/*.log")


class LocalPki:
    """The demo farm's CA and certificates in .farm/pki, made once and kept."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not (directory / "ca.pem").exists():
            key, cert = pki.create_ca("boruta local farm CA")
            pki.write_secret(directory / "ca.key", key)
            pki.write_public(directory / "ca.pem", cert)

    def files(self, identity: pki.CertIdentity) -> TlsFiles:
        pem, key = self.dir / f"{identity.name}.pem", self.dir / f"{identity.name}.key"
        if not pem.exists():
            key_pem, cert_pem = pki.issue(
                (self.dir / "ca.key").read_bytes(), (self.dir / "ca.pem").read_bytes(), identity
            )
            key.unlink(missing_ok=True)
            pki.write_secret(key, key_pem)
            pki.write_public(pem, cert_pem)
        return TlsFiles(str(self.dir / "ca.pem"), str(pem), str(key))


def client_config(data: Path, address: str, tokens: str, farm_pki: LocalPki, user: str) -> Path:
    """Contexts for schedctl: you (the default), an admin, and the token port (the token
    comes from BORUTA_TOKEN or --token). When run with sudo, the files are handed to the
    user who ran it, so schedctl works without root."""
    client_dir = data / "client"
    client_dir.mkdir(exist_ok=True, mode=0o700)
    mine = farm_pki.files(pki.CertIdentity(user, pki.Role.USER))
    admin = farm_pki.files(pki.CertIdentity("admin", pki.Role.ADMIN))
    for source in (mine.ca, mine.cert, mine.key, admin.cert, admin.key):
        shutil.copyfile(source, client_dir / Path(source).name)
        os.chmod(client_dir / Path(source).name, 0o600)
    config = client_dir / "schedctl.toml"
    config.write_text(
        f'context = "farm"\n\n[contexts.farm]\nscheduler = "{address}"\n'
        f'ca = "ca.pem"\ncert = "{user}.pem"\nkey = "{user}.key"\n\n'
        f'[contexts.farm-admin]\nscheduler = "{address}"\n'
        'ca = "ca.pem"\ncert = "admin.pem"\nkey = "admin.key"\n\n'
        f'[contexts.farm-token]\nscheduler = "{tokens}"\nca = "ca.pem"\n'
    )
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if uid and gid:
        os.chmod(data, 0o711)  # the user may pass through .farm to their own files only
        for path in [client_dir, *client_dir.iterdir()]:
            os.chown(path, int(uid), int(gid))
    return config


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--boards",
        type=int,
        default=int(os.environ.get("BORUTA_BOARDS", "3")),
        help="number of boards [env: BORUTA_BOARDS]",
    )
    parser.add_argument(
        "--listen",
        default=os.environ.get("BORUTA_LISTEN", DEFAULT_SCHEDULER),
        help="scheduler address [env: BORUTA_LISTEN]",
    )
    parser.add_argument(
        "--listen-tokens",
        default=os.environ.get("BORUTA_LISTEN_TOKENS", DEFAULT_TOKENS),
        help="the scheduler's port for bearer tokens [env: BORUTA_LISTEN_TOKENS]",
    )
    parser.add_argument(
        "--metrics-listen",
        default=os.environ.get("BORUTA_METRICS_LISTEN", DEFAULT_METRICS),
        help="the scheduler's HTTP port: Prometheus metrics and the dashboard (with --ha, "
        "scheduler A's; B's is any free port) [env: BORUTA_METRICS_LISTEN]",
    )
    parser.add_argument(
        "--name",
        default=os.environ.get("BORUTA_FARM_NAME", "farm"),
        help="what boards (NAME-0, ...) and job users (NAME0-job1, ...) are called "
        "[env: BORUTA_FARM_NAME]",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("BORUTA_DATA_DIR"),
        help="where the farm keeps its state (default .farm, with --ha .farm-ha) "
        "[env: BORUTA_DATA_DIR]",
    )
    parser.add_argument(
        "--ha",
        action="store_true",
        help="two schedulers on one PostgreSQL database (a throwaway cluster in the state "
        "directory), one leading and one standby: make run-ha",
    )
    parser.add_argument(
        "--second-listen",
        default=os.environ.get("BORUTA_SECOND_LISTEN", DEFAULT_SECOND_SCHEDULER),
        help="the second scheduler's address, with --ha [env: BORUTA_SECOND_LISTEN]",
    )
    parser.add_argument(
        "--second-listen-tokens",
        default=os.environ.get("BORUTA_SECOND_LISTEN_TOKENS", DEFAULT_SECOND_TOKENS),
        help="the second scheduler's port for bearer tokens, with --ha "
        "[env: BORUTA_SECOND_LISTEN_TOKENS]",
    )
    args = parser.parse_args()
    make = "make run-ha" if args.ha else "make run"
    if os.geteuid() != 0:
        sys.exit(
            f"{make} starts dryads, which create Unix users, and an sshd: run it as root "
            f"(sudo {make})"
        )
    args.data_dir = args.data_dir or (".farm-ha" if args.ha else ".farm")
    data = Path(args.data_dir).absolute()
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    farm_pki = LocalPki(data / "pki")
    listens = {"--listen": args.listen, "--listen-tokens": args.listen_tokens}
    if args.ha:
        listens["--second-listen"] = args.second_listen
        listens["--second-listen-tokens"] = args.second_listen_tokens
    try:
        hosts = tuple(
            dict.fromkeys(split_host_port(v, k, listen=True)[0] for k, v in listens.items())
        )
    except AddressError as exc:
        parser.error(str(exc))
    sched_tls = farm_pki.files(pki.CertIdentity("scheduler", pki.Role.SCHEDULER, hosts=hosts))
    # SIGTERM as Ctrl-C: either, while the farm starts or once it is up, stops it cleanly.
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    step(f"starting sshd for the job users (logs in {args.data_dir}/)")
    sshd = DevSshd(workdir=str(data / "sshd"))
    sshd.start()
    processes: list[subprocess.Popen[str]] = []
    socket_dir = ""
    postgres: DevPostgres | None = None
    schedulers = HaSchedulers()
    try:
        # The tunnels live in boruta-relay, so SSH sessions survive a restart of the scheduler.
        relay_socket = data / "relay.sock"
        if len(str(relay_socket)) > 100:  # a Unix socket's path has at most 107 bytes
            socket_dir = tempfile.mkdtemp(prefix="boruta-relay-")
            relay_socket = Path(socket_dir) / "relay.sock"
        step(f"starting the relay (tunnels for SSH) on {relay_socket}")
        relay, _ = spawn(
            [
                sys.executable,
                "-m",
                "boruta_scheduler.relay.main",
                "--socket",
                str(relay_socket),
                "--public-host",
                "127.0.0.1",
            ],
            "boruta-relay listening on ",
            data / "relay.log",
        )
        processes.append(relay)
        metrics: list[str] = []  # where the schedulers serve their metrics
        if args.ha:
            remove_stale_clusters(data)
            postgres = DevPostgres(durable=True, parent=cluster_parent(data), own_session=True)
            step(f"starting PostgreSQL for both schedulers in {postgres.dir}")
            postgres.start()
            store = ["--store", postgres.create_database("boruta")]
            # B's metrics port is any free one (kept across its restarts), so that the
            # farm needs no third well-known port.
            for name, listen, listen_tokens, metrics_listen in (
                ("A", args.listen, args.listen_tokens, args.metrics_listen),
                ("B", args.second_listen, args.second_listen_tokens, "127.0.0.1:0"),
            ):
                role = "leader" if name == "A" else "standby"
                step(f"starting scheduler {name} ({role}) on {listen}, tokens on {listen_tokens}")
                directory = data / f"scheduler-{name.lower()}"

                def argv(
                    listen: str, tokens: str, metrics: str, directory: Path = directory
                ) -> list[str]:
                    return scheduler_argv(
                        sched_tls,
                        listen,
                        tokens,
                        directory,
                        relay_socket,
                        *store,
                        "--metrics-listen",
                        metrics,
                    )

                unit = SchedulerUnit(name, argv, data / f"{directory.name}.log")
                schedulers.start(unit, listen, listen_tokens, metrics_listen)
                metrics.append(unit.metrics_address)
                schedulers.wait_leader()  # A leads a fresh database; B is its standby
            address = ",".join(u.address for u in schedulers.units)
            tokens = ",".join(u.token_address for u in schedulers.units)
        else:
            step(f"starting the scheduler on {args.listen}, tokens on {args.listen_tokens}")
            scheduler, address = spawn(
                scheduler_argv(
                    sched_tls,
                    args.listen,
                    args.listen_tokens,
                    data / "scheduler",
                    relay_socket,
                    "--metrics-listen",
                    args.metrics_listen,
                ),
                SCHEDULER_READY,
                data / "scheduler.log",
            )
            processes.append(scheduler)
            assert scheduler.stdout is not None
            tokens = scheduler.stdout.readline().removeprefix(TOKENS_READY).strip()
            metrics.append(scheduler.stdout.readline().removeprefix(METRICS_READY).strip())
        uuids = [f"{args.name}-{i}" for i in range(args.boards)]
        step(f"starting {args.boards} dryads, one per board")
        for i, uuid in enumerate(uuids):
            dryad_tls = farm_pki.files(
                pki.CertIdentity(
                    f"dryad-{i}", pki.Role.DRYAD, workers=frozenset({uuid}), hosts=("127.0.0.1",)
                )
            )
            config = data / f"dryad-{i}.toml"
            config.write_text(
                dryad_config(address, sshd, data / f"dryad-{i}", i, dryad_tls, args.name)
            )
            proc, _ = spawn(
                [sys.executable, "-m", "boruta_dryad.main", "--config", str(config)],
                "boruta-dryad listening on ",
                data / f"dryad-{i}.log",
            )
            processes.append(proc)
            assert proc.stdout is not None
            proc.stdout.readline()  # where its metrics are (shown in its log as well)
        step("putting the boards into service")
        admin_tls = farm_pki.files(pki.CertIdentity("admin", pki.Role.ADMIN))
        with Client(address, tls=admin_tls) as admin:
            wait_idle(admin, uuids)
        user = os.environ.get("SUDO_USER") or getpass.getuser()
        client_file = client_config(data, address, tokens, farm_pki, user)
        boards = "\n".join(
            f"    {uuid}  "
            + " ".join(f"{k}={v}" for k, v in BOARD_CAPS[i % len(BOARD_CAPS)].items())
            for i, uuid in enumerate(uuids)
        )
        up, where, takeover = f"scheduler on {address}", "", ""
        scrape = ""
        if metrics:
            scrape = (
                "Prometheus metrics (docs/metrics.md), shown to the farm's certificates:\n"
                + "".join(
                    f"    curl --cacert {admin_tls.ca} --cert {admin_tls.cert} "
                    f"--key {admin_tls.key} https://{where}/metrics\n"
                    for where in metrics
                )
                + "The dashboard (docs/admin-guide.md#the-dashboard), in a browser that trusts\n"
                f"{admin_tls.ca} (or after accepting its warning), with a token to log in:\n"
                "    .venv/bin/schedctl -c farm-admin tokens issue dashboard --admin --days 1 "
                "| tail -n 1\n" + "".join(f"    https://{where}/login\n" for where in metrics)
            )
        if args.ha:
            up, where, takeover = ha_message(schedulers, admin_tls)
        print(
            f"\nboruta farm is up: {up} (TLS), {args.boards} boards IDLE "
            f"(state and logs in {args.data_dir}/)\n{boards}\n\n{where}"
            "Try, in another terminal (your certificate is in the config file):\n"
            f"    export BORUTA_CONFIG={client_file}\n"
            "    .venv/bin/schedctl ssh --caps board=rpi4,camera=yes   "
            "# a shell on any rpi4 with a camera\n"
            "    .venv/bin/schedctl run -- uname -a                    "
            "# one command on any board\n"
            "    .venv/bin/schedctl status                             "
            "# the farm at a glance\n"
            "    .venv/bin/schedctl -c farm-admin workers list         "
            "# as the admin\n"
            f"Bearer tokens (for CI) work on the token port {tokens}:\n"
            "    export BORUTA_TOKEN=$(.venv/bin/schedctl -c farm-admin tokens issue ci-bot "
            "| tail -n 1)\n"
            "    .venv/bin/schedctl -c farm-token status\n"
            f"{takeover}"
            "The SSH tunnels are boruta-relay's: an ssh session stays up while the scheduler\n"
            "restarts.\n"
            f"{scrape}\n"
            "Ctrl-C stops the farm.",
            flush=True,
        )
        schedulers.tell = True
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # one clean stop, not one per keypress
        print("stopping the farm ...", flush=True)
        processes += schedulers.stop_restarting()
        for proc in reversed(processes):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(processes):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if postgres is not None:
            postgres.stop()  # once the schedulers are gone: the leader hands its lease back
        if socket_dir:
            shutil.rmtree(socket_dir, ignore_errors=True)
        sshd.stop()


if __name__ == "__main__":
    main()
