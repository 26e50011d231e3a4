"""Prometheus text exposition of the bot's queues and counters (``GET /metrics``).

The numbers already live in the components (dispatcher stats, output queue
depths, outbox stats, webhook counters).  ``Metrics`` reads them at scrape
time through plain callables, so nothing is counted twice and a component that
is not running simply contributes nothing.  prometheus-client renders the
text format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..metrics import Family

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["CONTENT_TYPE", "Family", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


MetricsSource = Callable[[], list[Family]]


def _collector(sources: list[MetricsSource]) -> Any:
    # prometheus-client (~5 MB with http.server and wsgiref) is loaded at the
    # first scrape, not by every bot that is never scraped.
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector

    class _Collector(Collector):
        def collect(self) -> Iterator[Metric]:
            for source in sources:
                for fam in source():
                    metric: GaugeMetricFamily | CounterMetricFamily
                    if fam.kind == "counter":
                        metric = CounterMetricFamily(fam.name, fam.help, labels=list(fam.labels))
                    else:
                        metric = GaugeMetricFamily(fam.name, fam.help, labels=list(fam.labels))
                    for values, value in fam.samples.items():
                        metric.add_metric(list(values), value)
                    yield metric

    return _Collector()


class Metrics:
    """A registry of sources; ``render()`` gives the exposition text."""

    def __init__(self) -> None:
        self._sources: list[MetricsSource] = []
        self._registry: Any = None

    def add(self, source: MetricsSource) -> None:
        self._sources.append(source)

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(_collector(self._sources))
        data: bytes = generate_latest(self._registry)
        return data
