"""Binding a gRPC server's port with an error a person can act on: grpcio says only
"Failed to bind", so the operating system's reason is asked for separately."""

from __future__ import annotations

import errno
import socket

import grpc

from boruta.address import AddressError, split_host_port


class CannotListen(Exception):
    """A port could not be bound; the message names the address, the setting and why."""


def add_port(
    server: grpc.aio.Server,
    address: str,
    credentials: grpc.ServerCredentials | None,
    setting: str,
) -> int:
    """Bind address on server (plaintext when credentials is None) and return the port;
    setting names where the address came from, e.g. "--listen or BORUTA_LISTEN"."""
    # Tried first so that a busy port costs one line, not grpcio's log lines as well.
    reason = bind_failure(address)
    if reason is None:
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError:
            port = 0
        if port:
            return port
        reason = bind_failure(address) or "gRPC could not bind it (GRPC_VERBOSITY=debug says why)"
    raise CannotListen(f"cannot listen on {address} ({setting}): {reason}")


def bind_failure(address: str) -> str | None:
    """Why address cannot be bound, found by trying it with a plain socket; None when at
    least one of the addresses it resolves to can be bound (gRPC needs only one)."""
    try:
        host, port = split_host_port(address, listen=True)
    except AddressError as exc:
        return str(exc)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return f"cannot resolve {host!r} ({exc})"
    reasons = []
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # As grpcio binds: a port in TIME_WAIT is free, one someone listens on is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                reasons.append(_reason(exc))
                continue
        return None
    return reasons[0] if reasons else f"{host!r} resolves to no address"


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the port is in use by another process; stop it or choose another port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "the address is not one of this host's"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    return exc.strerror or str(exc)
