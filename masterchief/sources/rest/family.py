"""The ``rest`` source family: ``rest:`` entries, one poller each, sharing
the runtime's HTTP session."""

from __future__ import annotations

from collections.abc import Sequence

from masterchief.config.schema import Config, RestPollConfig

from ..base import SourceDeps
from .poller import RestPoller

__all__ = ["FAMILY", "RestFamily"]


class RestFamily:
    """``rest:`` entries, one poller each, sharing the runtime's HTTP session."""

    name = "rest"
    section = "rest"
    bind_types = ("rest",)

    def entries(self, config: Config) -> Sequence[RestPollConfig]:
        return config.rest

    def build(self, entry: RestPollConfig, deps: SourceDeps) -> RestPoller:
        return RestPoller(entry, store=deps.store, http=deps.http)


FAMILY = RestFamily()
