"""What the scheduler's and the dryad's metrics share that needs no third-party import
(their processes load prometheus-client and aiohttp only when a metrics port is configured):
the checks of the metrics options, latency buckets, and histograms kept without locks.

The HTTP port itself is boruta.metrics_http.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from boruta.address import split_host_port
from boruta.tls import TlsFiles, is_loopback

# Seconds: from a fast gRPC call (a tenth of a millisecond) to a slow dryad call.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class MetricsSetupError(ValueError):
    """The metrics options do not make a port anyone may scrape safely; says what to set."""


def check_options(listen: str, tls: TlsFiles | None, anonymous: bool, setting: str) -> None:
    """Refuse option sets that would serve metrics to nobody or to anyone off the host."""
    split_host_port(listen, setting, listen=True)
    if tls is None:
        if not is_loopback(listen):
            raise MetricsSetupError(
                f"{setting} is {listen}, but without TLS the metrics port serves only on "
                "loopback: configure TLS, or listen on 127.0.0.1"
            )
        if not anonymous:
            raise MetricsSetupError(
                f"{setting} without TLS: no scrape could show a certificate or a token; set "
                "metrics_anonymous = true (loopback demos and tests) or configure TLS"
            )


class LoopHistogram:
    """One histogram's counts, updated without a lock: every update and every read happens
    on the event loop's thread (the scrape too, see MetricsServer)."""

    __slots__ = ("buckets", "counts", "total")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs, +Inf last, as Prometheus wants them."""
        pairs: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            pairs.append((_go_float(bound), running))
        return pairs


class LoopHistograms:
    """A histogram family whose children (one per label values) are LoopHistograms; a
    prometheus-client collector (register it in a CollectorRegistry)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.buckets = tuple(float(bound) for bound in buckets)
        self.children: dict[tuple[str, ...], LoopHistogram] = {}

    def child(self, *values: str) -> LoopHistogram:
        """The histogram of these label values, made on first use; callers keep it."""
        found = self.children.get(values)
        if found is None:
            found = self.children[values] = LoopHistogram(self.buckets)
        return found

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, histogram in sorted(self.children.items()):
            family.add_metric(list(values), histogram.cumulative(), histogram.total)
        yield family

    def describe(self) -> Iterable[Any]:
        return []


def _go_float(bound: float) -> str:
    """A bucket bound as Prometheus writes it: 0.5, 60.0, +Inf."""
    return "+Inf" if bound == float("inf") else repr(float(bound))
