"""boruta scheduler: queues requests for boards, matches them to workers and runs jobs.

The package root holds only the shared types and errors; each concern has its own
subpackage (``core``, ``store``, ``rpc``, ``dryads``) and ``main`` wires them together.
"""

from boruta_scheduler.errors import BorutaError

__all__ = ["BorutaError"]
__version__ = "0.1.0"
