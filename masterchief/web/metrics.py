"""Prometheus text exposition of the bot's queues and counters (``GET /metrics``).

The numbers already live in the components (dispatcher stats, output queue
depths, outbox stats, webhook counters).  ``Metrics`` reads them at scrape
time through plain callables, so nothing is counted twice and a component that
is not running simply contributes nothing.  prometheus-client renders the
text format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Family", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Family:
    """One metric: ``samples`` maps label values (in ``labels`` order) to a value."""

    name: str
    help: str
    kind: str  # "gauge" | "counter"
    labels: tuple[str, ...] = ()
    samples: Mapping[tuple[str, ...], float] = field(default_factory=dict)


Source = Callable[[], list[Family]]


class _Collector(Collector):
    def __init__(self, sources: list[Source]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            for fam in source():
                metric: GaugeMetricFamily | CounterMetricFamily
                if fam.kind == "counter":
                    metric = CounterMetricFamily(fam.name, fam.help, labels=list(fam.labels))
                else:
                    metric = GaugeMetricFamily(fam.name, fam.help, labels=list(fam.labels))
                for values, value in fam.samples.items():
                    metric.add_metric(list(values), value)
                yield metric


class Metrics:
    """A registry of sources; ``render()`` gives the exposition text."""

    def __init__(self) -> None:
        self._sources: list[Source] = []
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(self._sources))

    def add(self, source: Source) -> None:
        self._sources.append(source)

    def render(self) -> bytes:
        return generate_latest(self._registry)
