"""THE list of source families: every kind of input the bot reads.

Adding a kind of source (Kafka, a database, a metric backend) means a
folder under ``sources/`` with a ``FAMILY`` and one line here -- nothing
else: the runtime builds, runs, supervises, reconfigures, reports
(``!sources``) and exports metrics for every family in this list alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config.schema import Config, extended
from .base import SourceFamily
from .clock import FAMILY as CLOCK
from .files.watcher import FAMILY as FILES
from .logs.tail import FAMILY as LOGS
from .replay import FAMILY as REPLAY
from .rest.family import FAMILY as REST
from .webhooks.intake import FAMILY as WEBHOOKS

__all__ = ["FAMILIES", "config_schema"]

FAMILIES: tuple[SourceFamily, ...] = (CLOCK, REPLAY, WEBHOOKS, REST, FILES, LOGS)


def config_schema(families: Sequence[SourceFamily] = FAMILIES) -> type[Config]:
    """The configuration's model with every section these families bring."""
    return extended({f.section: f.entry_model for f in families if f.entry_model is not None})
