"""Conventions every provider class follows, whatever its concern."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

# The settings object (convers.config.Settings) is passed through as it is: contracts import
# nothing of the package, so a provider package can depend on them alone.
Settings = Any


@dataclass(frozen=True)
class Availability:
    """Whether a provider can run on this machine now, and in words why or why not."""

    usable: bool
    detail: str


@runtime_checkable
class ProviderClass(Protocol):
    """What the registry calls on a provider class. `availability` must be cheap: no model loading.

    Example detail strings: "model base.en not downloaded: run `convers models pull stt`",
    "espeak-ng 1.51 found", "PortAudio library missing: apt-get install libportaudio2".
    """

    @classmethod
    def from_settings(cls, settings: Settings) -> Any: ...

    @classmethod
    def availability(cls, settings: Settings) -> Availability: ...


# Ranks a provider reports for `auto`, shared by every kind so that a third-party provider can
# place itself between the built-ins. Higher wins; providers in one tier add a few points to order
# themselves (a running LLM server above a GGUF file).
RANK_USER_MODEL = 300  # a model the user pulled, configured or runs
RANK_PACKAGED = 200  # a model an installed registry package carries
RANK_FALLBACK = 100  # always there, clearly worse


@dataclass(frozen=True)
class AutoChoice:
    """How a provider takes part in `auto` here: its rank, whether it can run now, and why.

    A provider class takes part by having `auto_choice(settings) -> AutoChoice` (cheap, like
    `availability`); `auto` picks the usable one with the highest rank. A provider that cannot run
    reports the rank it would have, so that with nothing usable the best-placed one is named.
    """

    rank: int
    usable: bool
    detail: str
