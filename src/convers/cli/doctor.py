"""`convers doctor`: for each kind of provider, what is installed, what is usable here, and why not."""

from __future__ import annotations

import click

from convers import registry
from convers.cli.context import settings_from
from convers.config import Settings
from convers.contracts.provider import Availability


def check_provider(kind: str, name: str, settings: Settings) -> Availability:
    """A provider's own word on whether it can run here; an import failure is reported, not raised."""
    try:
        factory = registry.load(kind, name)
    except Exception as error:  # a broken plugin must not stop the report on the others
        return Availability(False, f"cannot be loaded: {type(error).__name__}: {error}")
    check = getattr(factory, "availability", None)
    if not callable(check):
        return Availability(True, "installed (reports no checks)")
    try:
        return check(settings)
    except Exception as error:
        return Availability(False, f"check failed: {type(error).__name__}: {error}")


def selected_name(kind: str, settings: Settings) -> str | None:
    section = getattr(settings, kind, None)
    return getattr(section, "provider", None)


@click.command()
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Say which providers are installed and usable on this machine."""
    settings = settings_from(ctx)
    problems = 0
    for kind in registry.GROUPS:
        chosen = selected_name(kind, settings)
        header = f"{kind}" + (f" (selected: {chosen})" if chosen else "")
        click.echo(click.style(header, bold=True))
        providers = registry.installed(kind)
        if not providers:
            click.echo("  (none installed)")
        for name in providers:
            result = check_provider(kind, name, settings)
            mark = click.style("ok ", fg="green") if result.usable else click.style("no ", fg="red")
            click.echo(f"  {mark} {name}: {result.detail}")
            if name == chosen and not result.usable:
                problems += 1
        if chosen == "auto":
            click.echo(f"  -> auto: {_resolve_auto(kind, settings)}")
        if chosen and chosen != "auto" and chosen not in providers:
            click.echo(click.style(f"  selected provider {chosen!r} is not installed", fg="red"))
            problems += 1
    click.echo(f"data directory: {settings.data_path}")
    if problems:
        raise click.ClickException(f"{problems} selected provider(s) cannot run here; see above")


def _resolve_auto(kind: str, settings: Settings) -> str:
    from convers.providers.llm import resolve_llm_provider
    from convers.providers.stt import resolve_stt_provider

    resolve = resolve_llm_provider if kind == "llm" else resolve_stt_provider
    name, reason = resolve(settings)
    return f"{name} ({reason})"
