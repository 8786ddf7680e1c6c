"""SSH to a job's board with paramiko: commands with streamed output, a shell, SFTP copies
and port forwards, all with the job's key and through the scheduler's tunnel."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import select
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from boruta_client.errors import CommandTimeout, HostKeyMismatch, SSHError
from boruta_client.types import Access

# paramiko (and the invoke and cryptography it loads) costs a tenth of a second or more at
# start-up: it is imported where a connection is made or used, so that programs and
# schedctl commands that never open SSH do not load it.
if TYPE_CHECKING:
    import paramiko

log = logging.getLogger(__name__)

Sink = Callable[[bytes], None]
_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command on the board ended and what it printed."""

    command: str
    exit_status: int
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def output(self) -> str:
        """Standard output as text (undecodable bytes replaced)."""
        return self.stdout.decode(errors="replace")


def command_line(command: str | Sequence[str]) -> str:
    """A command for the remote shell; a sequence is quoted word by word."""
    return command if isinstance(command, str) else shlex.join(command)


class BoardSSH:
    """One SSH connection to a job's board; close it (or use ``with``) when done."""

    def __init__(self, access: Access, *, connect_timeout: float = 15.0) -> None:
        import paramiko

        from boruta_client._host_keys import not_the_board, trust_board_host_keys

        self.access = access
        try:
            key = paramiko.RSAKey.from_private_key(io.StringIO(access.private_key_pem))
        except paramiko.SSHException as exc:
            raise SSHError(f"the job's private key cannot be read: {exc}") from None
        self._client = paramiko.SSHClient()
        trust_board_host_keys(self._client, access)
        try:
            self._client.connect(
                access.host,
                access.port,
                access.username,
                pkey=key,
                timeout=connect_timeout,
                banner_timeout=connect_timeout,
                auth_timeout=connect_timeout,
                look_for_keys=False,
                allow_agent=False,
            )
        except HostKeyMismatch:
            self._client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            # A key of a type the board has, but not the board's key of that type.
            self._client.close()
            raise not_the_board(access.known_hosts_name, exc.key) from None
        except (OSError, paramiko.SSHException) as exc:
            self._client.close()  # paramiko keeps the transport of a failed login open
            raise SSHError(
                f"cannot log in as {access.username} at {access.host}:{access.port}: {exc}"
            ) from None
        self._sftp: paramiko.SFTPClient | None = None
        self._forwards: list[PortForward] = []

    @property
    def transport(self) -> paramiko.Transport:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise SSHError("the SSH connection to the board is closed (did the job end?)")
        return transport

    def close(self) -> None:
        for forward in self._forwards:
            forward.close()
        if self._sftp is not None:
            self._sftp.close()
        self._client.close()

    def __enter__(self) -> BoardSSH:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- commands

    def run(
        self,
        command: str | Sequence[str],
        *,
        stdout: Sink | None = None,
        stderr: Sink | None = None,
        input: bytes | None = None,
        timeout: float | None = None,
        pty: bool = False,
    ) -> CommandResult:
        """Run a command, streaming its output to the sinks as it comes; never raises for a
        non-zero exit status (see ``CommandResult.ok``). CommandTimeout after ``timeout``."""
        import paramiko

        line = command_line(command)
        started = time.monotonic()
        give_up = None if timeout is None else started + timeout
        try:
            channel = self.transport.open_session()
            if pty:
                channel.get_pty()
            channel.exec_command(line)
            if input:
                channel.sendall(input)
            channel.shutdown_write()
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"cannot start {line!r} on the board: {exc}") from None
        out, err = bytearray(), bytearray()
        with channel:
            while True:
                moved = False
                if channel.recv_ready():
                    data = channel.recv(_CHUNK)
                    out += data
                    moved = True
                    if stdout is not None:
                        stdout(data)
                if channel.recv_stderr_ready():
                    data = channel.recv_stderr(_CHUNK)
                    err += data
                    moved = True
                    if stderr is not None:
                        stderr(data)
                if give_up is not None and time.monotonic() > give_up:
                    raise CommandTimeout(
                        f"{line!r} did not finish within {timeout:g} s; its channel was closed"
                    )
                if moved:
                    continue
                # The exit status may come before the last output: done only at end of file.
                ended = channel.exit_status_ready() and (channel.eof_received or channel.closed)
                if ended and not (channel.recv_ready() or channel.recv_stderr_ready()):
                    break
                # The channel's fileno only wakes for stdout; the timeout catches stderr.
                select.select([channel], [], [], 0.05)
            status = channel.recv_exit_status()
        return CommandResult(line, status, bytes(out), bytes(err), time.monotonic() - started)

    def shell(self, stdin: IO[Any] | None = None, stdout: IO[Any] | None = None) -> int:
        """An interactive shell bridged to this terminal; returns its exit status."""
        import paramiko

        try:
            return self._shell(stdin or sys.stdin, stdout or sys.stdout)
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"the shell on the board broke off: {exc}") from None

    def _shell(self, stdin: IO[Any], stdout: IO[Any]) -> int:
        import termios
        import tty

        in_fd, out_fd = stdin.fileno(), stdout.fileno()
        channel = self.transport.open_session()
        interactive = os.isatty(in_fd)
        if interactive:
            cols, rows = os.get_terminal_size(out_fd if os.isatty(out_fd) else in_fd)
            channel.get_pty(os.environ.get("TERM", "xterm"), cols, rows)
        channel.invoke_shell()
        saved = termios.tcgetattr(in_fd) if interactive else None
        old_handler = None
        if interactive:
            tty.setraw(in_fd)

            def resize(*_: object) -> None:
                cols, rows = os.get_terminal_size(in_fd)
                channel.resize_pty(cols, rows)

            old_handler = signal.signal(signal.SIGWINCH, resize)
        try:
            with channel:
                sources: list[Any] = [channel, in_fd]
                while True:
                    ready, _, _ = select.select(sources, [], [], 0.1)
                    if channel in ready or channel.recv_ready():
                        data = channel.recv(_CHUNK)
                        if not data:
                            break
                        os.write(out_fd, data)
                    if channel.recv_stderr_ready():
                        os.write(out_fd, channel.recv_stderr(_CHUNK))
                    if in_fd in ready:
                        data = os.read(in_fd, _CHUNK)
                        if data:
                            channel.sendall(data)
                        else:
                            channel.shutdown_write()
                            sources.remove(in_fd)  # at end of file it would wake select forever
                    if channel.exit_status_ready() and not channel.recv_ready():
                        break
                return channel.recv_exit_status()
        finally:
            if saved is not None:
                termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
            if old_handler is not None:
                signal.signal(signal.SIGWINCH, old_handler)

    # ----------------------------------------------------------------- transfers

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self._client.open_sftp()
        return self._sftp

    def put(self, local: str | os.PathLike[str], remote: str) -> None:
        """Copy a local file to the board, keeping its mode bits."""
        import paramiko

        path = Path(local)
        if not path.is_file():
            raise SSHError(f"{path} is not a file; only files can be copied")
        try:
            self.sftp.put(str(path), remote)
            self.sftp.chmod(remote, path.stat().st_mode & 0o777)
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"cannot copy {path} to the board's {remote}: {exc}") from None

    def get(self, remote: str, local: str | os.PathLike[str]) -> Path:
        """Copy a file from the board; local directories are created as needed."""
        import paramiko

        path = Path(local)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.sftp.get(remote, str(path))
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"cannot copy the board's {remote} to {path}: {exc}") from None
        return path

    # ----------------------------------------------------------------- forwards

    def forward(
        self, remote_port: int, *, remote_host: str = "127.0.0.1", local_port: int = 0
    ) -> PortForward:
        """Listen on a loopback port here and carry each connection to remote_host:remote_port
        as seen from the board; ``local_port`` 0 picks a free one."""
        forward = PortForward(self.transport, remote_host, remote_port, local_port)
        self._forwards.append(forward)
        return forward


