"""The `convers` command. The CLI is the only layer that wires concrete providers together."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from convers.cli.context import CliContext
from convers.config import ConfigError, parse_assignment


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML settings file (default: DATA_DIR/config.toml).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where profile, memory, events and models live (default ~/.local/share/convers).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Override any setting, e.g. --set llm.temperature=0.2 (repeatable).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None, data_dir: Path | None, assignments: tuple[str, ...], verbose: int) -> None:
    """convers: a local-first voice companion with memory."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    overrides: dict[str, object] = {}
    try:
        for text in assignments:
            key, value = parse_assignment(text)
            overrides[key] = value
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    ctx.obj = CliContext(config_file=config_file, overrides=overrides)


def _register() -> None:
    # Imported here, not at module top, so `convers --help` stays fast and one broken optional
    # command cannot take the others down at import time.
    # Thread limits first: BLAS and OpenMP read them once, when numpy or a model library loads.
    from convers.native_threads import limit_native_threads

    limit_native_threads()
    from convers.cli import bench, chat, config_cmd, doctor, memory, models, serve, talk

    commands = (
        chat.chat, talk.talk, serve.serve, serve.token, config_cmd.config, doctor.doctor, models.models,
        memory.memory, memory.profile, bench.bench,
    )
    for command in commands:
        main.add_command(command)


_register()
