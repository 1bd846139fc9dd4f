"""Finds providers through Python entry points; built-ins are registered the same way."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from convers.contracts.provider import AutoChoice

if TYPE_CHECKING:
    from convers.config import Settings

# The concern a group serves, as users name it in settings and `convers doctor`.
GROUPS: dict[str, str] = {
    "vad": "convers.vad",
    "turn_end": "convers.turn",
    "echo": "convers.echo",
    "stt": "convers.stt",
    "llm": "convers.llm",
    "tts": "convers.tts",
    "embedder": "convers.embedder",
    "memory": "convers.memory",
    "transport": "convers.transport",
    "tools": "convers.tools",
}

AUTO = "auto"


class UnknownProviderError(LookupError):
    """No installed provider has that name; the message lists the ones that are installed."""


class ProviderUnavailableError(RuntimeError):
    """The provider is installed but cannot run here (missing model, library or device)."""


def _group(kind: str) -> str:
    try:
        return GROUPS[kind]
    except KeyError:
        raise UnknownProviderError(
            f"unknown provider kind {kind!r}; kinds are: {', '.join(GROUPS)}"
        ) from None


def installed(kind: str) -> dict[str, EntryPoint]:
    """Installed providers of `kind` by name, sorted by name."""
    found = {ep.name: ep for ep in entry_points(group=_group(kind))}
    return dict(sorted(found.items()))


def load(kind: str, name: str) -> Any:
    """The class (or factory) registered as `name` under `kind`."""
    providers = installed(kind)
    if name not in providers:
        names = ", ".join(providers) or "none"
        raise UnknownProviderError(
            f"no {kind} provider named {name!r}; installed {kind} providers: {names}"
        )
    return providers[name].load()


def create(kind: str, name: str, settings: Settings, **parts: Any) -> Any:
    """Builds provider `name`: `from_settings(settings, **parts)` when the class has it, else a plain call.

    `parts` are other providers this one is built on (a memory store gets its embedder).
    """
    factory = load(kind, name)
    from_settings = getattr(factory, "from_settings", None)
    try:
        if callable(from_settings):
            return from_settings(settings, **parts)
        return factory(**parts)
    except (ImportError, OSError) as error:
        # A missing library, model file or device: say which provider and how to see the rest.
        raise ProviderUnavailableError(
            f"{kind} provider {name!r} cannot start: {error} (`convers doctor` lists what is usable here)"
        ) from error


@dataclass(frozen=True)
class AutoResolution:
    """What `auto` stands for here: the provider picked, why, and every candidate that was asked."""

    name: str
    detail: str
    candidates: tuple[tuple[str, AutoChoice], ...]


def resolve_auto(kind: str, settings: Settings) -> AutoResolution:
    """The provider `auto` picks for `kind`: the usable one with the highest rank (ties by name).

    Every installed provider whose class has `auto_choice(settings)` takes part, built-in or not
    (contracts/provider.py has the ranks). A provider that cannot even be loaded or asked is left
    out, with its error among the candidates. With nothing usable, the best-ranked one is named
    so that its own error says what to install.
    """
    candidates: list[tuple[str, AutoChoice]] = []
    for name in installed(kind):
        try:
            factory = load(kind, name)
            ask = getattr(factory, "auto_choice", None)
            if not callable(ask):
                continue
            choice = ask(settings)
        except Exception as error:  # a broken plugin must not take `auto` down with it
            choice = AutoChoice(-1, False, f"cannot be asked: {type(error).__name__}: {error}")
        candidates.append((name, choice))
    if not candidates:
        raise UnknownProviderError(f"no installed {kind} provider takes part in auto; set {kind}.provider")
    # Stable sort: among equal ranks the installed (alphabetical) order stays.
    ranked = sorted(candidates, key=lambda item: -item[1].rank)
    usable = [item for item in ranked if item[1].usable]
    if usable:
        name, choice = usable[0]
        skipped = [f"{other}: {c.detail}" for other, c in ranked if c.rank > choice.rank and not c.usable]
        detail = choice.detail + (f" (passed over: {'; '.join(skipped)})" if skipped else "")
        return AutoResolution(name, detail, tuple(candidates))
    name, choice = ranked[0]
    reasons = "; ".join(f"{other}: {c.detail}" for other, c in ranked)
    return AutoResolution(name, f"nothing usable: {reasons}", tuple(candidates))


def provider_name(kind: str, settings: Settings) -> str:
    """The provider settings select for `kind`, with `auto` resolved to one usable here."""
    section = getattr(settings, kind)
    name = str(section.provider)
    return resolve_auto(kind, settings).name if name == AUTO else name
