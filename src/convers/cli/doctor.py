"""`convers doctor`: for each kind of provider, what is installed, what is usable here, and why not.

The verdict is given per use: a server needs no sound card, a text chat needs no ears or voice.
"""

from __future__ import annotations

import click

from convers import registry
from convers.cli.context import settings_from
from convers.config import Settings
from convers.contracts.provider import Availability

# The provider kinds each command needs. Tools are optional to every conversation.
USES: dict[str, tuple[str, ...]] = {
    "serve": ("vad", "stt", "llm", "tts", "embedder", "memory"),
    "talk": ("vad", "stt", "llm", "tts", "embedder", "memory", "transport"),
    "chat": ("llm", "embedder", "memory"),
}
# Kinds whose failure costs a feature, not the conversation (memory degrades to none, recall to words).
OPTIONAL = {"embedder", "memory"}


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


def selected_availability(kind: str, settings: Settings) -> tuple[str, Availability]:
    """The provider settings select for `kind` (`auto` resolved) and whether it can run here."""
    chosen = selected_name(kind, settings)
    if chosen is None:
        return "", Availability(True, "nothing to select")
    if chosen == registry.AUTO:
        try:
            resolution = registry.resolve_auto(kind, settings)
        except registry.UnknownProviderError as error:
            return chosen, Availability(False, str(error))
        picked = dict(resolution.candidates)[resolution.name]
        if picked.usable:
            # `auto` may pick what the person configured even while it is down (llm.base_url): say so.
            actual = check_provider(kind, resolution.name, settings)
            if not actual.usable:
                return resolution.name, actual
        return resolution.name, Availability(picked.usable, resolution.detail)
    if chosen not in registry.installed(kind):
        return chosen, Availability(False, f"selected provider {chosen!r} is not installed")
    return chosen, check_provider(kind, chosen, settings)


def verdicts(selected: dict[str, tuple[str, Availability]]) -> dict[str, list[str]]:
    """Per use, which selected providers stop it (empty: ready); why is printed with each kind above.

    Optional kinds that cannot run are not blockers.
    """
    return {
        use: [
            f"{kind} ({selected[kind][0] or 'none'})"
            for kind in kinds
            if not selected[kind][1].usable and kind not in OPTIONAL
        ]
        for use, kinds in USES.items()
    }


def memory_line(settings: Settings) -> str:
    """Whether memory would work if a conversation started now, and why not (the store is opened to see)."""
    from convers.app.shared_memory import memory_state

    status = memory_state(settings)
    colour = {"on": "green", "off": "yellow"}.get(status.state, "red")
    return click.style(f"memory: {status.state}", fg=colour) + f" ({status.reason})"


@click.command()
@click.option("--use", "use", type=click.Choice(sorted(USES)), help="Exit with 1 when this use cannot run (default: when none can).")
@click.pass_context
def doctor(ctx: click.Context, use: str | None) -> None:
    """Say which providers are installed and usable on this machine, and which commands can run."""
    settings = settings_from(ctx)
    selected: dict[str, tuple[str, Availability]] = {}
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
        if chosen is None:
            continue
        name, availability = selected[kind] = selected_availability(kind, settings)
        if chosen == registry.AUTO:
            click.echo(f"  -> auto picks {name}: {availability.detail}")
        elif not availability.usable:
            click.echo(click.style(f"  -> {chosen}: {availability.detail}", fg="red"))
    click.echo(f"data directory: {settings.data_path}")
    click.echo(memory_line(settings))
    blocked = verdicts({kind: selected.get(kind, ("", Availability(True, ""))) for kind in registry.GROUPS})
    for name, blockers in blocked.items():
        if blockers:
            click.echo(click.style(f"convers {name}: cannot run: ", fg="red") + ", ".join(blockers) + " (see above)")
        else:
            click.echo(click.style(f"convers {name}: ready", fg="green"))
    failing = [use] if use is not None else list(blocked)
    if all(blocked[name] for name in failing):
        raise click.ClickException(
            f"convers {use} cannot run here; see above" if use else "no command can run here; see above"
        )
