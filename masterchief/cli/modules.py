"""``masterchief module list|show|validate|add``: deploy modules."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from masterchief.config.engine import ConfigError

__all__ = ["main"]


from .base import main
from .common import (
    EXIT_CONFIG,
    EXIT_ERROR,
    config_options,
    fail,
    load,
    plain,
    print_errors,
    print_table,
)


@main.group()
def module() -> None:
    """Deploy modules: module list | show | validate | add | remove."""


@module.command("list")
@config_options
def module_list(config_dir: Path, env: str) -> None:
    """List deploy modules; those that fail to load are listed after (exit 1)."""
    config = load(config_dir, env, sections=("deploy",))
    from masterchief.deploy.catalog import load_modules

    found = load_modules(config.deploy.modules)
    if not found.modules and not found.errors:
        click.echo("no modules (add one with: masterchief module add PATH)")
        return
    rows = [("NAME", "VERSION", "KIND", "ENVIRONMENTS", "FLAGS", "APPROVAL", "REQUIRES")]
    for name in found.names:
        m = found.modules[name].manifest
        rows.append(
            (
                m.name,
                m.version,
                m.kind,
                ",".join(m.environments),
                m.flags,
                ",".join(m.approval) or "-",
                ",".join(m.requires) or "-",
            )
        )
    if found.modules:
        print_table(rows)
    if found.errors:
        print_errors([str(e) for e in found.errors])
        sys.exit(EXIT_ERROR)


@module.command("show")
@click.argument("name")
@config_options
def module_show(name: str, config_dir: Path, env: str) -> None:
    """A module's manifest, parameters, entry, digest and its config for --env."""
    config = load(config_dir, env, sections=("deploy", "vault"))
    import yaml

    from masterchief.deploy.catalog import load_modules
    from masterchief.deploy.module_config import load_module_config

    found = load_modules(config.deploy.modules)
    mod = found.get(name)
    if mod is None:
        fail(f"unknown module {name!r} (masterchief module validate lists the broken ones)")
    try:
        settings = load_module_config(config, name)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    m = mod.manifest
    approval = [
        f"{e}: {r.approvers} approver(s) with {r.flags}, valid {r.ttl_s:g}s"
        for e, r in m.approval.items()
    ]
    fields = [
        ("name", m.name),
        ("version", m.version),
        ("kind", m.kind),
        ("description", m.description or "-"),
        ("file", str(mod.file)),
        ("entry", str(mod.entry)),
        ("digest", mod.digest),
        ("environments", ", ".join(m.environments)),
        ("flags", m.flags),
        ("approval", "; ".join(approval) or "-"),
        ("timeout", f"{m.timeout_s:g}s"),
        ("requires", ", ".join(m.requires) or "-"),
        ("deploy order", " -> ".join(x.name for x in found.closure(name))),
        ("options", ", ".join(f"{k}={v}" for k, v in mod.options.items()) or "-"),
    ]
    for label, value in fields:
        click.echo(f"{label + ':':<14}{value}")
    if m.parameters:
        click.echo("parameters:")
        rows = [("  NAME", "TYPE", "REQUIRED", "DEFAULT", "CONSTRAINTS", "DESCRIPTION")]
        for pname, p in m.parameters.items():
            limits = []
            if p.pattern is not None:
                limits.append(f"pattern {p.pattern}")
            if p.enum is not None:
                limits.append("one of " + "|".join(str(v) for v in p.enum))
            if p.minimum is not None:
                limits.append(f">= {p.minimum}")
            if p.maximum is not None:
                limits.append(f"<= {p.maximum}")
            if p.secret:
                limits.append("secret")
            default = "-" if p.default is None else ("***" if p.secret else str(p.default))
            rows.append(
                (
                    f"  {pname}",
                    p.type,
                    "yes" if p.required else "no",
                    default,
                    "; ".join(limits) or "-",
                    p.description or "-",
                )
            )
        print_table(rows)
    else:
        click.echo("parameters:   none")
    if settings:
        click.echo(f"config ({config.env}):")
        text = yaml.safe_dump(plain(settings), default_flow_style=False, sort_keys=False)
        for line in text.splitlines():
            click.echo(f"  {line}")
    else:
        click.echo(f"config ({config.env}): none")


@module.command("validate")
@config_options
def module_validate(config_dir: Path, env: str) -> None:
    """Validate every module and its config for --env; exit 1 on any error."""
    config = load(config_dir, env, sections=("deploy", "vault"))
    from masterchief.deploy.catalog import load_modules
    from masterchief.deploy.module_config import load_module_config, module_resolvers

    found = load_modules(config.deploy.modules)
    problems = [str(e) for e in found.errors]
    good = 0
    resolvers = module_resolvers(config)  # one vault client for every module
    for mod in found.order:
        try:
            load_module_config(config, mod.name, resolvers=resolvers)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        good += 1
        click.echo(f"ok  {mod.name} {mod.version} ({mod.kind})")
    if problems:
        print_errors(problems)
        sys.exit(EXIT_ERROR)
    click.echo(f"{good} module(s) valid")


@module.command("add")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@config_options
def module_add(path: Path, config_dir: Path, env: str) -> None:
    """Validate the module folder PATH and copy it into the first modules folder."""
    config = load(config_dir, env, sections=("deploy",))
    from masterchief.deploy.catalog import add_module
    from masterchief.deploy.manifest import ModuleError

    roots = config.deploy.modules
    if not roots:
        fail("deploy.modules is empty: configure a modules folder to add into")
    try:
        added = add_module(path, roots[0], roots=roots)
    except (ModuleError, OSError, ValueError) as exc:  # ValueError: a NUL in the path
        fail(str(exc))
    click.echo(f"added {added.name} {added.version} ({added.kind}) in {added.dir}")


@module.command("remove")
@click.argument("name")
@config_options
def module_remove(name: str, config_dir: Path, env: str) -> None:
    """Move module NAME's folder to .removed/ (nothing is deleted)."""
    config = load(config_dir, env, sections=("deploy",))
    from masterchief.deploy.catalog import remove_module
    from masterchief.deploy.manifest import ModuleError

    try:
        moved = remove_module(name, config.deploy.modules)
    except (ModuleError, OSError) as exc:
        fail(str(exc))
    click.echo(f"removed {name}: moved to {moved}")
