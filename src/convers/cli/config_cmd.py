"""`convers config show`: the effective settings after file, environment and flags."""

from __future__ import annotations

import click

from convers.cli.context import settings_from
from convers.config import settings_as_toml


@click.group()
def config() -> None:
    """Inspect settings."""


@config.command("show")
@click.pass_context
def show(ctx: click.Context) -> None:
    """Print the effective settings as TOML."""
    click.echo(settings_as_toml(settings_from(ctx)), nl=False)
