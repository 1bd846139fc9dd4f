"""What every subcommand receives: how to load settings, with the global flags applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from convers.config import ConfigError, Settings, load_settings


@dataclass
class CliContext:
    """Global flags; `settings(...)` merges them with command flags and validates once."""

    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def settings(self, **command_flags: Any) -> Settings:
        """Settings with command flags (dotted keys, None = not given) on top of the global ones."""
        merged = {**self.overrides, **{k: v for k, v in command_flags.items() if v is not None}}
        try:
            return load_settings(self.config_file, merged)
        except ConfigError as error:
            raise click.ClickException(str(error)) from None


def settings_from(ctx: click.Context, **command_flags: Any) -> Settings:
    obj = ctx.find_object(CliContext) or CliContext()
    return obj.settings(**command_flags)