class PortForward:
    """A local listener whose connections are carried to a port on the board's side."""

    def __init__(
        self, transport: paramiko.Transport, remote_host: str, remote_port: int, local_port: int
    ) -> None:
        self._transport = transport
        self.remote = (remote_host, remote_port)
        self._server = socket.create_server(("127.0.0.1", local_port))
        self.local_port: int = self._server.getsockname()[1]
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._links: list[tuple[socket.socket, paramiko.Channel]] = []
        threading.Thread(target=self._accept, name="boruta-forward", daemon=True).start()

    def _accept(self) -> None:
        import paramiko

        while not self._closed.is_set():
            try:
                conn, peer = self._server.accept()
            except OSError:
                return
            try:
                channel = self._transport.open_channel("direct-tcpip", self.remote, peer)
            except (OSError, paramiko.SSHException) as exc:
                log.warning(
                    "forward refused by the board", extra={"remote": self.remote, "why": str(exc)}
                )
                conn.close()
                continue
            with self._lock:
                self._links.append((conn, channel))
            threading.Thread(target=_pump, args=(conn, channel), daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        # close() alone does not wake a thread blocked in accept(); shutdown() does.
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        with self._lock:
            links, self._links = self._links, []
        for conn, channel in links:
            channel.close()
            conn.close()

    def __enter__(self) -> PortForward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pump(conn: socket.socket, channel: paramiko.Channel) -> None:
    """Copy bytes both ways; an end of file on one side is passed on as a half-close, so
    a service that answers after reading everything still gets to answer."""
    local_open = remote_open = True
    try:
        while local_open or remote_open:
            watched = [
                s.fileno() for s, is_open in ((conn, local_open), (channel, remote_open)) if is_open
            ]
            ready, _, _ = select.select(watched, [], [])
            if local_open and conn.fileno() in ready:
                data = conn.recv(_CHUNK)
                if data:
                    channel.sendall(data)
                else:
                    local_open = False
                    channel.shutdown_write()
            if remote_open and channel.fileno() in ready:
                data = channel.recv(_CHUNK)
                if data:
                    conn.sendall(data)
                else:
                    remote_open = False
                    conn.shutdown(socket.SHUT_WR)
    except (OSError, ValueError):
        pass  # closed under our feet by PortForward.close()
    finally:
        channel.close()
        conn.close()
