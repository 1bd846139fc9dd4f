"""Finds providers through Python entry points; built-ins are registered the same way."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convers.config import Settings

# The concern a group serves, as users name it in settings and `convers doctor`.
GROUPS: dict[str, str] = {
    "vad": "convers.vad",
    "stt": "convers.stt",
    "llm": "convers.llm",
    "tts": "convers.tts",
    "embedder": "convers.embedder",
    "memory": "convers.memory",
    "transport": "convers.transport",
    "tools": "convers.tools",
}


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
