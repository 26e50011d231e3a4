"""Does a module's run reach the bot's own host?  And may this request do that?

How this works.  The bot's host holds every credential the bot has, so a
module that would change it (packages, sudoers, sysctl, users) needs two
things before it runs, in either mode: ``allow_bot_host: true`` in its
module config (the operator's decision, per module) and a requester who is
a global owner (+n).  ``check`` enforces that and raises a one-line
``UserError`` that says what was found and what to set.  It runs when a job
is requested, and again right before a job that waited for approval starts
(``JobManager``): the module config for the job's environment
(``allow_bot_host``, host overrides) and the inventory are read afresh then,
so an edit made while the job waited is not bypassed.  The requester's +n is
judged at the request only (the approvers vouched for that request).

Where a run goes, per kind (``reach``):

- **ansible**: the hosts of the inventory the module names for the
  environment, read by the real ``ansible-inventory --list`` (INI, YAML,
  ``group_vars``, ranges and dynamic inventories alike), with the module
  config and parameters laid over each host's variables the way extra vars
  win.  A host is the bot's host when it connects locally
  (``ansible_connection: local``), or its address (``ansible_host``, else
  its name) is a loopback or unspecified address, ``localhost``, this
  machine's host name, an address that name resolves to, or an address of
  one of its network interfaces.  A
  value still holding a Jinja template cannot be judged and counts as the
  bot's host.  No inventory means ``-i localhost, -c local``: the bot's
  host.  An inventory without hosts is refused with a line naming it.  The
  runner adds ``--limit all``, so Ansible's implicit localhost (a play whose
  pattern names ``localhost`` that the inventory does not list) is never
  targeted either.
- **script**: a script always runs on the bot's host, as the bot's user.  It
  counts as changing that host unless its manifest states otherwise
  (``script: {changes_bot_host: false}``: it only calls APIs or other
  machines).
- **terraform**, **kubernetes**: they act on the cloud or cluster their
  credentials name; the tool itself runs on the bot's host as it does for
  Ansible's controller.  Not subject to the rule.

What this cannot see: a playbook that chooses ``connection: local`` or
``delegate_to: localhost`` itself, a script that says it changes nothing
locally and does, a DNS name of this machine other than its host name, an
address that reaches it through NAT.
Those are the module author's code, reviewed like any code the bot runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import secrets
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masterchief.config.secrets import Secret
from masterchief.deploy.kinds.ansible import ansible_inventory
from masterchief.deploy.kinds.base import MARKER, SAFE_PATH, VENV_BIN, find_tool
from masterchief.deploy.manifest import Module
from masterchief.deploy.module_config import BOT_HOST_SETTING, allows_bot_host
from masterchief.deploy.process import run_process
from masterchief.errors import UserError

__all__ = [
    "Reach",
    "check",
    "inventory_hosts",
    "local_ipv4",
    "local_ipv6",
    "local_reason",
    "reach",
    "this_host",
]

log = logging.getLogger(__name__)

INVENTORY_TIMEOUT_S = 60.0
_LOCAL_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "localhost6", "localhost6.localdomain6",
     "ip6-localhost", "ip6-loopback"}
)  # fmt: skip
# Extra vars win over inventory variables: these in module config or
# parameters move every host of the run.
_OVERRIDES = ("ansible_connection", "ansible_host", "ansible_ssh_host")


@dataclass(frozen=True, slots=True)
class Reach:
    """Where a run goes.  ``source``: the inventory the hosts came from, fit
    to show (its path under the project), or ``""``; ``hosts``: every
    target; ``local``: ``(host, why)`` for each target that is the bot's host
    (``host`` is ``""`` for a script)."""

    source: str
    hosts: tuple[str, ...]
    local: tuple[tuple[str, str], ...]


@functools.cache
def this_host() -> frozenset[str]:
    """This machine's host name (full and short, lower case), the addresses it
    resolves to (usually through /etc/hosts) and the addresses of its network
    interfaces (Linux ``/proc/net``).  Loopback is handled apart."""
    name = socket.gethostname().lower().rstrip(".")
    found = {name, name.split(".")[0]}
    try:
        for *_, addr in socket.getaddrinfo(name, None):
            found.add(str(addr[0]).lower())
    except OSError:
        pass
    for path, parse in ((_FIB_TRIE, local_ipv4), (_IF_INET6, local_ipv6)):
        with contextlib.suppress(OSError):
            found.update(parse(Path(path).read_text(encoding="ascii", errors="replace")))
    return frozenset(f for f in found if f)


_FIB_TRIE = "/proc/net/fib_trie"
_IF_INET6 = "/proc/net/if_inet6"


def local_ipv4(fib_trie: str) -> set[str]:
    """The addresses ``/proc/net/fib_trie`` marks ``/32 host LOCAL``.  Pure."""
    found: set[str] = set()
    last = ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("|-- "):
            last = text[4:].strip()
        elif text.startswith("/32 host LOCAL") and last:
            found.add(last)
    return found


def local_ipv6(if_inet6: str) -> set[str]:
    """The addresses listed in ``/proc/net/if_inet6`` (32 hex digits each).  Pure."""
    found: set[str] = set()
    for line in if_inet6.splitlines():
        word = line.split()[0] if line.split() else ""
        if len(word) == 32:
            try:
                found.add(str(ipaddress.IPv6Address(int(word, 16))))
            except ValueError:
                continue
    return found


def _text(value: Any) -> str | None:
    if isinstance(value, Secret):
        return value.reveal()
    return value if isinstance(value, str) else None


def local_reason(name: str, hostvars: Mapping[str, Any], here: frozenset[str]) -> str | None:
    """Why host ``name`` with ``hostvars`` is the bot's host (None: it is not).
    ``here`` is ``this_host()``.  Pure."""
    connection = _text(hostvars.get("ansible_connection"))
    if connection is not None:
        if "{{" in connection or "{%" in connection:
            return "its ansible_connection is a template"
        if connection.strip().lower().rsplit(".", 1)[-1] == "local":
            return "a local connection"
    address = _text(hostvars.get("ansible_host")) or _text(hostvars.get("ansible_ssh_host")) or name
    if "{{" in address or "{%" in address:
        return "its address is a template"
    plain = address.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
    if plain in _LOCAL_NAMES or plain.endswith(".localhost"):
        return "a loopback name"
    try:
        ip = ipaddress.ip_address(plain.split("%", 1)[0])
    except ValueError:
        ip = None
    if ip is not None:
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        for one in (ip, mapped):
            if one is not None and (one.is_loopback or one.is_unspecified):
                return "a loopback address"
    if plain in here:
        return "this machine's name or address"
    return None


def inventory_hosts(listing: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Host -> variables from ``ansible-inventory --list`` JSON.  Pure."""
    meta = listing.get("_meta")
    hostvars = meta.get("hostvars") if isinstance(meta, Mapping) else None
    hosts: dict[str, dict[str, Any]] = {}
    if isinstance(hostvars, Mapping):
        for host, variables in hostvars.items():
            hosts[str(host)] = dict(variables) if isinstance(variables, Mapping) else {}
    for group, body in listing.items():
        if group != "_meta" and isinstance(body, Mapping):
            for host in body.get("hosts") or ():
                hosts.setdefault(str(host), {})
    return hosts


