"""The dryad's Prometheus metrics (docs/metrics.md): how long Prepare takes and what the
health checks find, per board, in a registry of the process's own."""

from __future__ import annotations

from collections.abc import Iterable

from boruta.metrics import LATENCY_BUCKETS
from prometheus_client import CollectorRegistry, Counter, Histogram

from boruta_dryad.health import Check


class DryadMetrics:
    """Every metric of one dryad process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.prepare_seconds = Histogram(
            "boruta_dryad_prepare_duration_seconds",
            "Time Prepare took (backend, job user and key), by board and result (ok, error)",
            ("worker", "result"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.healthchecks = Counter(
            "boruta_dryad_healthchecks",
            "Health check results by board, check name and result (ok, failed)",
            ("worker", "check", "result"),
            registry=self.registry,
        )

    def prepared(self, worker: str, seconds: float, ok: bool) -> None:
        self.prepare_seconds.labels(worker, "ok" if ok else "error").observe(seconds)

    def checked(self, worker: str, checks: Iterable[Check]) -> None:
        for check in checks:
            self.healthchecks.labels(worker, check.name, "ok" if check.ok else "failed").inc()
