"""Metric values every component exports (rendered by ``http/metrics.py``).

A component's ``metrics()`` returns ``Family`` values read at scrape time from
the counters it already keeps, so nothing is counted twice.  This module is
the bottom layer's: sources, outputs, the IRC transport and the dispatcher
all build ``Family`` values without importing the web server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Family"]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric: ``samples`` maps label values (in ``labels`` order) to a value."""

    name: str
    help: str
    kind: str  # "gauge" | "counter"
    labels: tuple[str, ...] = ()
    samples: Mapping[tuple[str, ...], float] = field(default_factory=dict)
