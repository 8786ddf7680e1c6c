"""host:port addresses, read and written one way by every boruta process: an IPv6 host in
brackets ([::1]:50051), a port from 1 to 65535, or 0 where a listen address may ask for
any free port. Pure: no sockets, no name lookups."""

from __future__ import annotations

# Hosts that mean "every interface": fine to listen on, never an address to dial.
WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})
_SHOWN = 80


class AddressError(ValueError):
    """An address that is not host:port; the message names the setting and shows the fix."""


def split_host_port(
    address: str, what: str = "address", *, listen: bool = False
) -> tuple[str, int]:
    """(host, port) of address, the host without IPv6 brackets. what names the setting in
    errors; listen allows port 0 (any free port) and an empty host (every interface)."""
    example = "127.0.0.1:50051 or [::1]:50051"
    head, sep, port_text = address.rpartition(":")
    if not sep:
        raise AddressError(f"{what} must be host:port, e.g. {example}; got {_shown(address)}")
    host = head
    if head.startswith("[") or head.endswith("]"):
        if not (head.startswith("[") and head.endswith("]")) or ":" not in head:
            raise AddressError(
                f"{what} {_shown(address)}: brackets are only for IPv6 hosts, e.g. [::1]:50051"
            )
        host = head[1:-1]
    elif ":" in head:
        raise AddressError(
            f"{what} {_shown(address)}: write an IPv6 host in brackets, e.g. [{head}]:{port_text}"
        )
    if not host and not listen:
        raise AddressError(f"{what} must be host:port, e.g. {example}; got {_shown(address)}")
    low = 0 if listen else 1
    # ASCII digits only, and few: int() refuses thousands of digits, and "²" isdigit().
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise AddressError(f"{what} must be host:port, e.g. {example}; got {_shown(address)}")
    port = int(port_text)
    if not low <= port <= 65535:
        free = " (0: any free port)" if listen else ""
        raise AddressError(f"{what} {_shown(address)}: the port must be {low}-65535{free}")
    return host, port


def check_dial_address(
    address: str, what: str = "address", *, dialler: str = "the scheduler"
) -> tuple[str, int]:
    """(host, port) of an address that dialler is to dial: a port, and a host that is not
    a wildcard."""
    host, port = split_host_port(address, what)
    if host in WILDCARDS:
        raise AddressError(
            f"{what} {_shown(address)} is a wildcard; advertise a host {dialler} can dial"
        )
    return host, port


def join_host_port(host: str, port: int) -> str:
    """host:port, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_wildcard(host: str) -> bool:
    """Whether host (with or without IPv6 brackets) means every interface."""
    return host.removeprefix("[").removesuffix("]") in WILDCARDS


def _shown(text: str) -> str:
    # Addresses may come from untrusted callers: shown cut short, never whole.
    return repr(text) if len(text) <= _SHOWN else f"{text[:_SHOWN]!r}… ({len(text)} characters)"
