"""The ``masterchief`` command group every subcommand registers on."""

from __future__ import annotations

import click

__all__ = ["main"]


@click.group()
@click.version_option(package_name="masterchief")
def main() -> None:
    """MasterChief: an Eggdrop-style ChatOps bot."""