def _shown(path: Path, project_dir: Path) -> str:
    """A path fit for a channel: relative to the project, else its name."""
    try:
        return str(path.relative_to(project_dir))
    except ValueError:
        return path.name


async def _list_inventory(inventory: Path, cwd: Path, extra_env: Mapping[str, str]) -> Any:
    tool = find_tool("ansible-inventory")
    job = f"inventory-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="mc-inventory-") as tmp:
        out = Path(tmp) / "inventory.json"
        env = {
            **extra_env,  # a dynamic inventory needs the cloud's credentials
            "PATH": ":".join(dict.fromkeys([str(Path(tool).parent), VENV_BIN, SAFE_PATH])),
            "HOME": tmp,
            "TMPDIR": tmp,
            "LANG": "C.UTF-8",
            "ANSIBLE_LOCAL_TEMP": tmp,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
            MARKER: job,
        }
        lines: list[str] = []
        argv = (tool, "-i", str(inventory), "--list", "--output", str(out))
        try:
            result = await run_process(
                argv,
                env=env,
                cwd=cwd,
                on_line=lambda text, cut: lines.append(text),
                timeout_s=INVENTORY_TIMEOUT_S,
                kill_grace_s=2.0,
                marker=f"{MARKER}={job}",
            )
        except OSError as exc:
            log.warning("cannot run %s: %s", tool, exc)
            return None
        if result.outcome != "exited" or result.exit_code != 0 or not out.exists():
            log.warning(
                "ansible-inventory -i %s failed (%s, exit %s): %s",
                inventory, result.outcome, result.exit_code, " | ".join(lines[-5:]),
            )  # fmt: skip
            return None
        return await asyncio.to_thread(lambda: json.loads(out.read_text(encoding="utf-8")))


