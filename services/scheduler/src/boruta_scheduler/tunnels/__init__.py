"""Per-job TCP forwarders on the scheduler, from a public port to the board's SSH server."""

from boruta_scheduler.tunnels.forwarder import TunnelError, Tunnels

__all__ = ["TunnelError", "Tunnels"]
