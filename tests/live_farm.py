"""A whole farm in processes, for tests that drive it the way users do (client library,
schedctl): a scheduler process, one dryad process with several boards, and a real sshd."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from access_kit import DryadProcess
from boruta.tls import TlsFiles
from boruta_client import BorutaError, Client, RequestState, WorkerState
from boruta_dryad.devsshd import DevSshd
from farm_kit import SchedulerProcess
from pki_kit import FarmPki
from system_kit import INTERRUPTIBLE, remove_users, require_sshd, unique_prefix


def boards_toml(
    scheduler: str,
    sshd: str,
    state: Path,
    prefix: str,
    boards: Mapping[str, Mapping[str, str]],
    host_keys: Path,
    tls: TlsFiles | None = None,
    settings: str = "",
) -> str:
    """The dryad's TOML; settings are more top-level lines of it."""
    text = f'scheduler = "{scheduler}"\nlisten = "127.0.0.1:0"\nstate_dir = "{state}"\n'
    text += settings
    if tls is None:
        text += "plaintext = true\n"
    else:
        text += f'tls_ca = "{tls.ca}"\ntls_cert = "{tls.cert}"\ntls_key = "{tls.key}"\n'
    text += 'key_bits = 2048\nlog_level = "DEBUG"\n'
    for i, (uuid, caps) in enumerate(boards.items()):
        caps_toml = ", ".join(f'{k} = "{v}"' for k, v in caps.items())
        text += (
            f'\n[[board]]\nname = "b{i}"\nuuid = "{uuid}"\ncaps = {{ {caps_toml} }}\n'
            f'ssh_address = "{sshd}"\nssh_host_keys = ["{host_keys}"]\n'
            f'user_prefix = "{prefix}{i}x"\n'
            f'backend_options = {{ record_file = "{state}/b{i}.record" }}\n'
        )
    return text


class LiveFarm:
    """Addresses and clients of a running farm."""

    def __init__(
        self, address: str, boards: Sequence[str], sshd: DevSshd, pki: FarmPki | None = None
    ) -> None:
        self.address = address
        self.boards = list(boards)
        self.sshd = sshd
        self.pki = pki
        self.log_files: list[Path] = []
        self.token_address = ""
        self.dryad_address = ""
        self.metrics_address = ""
        self.dryad_metrics_address = ""

    def client(self, user: str = "alice", groups: Sequence[str] = ()) -> Client:
        if self.pki is not None:
            return Client(self.address, tls=self.pki.user(user, *groups))
        return Client(self.address, user=user, groups=groups)

    def admin(self) -> Client:
        if self.pki is not None:
            return Client(self.address, tls=self.pki.admin())
        return Client(self.address, user="root", admin=True)

    def reset(self) -> None:
        """End whatever a test left open (a failed test may leave a job RUNNING, or a
        stack), so the next test starts on idle boards instead of waiting for a job
        timeout."""
        live = (RequestState.WAITING, RequestState.IN_PROGRESS)
        with self.admin() as admin:
            for stack in admin.list_stacks():
                admin.delete_stack(stack.name)
            for request in admin.list_requests(states=live):
                with contextlib.suppress(BorutaError):
                    admin.close_request(request.id)
        self.wait_idle()

    def wait_idle(self, timeout: float = 60) -> None:
        """Until every board is IDLE again (e.g. after the previous test's jobs)."""
        give_up = time.monotonic() + timeout
        with self.admin() as admin:
            while True:
                workers = admin.list_workers(uuids=self.boards)
                states = {w.uuid: w.state for w in workers}
                if all(states.get(b) is WorkerState.IDLE for b in self.boards):
                    return
                if time.monotonic() > give_up:
                    why = {w.uuid: f"{w.state.name} ({w.reason})" for w in workers}
                    raise AssertionError(f"boards not IDLE: {why}")
                time.sleep(0.05)


def lease_holder(address: str, lease_options: str = "") -> tuple[subprocess.Popen[str], int]:
    """A client process (alice) that leases a board with caps board=rpi4 and the given
    keyword arguments of client.lease (Python source), then holds it until it is stopped
    or killed; returns it and its request id."""
    script = textwrap.dedent(
        f"""
        import threading
        from datetime import timedelta
        from boruta_client import Client
        with Client({address!r}, user="alice") as client:
            with client.lease({{"board": "rpi4"}}, {lease_options}) as board:
                print(board.request.id, flush=True)
                threading.Event().wait()
        """
    )
    # A suite run as a background job inherits SIGINT ignored; the tests interrupt this child.
    errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 - read below if the child fails
    child = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE + script],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.strip():
        child.wait()
        errors.seek(0)
        raise AssertionError(f"the lease holder ended ({child.returncode}): {errors.read()}")
    return child, int(line)


@contextmanager
def live_farm(
    tmp: Path,
    boards: Mapping[str, Mapping[str, str]],
    *scheduler_options: str,
    pki: FarmPki | None = None,
    dryad_settings: str = "",
) -> Iterator[LiveFarm]:
    """Start the farm, put every board into service, and tear it all down afterwards.
    With a PKI, every link is TLS: the scheduler, the dryad and the clients get certificates.
    dryad_settings are more top-level lines of the dryad's TOML."""
    require_sshd()
    prefix = unique_prefix()
    sshd = DevSshd(workdir=str(tmp / "sshd"))
    sshd.start()
    tls_options: list[str] = []
    dryad_tls = None
    if pki is not None:
        files = pki.scheduler()
        tls_options = ["--tls-ca", files.ca, "--tls-cert", files.cert, "--tls-key", files.key]
        tls_options += ["--listen-tokens", "127.0.0.1:0"]
        dryad_tls = pki.dryad("lab-pc", *boards)
    scheduler = SchedulerProcess(
        tmp / "scheduler", "--public-host", "127.0.0.1", *tls_options, *scheduler_options
    )
    dryad: DryadProcess | None = None
    try:
        address = scheduler.start()
        config = tmp / "dryad.toml"
        config.write_text(
            boards_toml(
                address,
                sshd.address,
                tmp / "dryad",
                prefix,
                boards,
                sshd.host_key_public,
                dryad_tls,
                dryad_settings,
            )
        )
        dryad = DryadProcess(config)
        dryad.start()
        farm = LiveFarm(address, list(boards), sshd, pki)
        farm.log_files = [scheduler.log_path, dryad.log]
        farm.token_address = scheduler.token_address
        farm.dryad_address = dryad.address
        farm.metrics_address = scheduler.metrics_address
        farm.dryad_metrics_address = dryad.metrics_address
        with farm.admin() as admin:
            give_up = time.monotonic() + 30
            while {w.uuid for w in admin.list_workers()} < set(boards):
                assert time.monotonic() < give_up, "the dryad did not register its boards"
                time.sleep(0.05)
            for uuid in boards:
                admin.set_worker_state(uuid, WorkerState.IDLE, "test farm")
        farm.wait_idle()
        yield farm
    finally:
        # Each part is stopped even if stopping another failed, so no process outlives
        # the test run.
        with contextlib.ExitStack() as teardown:
            teardown.callback(remove_users, prefix)
            teardown.callback(sshd.stop)
            if scheduler.proc is not None:
                teardown.callback(scheduler.stop)
            if dryad is not None:
                teardown.callback(dryad.stop)
