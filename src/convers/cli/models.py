"""`convers models pull|list`: fetch the default models into DATA_DIR/models and say what is there."""

from __future__ import annotations

import sys

import click

from convers.cli.context import settings_from
from convers.config import Settings
from convers.downloads import (
    KINDS,
    DownloadError,
    ModelBundle,
    ProgressBar,
    catalogue,
    pull,
)

# What to set once a kind is pulled, for kinds whose provider is not the default one.
NEXT_STEP = {
    "llm": "use it with --set llm.provider=llama-cpp (or llm.provider = \"llama-cpp\" in config.toml)",
    "tts": "tts.provider = \"auto\" speaks with this voice now, before the packaged one",
    "stt": "stt.provider = \"auto\" transcribes with this model now, before the packaged tiny.en",
}


@click.group()
def models() -> None:
    """Download the default models and list what is present."""


@models.command("pull")
@click.argument("kinds", nargs=-1, required=True, type=click.Choice([*KINDS, "all"]))
@click.option("--force", is_flag=True, help="Download again even when the files are present.")
@click.pass_context
def pull_command(ctx: click.Context, kinds: tuple[str, ...], force: bool) -> None:
    """Fetch the default model of each KIND (llm, stt, embedder, tts, or all) from Hugging Face."""
    settings = settings_from(ctx)
    bundles = catalogue(settings)
    chosen = tuple(bundles) if "all" in kinds else tuple(dict.fromkeys(kinds))
    for kind in chosen:
        bundle = bundles[kind]
        if bundle.present and not force:
            click.echo(f"{kind}: {bundle.name} is already there: {bundle.marker}")
            continue
        click.echo(f"{kind}: fetching {bundle.name} into {bundle.marker.parent}")
        try:
            pull(bundle, force=force, progress=_tqdm_bar)
        except DownloadError as error:
            # One clear line and exit status 1: without a network every kind fails the same way.
            raise click.ClickException(f"{kind}: {error}") from None
        click.echo(f"{kind}: {bundle.name} ready at {bundle.marker}")
        if kind in NEXT_STEP:
            click.echo(f"  {NEXT_STEP[kind]}")


@models.command("list")
@click.pass_context
def list_command(ctx: click.Context) -> None:
    """Show each default model, whether it is present, and where it lives."""
    settings = settings_from(ctx)
    for kind, bundle in catalogue(settings).items():
        mark = click.style("present", fg="green") if bundle.present else click.style("missing", fg="red")
        click.echo(f"{kind:9} {mark}  {bundle.name}: {bundle.description}")
        click.echo(f"          {bundle.marker}")
        configured = _configured_path(kind, settings, bundle)
        if configured:
            click.echo(f"          in use instead: {configured}")
        if not bundle.present:
            click.echo(f"          get it: convers models pull {kind}")
    _list_packaged(settings)


def _list_packaged(settings: Settings) -> None:
    """The models registry packages carry (what `auto` falls back to), and whether their files check out."""
    from convers.model_checks import ModelFileError, verified_files
    from convers.packaged_models import PIPER_JOE, SMART_TURN, WHISPER_TINY_EN

    checks = verified_files(settings.data_path)
    for kind, packaged in (("stt", WHISPER_TINY_EN), ("tts", PIPER_JOE), ("turn", SMART_TURN)):
        try:
            folder = packaged.verify(checks)
        except ModelFileError as error:
            click.echo(f"{kind:9} {click.style('unusable', fg='red')} {packaged.name}: {error}")
            continue
        click.echo(f"{kind:9} {click.style('packaged', fg='green')} {packaged.name}, checksums match")
        click.echo(f"          {folder}")


def _configured_path(kind: str, settings: Settings, bundle: ModelBundle) -> str:
    """A path the settings point at instead of the pulled default, if any."""
    if kind == "llm" and settings.llm.model_path is not None:
        return str(settings.llm.model_path)
    if kind == "tts" and settings.tts.piper_voice is not None:
        return str(settings.tts.piper_voice)
    if kind == "embedder" and settings.embedder.model_dir is not None:
        return str(settings.embedder.model_dir)
    return ""


class _TqdmBar(ProgressBar):
    def __init__(self, label: str, total: int | None) -> None:
        from tqdm import tqdm

        # disable=None: a bar on a terminal, silence in logs and pipes.
        self._bar = tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
                         file=sys.stderr, disable=None, leave=True)

    def update(self, count: int) -> None:
        self._bar.update(count)

    def close(self) -> None:
        self._bar.close()


def _tqdm_bar(label: str, total: int | None) -> ProgressBar:
    return _TqdmBar(label, total)
