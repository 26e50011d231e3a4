"""The binding table, its Events, masks, flags and the dispatcher."""

from .dispatcher import Dispatcher
from .event import Event
from .registry import BIND_TYPES, Binding, BindingTable

__all__ = ["BIND_TYPES", "Binding", "BindingTable", "Dispatcher", "Event"]
