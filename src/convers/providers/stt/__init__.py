"""Built-in speech-to-text providers, and the `auto` choice between them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convers.config import Settings

AUTO = "auto"


def resolve_stt_provider(settings: Settings) -> tuple[str, str]:
    """The STT provider `auto` stands for here, and why: faster-whisper when its model is present."""
    from convers.providers.stt.faster_whisper import FasterWhisperStt
    from convers.providers.stt.pocketsphinx import PocketSphinxStt

    whisper = FasterWhisperStt.availability(settings)
    if whisper.usable:
        return "faster-whisper", whisper.detail
    sphinx = PocketSphinxStt.availability(settings)
    if sphinx.usable:
        return "pocketsphinx", f"fallback: {whisper.detail}"
    return "faster-whisper", f"no usable STT: {whisper.detail}; {sphinx.detail}"


def stt_provider_name(settings: Settings) -> str:
    """settings.stt.provider with `auto` resolved."""
    name = settings.stt.provider
    return resolve_stt_provider(settings)[0] if name == AUTO else name
