"""Conventions every provider class follows, whatever its concern."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from convers.config import Settings


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
