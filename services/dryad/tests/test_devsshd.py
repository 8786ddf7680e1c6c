"""boruta-devsshd serves every connection while its process changes its own environment."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path

from access_kit import running_sshd

# Enough that, when sshd exec'ed with the live environment, about one in ten of them failed
# with EFAULT beside the writer below; each costs one short-lived sshd.
CONNECTIONS = 60


def test_every_connection_gets_an_sshd_while_another_thread_changes_the_environment(
    tmp_path: Path,
) -> None:
    # What pytest does on the main thread around every test phase while a farm's sshd
    # accepts a dryad's health checks: set a variable, then unset it.
    variable = f"BORUTA_TEST_{uuid.uuid4().hex}"
    banners: list[bytes] = []
    with running_sshd(tmp_path / "sshd") as server:
        host, _, port = server.address.rpartition(":")

        def connect() -> None:
            for _ in range(CONNECTIONS):
                with socket.create_connection((host, int(port))) as conn:
                    # A connection whose sshd did not start is closed unanswered: b"".
                    banners.append(conn.makefile("rb").readline())

        connector = threading.Thread(target=connect, name="connector")
        connector.start()
        try:
            while connector.is_alive():
                os.environ[variable] = "set"
                del os.environ[variable]
        finally:
            connector.join()
            os.environ.pop(variable, None)
    unanswered = [i for i, line in enumerate(banners) if not line.startswith(b"SSH-2.0-")]
    assert len(banners) == CONNECTIONS, "the connecting thread failed; see its traceback"
    assert not unanswered, (
        f"{len(unanswered)} of {CONNECTIONS} connections got no sshd; see {server.workdir}"
    )
