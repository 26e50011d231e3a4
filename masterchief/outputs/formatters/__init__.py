"""Pure formatters: a provider's event name and parsed payload in, the
lines to announce out (``list[Announcement]``, usually one, often none).

They never raise on a malformed payload (missing keys, wrong types, nulls):
they give a degraded line or nothing and log why.  Every string taken from a
payload goes through ``common.clean`` (see there for the sanitising rule).
"""

from __future__ import annotations

from collections.abc import Callable

from .alertmanager import format_alertmanager
from .common import Announcement, clean
from .generic import format_generic, format_rest, format_rest_status
from .github import format_github
from .gitlab import format_gitlab
from .jenkins import format_jenkins
from .pagerduty import format_pagerduty

__all__ = [
    "PROVIDERS",
    "Announcement",
    "Formatter",
    "clean",
    "format_alertmanager",
    "format_generic",
    "format_github",
    "format_gitlab",
    "format_jenkins",
    "format_pagerduty",
    "format_rest",
    "format_rest_status",
]

Formatter = Callable[[str, object], list[Announcement]]

# Webhook sources with a formatter, keyed by the first part of the Event key
# (``github/push`` -> ``github``).  ``generic/<name>`` is formatted by name.
PROVIDERS: dict[str, Formatter] = {
    "github": format_github,
    "gitlab": format_gitlab,
    "jenkins": format_jenkins,
    "alertmanager": format_alertmanager,
    "pagerduty": format_pagerduty,
    "generic": format_generic,
}
