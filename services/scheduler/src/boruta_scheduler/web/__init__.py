"""The read-only web dashboard, served on the scheduler's HTTP port beside /metrics."""