async def reach(
    module: Module,
    env: str,
    variables: Mapping[str, Any],
    *,
    project_dir: Path,
    extra_env: Mapping[str, str] | None = None,
) -> Reach | None:
    """Where a run of ``module`` in ``env`` goes (None: a kind not subject to
    the rule).  ``variables``: module config with the parameters on top.
    Raises ``UserError`` when an inventory cannot be read."""
    if module.kind == "script":
        options = module.manifest.script
        if options is not None and not options.changes_bot_host:
            return None
        return Reach("", ("the bot's host",), (("", "a script always runs there"),))
    if module.kind != "ansible":
        return None
    inventory = ansible_inventory(module, env)
    if inventory is None:
        why = "no inventory for this environment: it runs with -i localhost, -c local"
        return Reach("", ("localhost",), (("localhost", why),))
    shown = _shown(inventory, project_dir)
    listing = await _list_inventory(inventory, module.dir, extra_env or {})
    if not isinstance(listing, Mapping):
        raise UserError(f"cannot read the inventory {shown} (the bot's log says why)")
    hosts = inventory_hosts(listing)
    overrides = {k: variables[k] for k in _OVERRIDES if k in variables}
    here = await asyncio.to_thread(this_host)  # may ask the resolver, once
    local = []
    for host, hostvars in sorted(hosts.items()):
        reason = local_reason(host, {**hostvars, **overrides}, here)
        if reason is not None:
            local.append((host, reason))
    return Reach(shown, tuple(sorted(hosts)), tuple(local))


async def check(
    module: Module,
    env: str,
    params: Mapping[str, Any],
    load_config: Callable[[], Mapping[str, Any]],
    *,
    owner: bool,
    project_dir: Path,
    extra_env: Mapping[str, str] | None = None,
) -> None:
    """Refuse (``UserError``) a run of ``module`` in ``env`` that reaches no host,
    or reaches the bot's host without ``allow_bot_host: true`` in its module
    config (``load_config``, called in a thread and only for the kinds the
    rule covers) and an ``owner`` (+n) asking."""
    options = module.manifest.script
    if module.kind not in ("ansible", "script") or (options and not options.changes_bot_host):
        return  # not covered: no need to read the module config (a vault call)
    config = await asyncio.to_thread(load_config)
    found = await reach(
        module, env, {**config, **params}, project_dir=project_dir, extra_env=extra_env
    )
    if found is None:
        return
    where = f"{module.name} {env}"
    if not found.hosts:
        raise UserError(
            f"{where}: the inventory {found.source} lists no hosts; add this environment's "
            "machines to it (see the comments in that file)"
        )
    if not found.local:
        return
    host, why = found.local[0]
    detail = f"{host}: {why}" if host else why
    more = f" and {len(found.local) - 1} more" if len(found.local) > 1 else ""
    source = f"; {found.source}" if found.source else ""
    what = f"{where} would run on the bot's own host ({detail}{more}{source})"
    if not allows_bot_host(config):
        raise UserError(
            f"{what}: refused; that needs {BOT_HOST_SETTING}: true in "
            f"config/modules/{module.name}.yaml and a global owner (+n) to ask"
        )
    if not owner:
        raise UserError(f"{what}: only a global owner (+n) may run it")
