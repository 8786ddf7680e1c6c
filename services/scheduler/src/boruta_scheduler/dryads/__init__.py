"""Client side of the Dryad service: the scheduler's calls to the agents on the boards."""

from boruta_scheduler.dryads.pool import DryadCallError, DryadPool

__all__ = ["DryadCallError", "DryadPool"]
