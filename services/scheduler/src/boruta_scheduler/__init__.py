"""boruta scheduler: queues requests for boards, matches them to workers and runs jobs.

The package root holds only shared types, errors, list queries, config and ``main``; each
concern has its own subpackage: ``core`` (pure), ``app`` (use cases and the engine, the one
state owner), ``store``, ``rpc`` (servicers and the server wiring), ``dryads``, ``tunnels``.
"""

from boruta_scheduler.errors import BorutaError

__all__ = ["BorutaError"]
__version__ = "0.1.0"
