"""The ``rest`` source family: ``rest:`` entries, one poller each, sharing
the runtime's HTTP session."""

from __future__ import annotations

from ..base import ListFamily
from .poller import RestPoller

__all__ = ["FAMILY"]

FAMILY = ListFamily(
    "rest", ("rest",), lambda entry, deps: RestPoller(entry, store=deps.store, http=deps.http)
)
