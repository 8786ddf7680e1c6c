"""Reading a live /metrics endpoint in tests: fetch, parse, and poll until a figure shows."""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping

from boruta.tls import TlsFiles
from prometheus_client.parser import text_string_to_metric_families

# (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def https(ca: str, client: TlsFiles | None = None) -> ssl.SSLContext:
    """A scraper's (or browser's) TLS: it checks the scheduler against the farm's CA, and
    shows client's certificate if given."""
    context = ssl.create_default_context(cafile=ca)
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


def scrape(
    address: str,
    *,
    context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    scheme = "https" if context is not None else "http"
    request = urllib.request.Request(f"{scheme}://{address}/metrics", headers=dict(headers or {}))
    with urllib.request.urlopen(request, timeout=30, context=context) as reply:
        return str(reply.read().decode())


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def families(text: str) -> set[str]:
    """Every metric name a scrape shows: families and the sample names of each
    (a histogram's _bucket, _count, _sum; a counter's _total)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        # A family with no sample yet still declares these (e.g. no board in any group).
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    return names


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of name's samples whose labels include these."""
    wanted = set(labels.items())
    return sum(v for (n, pairs), v in found.items() if n == name and wanted <= set(pairs))


def poll(
    address: str,
    until: Callable[[Samples], bool],
    what: str,
    timeout: float = 120,
    context: ssl.SSLContext | None = None,
) -> Samples:
    """Scrape until until(samples) holds; fails after timeout with the last figures."""
    give_up = time.monotonic() + timeout
    while True:
        found = samples(scrape(address, context=context))
        if until(found):
            return found
        if time.monotonic() > give_up:
            raise AssertionError(f"metrics never showed {what}: {sorted(found.items())}")
        time.sleep(0.05)
