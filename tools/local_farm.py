"""A real boruta farm on this machine: `make run`.

The scheduler (SQLite in .farm/), the relay that holds the SSH tunnels (so a session
survives a restart of the scheduler), one dryad per board (simulated backend, real job users),
and a private OpenSSH server the boards' job users log in to. Needs root, like a dryad.
Secure by default: a local CA in .farm/pki gives the scheduler, every dryad, you and an
admin certificates, and every link is TLS. A token port takes the bearer tokens an admin
issues (schedctl -c farm-admin tokens issue NAME). Stops cleanly on Ctrl-C, removing its job
users; state (and the CA) survive for the next run.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from boruta import pki
from boruta.address import AddressError, split_host_port
from boruta.tls import TlsFiles
from boruta_client import Client, WorkerState
from boruta_dryad.devsshd import DevSshd

DEFAULT_SCHEDULER = "127.0.0.1:50051"
DEFAULT_TOKENS = "127.0.0.1:50052"
DEFAULT_METRICS = "127.0.0.1:9101"
TOKENS_READY = "boruta-scheduler tokens on "
METRICS_READY = "boruta-scheduler metrics on "
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
    line = proc.stdout.readline()
    if not line.startswith(ready):
        proc.kill()
        sys.exit(f"{argv[2]} did not start; see {log}")
    return proc, line[len(ready) :].strip()


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
        help="the scheduler's Prometheus metrics port [env: BORUTA_METRICS_LISTEN]",
    )
    parser.add_argument(
        "--name",
        default=os.environ.get("BORUTA_FARM_NAME", "farm"),
        help="what boards (NAME-0, ...) and job users (NAME0-job1, ...) are called "
        "[env: BORUTA_FARM_NAME]",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("BORUTA_DATA_DIR", ".farm"),
        help="where the farm keeps its state [env: BORUTA_DATA_DIR]",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit(
            "make run starts dryads, which create Unix users, and an sshd: run it as root "
            "(sudo make run)"
        )
    data = Path(args.data_dir).absolute()
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    farm_pki = LocalPki(data / "pki")
    try:
        host = split_host_port(args.listen, "--listen", listen=True)[0]
        tokens_host = split_host_port(args.listen_tokens, "--listen-tokens", listen=True)[0]
    except AddressError as exc:
        parser.error(str(exc))
    hosts = tuple(dict.fromkeys((host, tokens_host)))
    sched_tls = farm_pki.files(pki.CertIdentity("scheduler", pki.Role.SCHEDULER, hosts=hosts))
    # SIGTERM as Ctrl-C: either, while the farm starts or once it is up, stops it cleanly.
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    step(f"starting sshd for the job users (logs in {args.data_dir}/)")
    sshd = DevSshd(workdir=str(data / "sshd"))
    sshd.start()
    processes: list[subprocess.Popen[str]] = []
    socket_dir = ""
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
        step(f"starting the scheduler on {args.listen}, tokens on {args.listen_tokens}")
        scheduler, address = spawn(
            [
                sys.executable,
                "-m",
                "boruta_scheduler.main",
                "--tls-ca",
                sched_tls.ca,
                "--tls-cert",
                sched_tls.cert,
                "--tls-key",
                sched_tls.key,
                "--listen",
                args.listen,
                "--listen-tokens",
                args.listen_tokens,
                "--metrics-listen",
                args.metrics_listen,
                "--data-dir",
                str(data / "scheduler"),
                "--relay",
                str(relay_socket),
            ],
            "boruta-scheduler listening on ",
            data / "scheduler.log",
        )
        processes.append(scheduler)
        assert scheduler.stdout is not None
        tokens = scheduler.stdout.readline().removeprefix(TOKENS_READY).strip()
        metrics = scheduler.stdout.readline().removeprefix(METRICS_READY).strip()
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
        print(
            f"\nboruta farm is up: scheduler on {address} (TLS), {args.boards} boards IDLE "
            f"(state and logs in {args.data_dir}/)\n{boards}\n\n"
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
            "The SSH tunnels are boruta-relay's: an ssh session stays up while the scheduler\n"
            "restarts.\n"
            "Prometheus metrics (docs/metrics.md), shown to the farm's certificates:\n"
            f"    curl --cacert {admin_tls.ca} --cert {admin_tls.cert} --key {admin_tls.key} "
            f"https://{metrics}/metrics\n\n"
            "Ctrl-C stops the farm.",
            flush=True,
        )
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # one clean stop, not one per keypress
        print("stopping the farm ...", flush=True)
        for proc in reversed(processes):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(processes):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if socket_dir:
            shutil.rmtree(socket_dir, ignore_errors=True)
        sshd.stop()


if __name__ == "__main__":
    main()
