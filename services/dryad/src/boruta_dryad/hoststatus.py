"""Resource usage of the host, sent with every heartbeat."""

from __future__ import annotations

import os

from boruta.v1 import types_pb2


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return values


def host_status(disk_path: str = "/home") -> types_pb2.HostStatus:
    """Load, memory, free disk and uptime, as far as the host tells."""
    status = types_pb2.HostStatus(load_1m=os.getloadavg()[0])
    memory = _meminfo()
    status.memory_total_bytes = memory.get("MemTotal", 0)
    status.memory_available_bytes = memory.get("MemAvailable", 0)
    try:
        stat = os.statvfs(disk_path)
        status.disk_free_bytes = stat.f_bavail * stat.f_frsize
    except OSError:
        pass
    try:
        with open("/proc/uptime") as f:
            status.uptime.FromNanoseconds(int(float(f.read().split()[0]) * 1e9))
    except (OSError, ValueError):
        pass
    return status
