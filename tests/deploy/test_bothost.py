"""deploy.bothost: which targets are the bot's own host (pure, table-driven),
the real ansible-inventory reading inventories, and the refusals of ``check``."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path
from typing import Any

import pytest

from masterchief.deploy.bothost import (
    check,
    inventory_hosts,
    local_ipv4,
    local_ipv6,
    local_reason,
    reach,
    this_host,
)
from masterchief.deploy.manifest import Module, load_module
from masterchief.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
HERE = frozenset({"bothost-test", "bothost-test.example.net", "10.9.8.7"})


@pytest.mark.parametrize(
    ("name", "hostvars", "reason"),
    [
        ("localhost", {}, "a loopback name"),
        ("LocalHost.", {}, "a loopback name"),
        ("web.localhost", {}, "a loopback name"),
        ("127.0.0.1", {}, "a loopback address"),
        ("127.8.9.10", {}, "a loopback address"),
        ("::1", {}, "a loopback address"),
        ("[::1]", {}, "a loopback address"),
        ("::ffff:127.0.0.1", {}, "a loopback address"),
        ("0.0.0.0", {}, "a loopback address"),
        ("web1", {"ansible_host": "127.0.0.1"}, "a loopback address"),
        ("web1", {"ansible_ssh_host": "localhost"}, "a loopback name"),
        ("web1", {"ansible_connection": "local"}, "a local connection"),
        ("web1", {"ansible_connection": "ansible.builtin.local"}, "a local connection"),
        ("web1", {"ansible_connection": "{{ conn }}"}, "its ansible_connection is a template"),
        ("web1", {"ansible_host": "{{ lookup('env', 'H') }}"}, "its address is a template"),
        ("bothost-test", {}, "this machine's name or address"),
        ("BothostTest", {"ansible_host": "10.9.8.7"}, "this machine's name or address"),
        ("web1", {}, None),
        ("web1", {"ansible_host": "10.0.0.5"}, None),
        ("localhost", {"ansible_host": "10.0.0.5"}, None),  # a name, pointed elsewhere
        ("app-01.prod.example.com", {"ansible_connection": "ssh"}, None),
        ("127.example.com", {}, None),
    ],
)
def test_local_reason(name: str, hostvars: dict[str, Any], reason: str | None) -> None:
    assert local_reason(name, hostvars, HERE) == reason


def test_this_host_knows_the_machine_name() -> None:
    name = socket.gethostname().lower()
    assert name in this_host()
    assert local_reason(socket.gethostname(), {}, this_host()) is not None


def test_inventory_hosts_from_a_listing() -> None:
    listing = {
        "_meta": {"hostvars": {"db1": {"ansible_connection": "local"}}},
        "all": {"children": ["ungrouped", "db", "web"]},
        "db": {"hosts": ["db1"]},
        "web": {"hosts": ["web1", "web2"]},
    }
    assert inventory_hosts(listing) == {
        "db1": {"ansible_connection": "local"},
        "web1": {},
        "web2": {},
    }


def ansible_module(tmp_path: Path, inventory: str | None, *, files: dict[str, str]) -> Module:
    folder = tmp_path / "modules" / "hosts"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "site.yml").write_text("- hosts: all\n  tasks: []\n")
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    section = f"ansible: {{inventory: {{dev: {inventory}}}}}\n" if inventory else ""
    (folder / "module.yaml").write_text(
        "name: hosts\nversion: 1.0.0\nkind: ansible\nentry: site.yml\n"
        "environments: [dev]\n" + section
    )
    return load_module(folder / "module.yaml")


def script_module(tmp_path: Path, extra: str = "") -> Module:
    folder = tmp_path / "modules" / "job"
    folder.mkdir(parents=True)
    (folder / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (folder / "run.sh").chmod(0o755)
    (folder / "module.yaml").write_text(
        "name: job\nversion: 1.0.0\nkind: script\nentry: run.sh\nenvironments: [dev]\n" + extra
    )
    return load_module(folder / "module.yaml")


INVENTORIES = {
    "remote.ini": "[app]\napp-01 ansible_host=192.0.2.10\napp-[02:03].example.invalid\n",
    "local.ini": "[app]\napp-01 ansible_host=192.0.2.10\n[me]\nlocalhost\n",
    "loopback.yml": "all:\n  hosts:\n    web:\n      ansible_host: 127.0.0.1\n",
    "groupvars/hosts.ini": "[db]\ndb-01\n",
    "groupvars/group_vars/db.yml": "ansible_connection: local\n",
    "empty.ini": "# nobody yet\n[dev]\n",
}


@pytest.mark.parametrize(
    ("inventory", "hosts", "local"),
    [
        ("remote.ini", ["app-01", "app-02.example.invalid", "app-03.example.invalid"], []),
        ("local.ini", ["app-01", "localhost"], [("localhost", "a loopback name")]),
        ("loopback.yml", ["web"], [("web", "a loopback address")]),
        ("groupvars/hosts.ini", ["db-01"], [("db-01", "a local connection")]),
        ("empty.ini", [], []),
        (None, ["localhost"], None),
    ],
)
async def test_reach_reads_inventories_with_real_ansible_inventory(
    tmp_path: Path, inventory: str | None, hosts: list[str], local: list[tuple[str, str]] | None
) -> None:
    module = ansible_module(tmp_path, inventory, files=INVENTORIES)
    found = await reach(module, "dev", {}, project_dir=tmp_path)
    assert found is not None
    assert list(found.hosts) == hosts
    if local is None:  # no inventory: -i localhost, -c local
        assert found.local[0][0] == "localhost" and "no inventory" in found.local[0][1]
    else:
        assert list(found.local) == local
    if inventory:
        assert found.source == f"modules/hosts/{inventory}"


async def test_module_config_and_parameters_move_every_host(tmp_path: Path) -> None:
    module = ansible_module(tmp_path, "remote.ini", files=INVENTORIES)
    for variables in ({"ansible_connection": "local"}, {"ansible_host": "::1"}):
        found = await reach(module, "dev", variables, project_dir=tmp_path)
        assert found is not None and len(found.local) == 3


async def test_an_unreadable_inventory_is_refused(tmp_path: Path) -> None:
    module = ansible_module(tmp_path, "bad.yml", files={"bad.yml": "all: [unclosed\n"})
    with pytest.raises(UserError, match=r"cannot read the inventory modules/hosts/bad.yml"):
        await reach(module, "dev", {}, project_dir=tmp_path)


async def refusal(module: Module, config: dict[str, Any], *, owner: bool, **params: Any) -> str:
    try:
        await check(module, "dev", params, lambda: config, owner=owner, project_dir=module.dir)
    except UserError as exc:
        return str(exc)
    return ""


async def test_check_on_the_bot_host_needs_the_setting_and_an_owner(tmp_path: Path) -> None:
    module = ansible_module(tmp_path, "local.ini", files=INVENTORIES)
    setting = {"allow_bot_host": True}
    shown = "hosts dev would run on the bot's own host (localhost: a loopback name; local.ini)"
    assert await refusal(module, {}, owner=False) == (
        f"{shown}: refused; that needs allow_bot_host: true in config/modules/hosts.yaml "
        "and a global owner (+n) to ask"
    )
    assert "refused; that needs allow_bot_host" in await refusal(module, {}, owner=True)
    assert "needs allow_bot_host" in await refusal(module, {"allow_bot_host": "yes"}, owner=True)
    assert await refusal(module, setting, owner=False) == (
        f"{shown}: only a global owner (+n) may run it"
    )
    assert await refusal(module, setting, owner=True) == ""


async def test_check_elsewhere_and_empty(tmp_path: Path) -> None:
    remote = ansible_module(tmp_path, "remote.ini", files=INVENTORIES)
    assert await refusal(remote, {}, owner=False) == ""
    assert "would run on the bot's own host (app-01: a local connection and 2 more" in (
        await refusal(remote, {}, owner=False, ansible_connection="local")
    )
    empty = ansible_module(tmp_path / "e", "empty.ini", files=INVENTORIES)
    assert await refusal(empty, {}, owner=True) == (
        "hosts dev: the inventory empty.ini lists no hosts; add this environment's machines "
        "to it (see the comments in that file)"
    )


async def test_scripts_count_as_the_bot_host_unless_their_manifest_says_not(
    tmp_path: Path,
) -> None:
    local = script_module(tmp_path / "a")
    assert await refusal(local, {}, owner=True) == (
        "job dev would run on the bot's own host (a script always runs there): refused; "
        "that needs allow_bot_host: true in config/modules/job.yaml and a global owner (+n) "
        "to ask"
    )
    assert await refusal(local, {"allow_bot_host": True}, owner=True) == ""
    remote = script_module(tmp_path / "b", "script: {changes_bot_host: false}\n")
    assert await refusal(remote, {}, owner=False) == ""


async def test_shipped_inventories_never_name_the_bot_host() -> None:
    baseline = load_module(ROOT / "modules" / "ansible" / "baseline" / "module.yaml")
    for env in ("dev", "staging", "prod"):
        found = await reach(baseline, env, {}, project_dir=ROOT)
        assert found is not None and found.local == (), env
        assert found.source == f"modules/ansible/inventories/{env}.ini"
        assert bool(found.hosts) == (env != "dev"), env


FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 192.0.2.0/24 2 0 2
        |-- 192.0.2.0
           /24 link UNICAST
        |-- 192.0.2.2
           /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
"""
IF_INET6 = """\
fd000000000000000000000000000002 04 40 00 82     eth0
00000000000000000000000000000001 01 80 10 80       lo
"""


def test_interface_addresses_are_read_from_proc() -> None:
    assert local_ipv4(FIB_TRIE) == {"192.0.2.2"}
    assert local_ipv6(IF_INET6) == {"fd00::2", "::1"}
    trie, inet6 = Path("/proc/net/fib_trie"), Path("/proc/net/if_inet6")
    if trie.exists():  # this machine's own interface addresses count as the bot's host
        assert local_ipv4(trie.read_text()) <= this_host()
    if inet6.exists():
        assert local_ipv6(inet6.read_text()) <= this_host()
