"""The pure scheduling core: queue, matcher, workers, jobs and timers as one state machine.

Nothing here imports grpc, a database or asyncio, or reads a clock: callers pass ``now``.
Commands are the methods of :class:`Core`; what they change, and the dryad calls they
want made, are collected and handed out by :meth:`Core.drain`.
"""

from boruta_scheduler.core.outbox import (
    Changes,
    CloseTunnel,
    DryadCall,
    DryadCallKind,
    OpenTunnel,
    TunnelCall,
)
from boruta_scheduler.core.policy import Policy
from boruta_scheduler.core.scheduler import Core, Snapshot

__all__ = [
    "Changes",
    "CloseTunnel",
    "Core",
    "DryadCall",
    "DryadCallKind",
    "OpenTunnel",
    "Policy",
    "Snapshot",
    "TunnelCall",
]
