"""Providers are found through entry points, built-in and third-party alike."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from convers import registry
from convers.config import load_settings
from convers.registry import UnknownProviderError

BUILT_INS = {
    "vad": {"silero", "webrtc", "energy"},
    "stt": {"faster-whisper", "pocketsphinx"},
    "llm": {"openai", "llama-cpp"},
    "tts": {"espeak-ng", "piper", "kokoro"},
    "embedder": {"minilm", "ollama"},
    "memory": {"sqlite"},
    "transport": {"local", "loopback"},
    "tools": {"clock"},
}


@pytest.mark.parametrize("kind", sorted(BUILT_INS))
def test_built_in_providers_are_registered_through_entry_points(kind: str) -> None:
    assert BUILT_INS[kind] <= set(registry.installed(kind))


def test_unknown_provider_lists_the_installed_ones() -> None:
    with pytest.raises(UnknownProviderError) as caught:
        registry.load("llm", "gpt-17")
    message = str(caught.value)
    assert "gpt-17" in message and "openai" in message and "llama-cpp" in message


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(UnknownProviderError, match="kinds are"):
        registry.installed("teleporter")


@pytest.fixture
def third_party_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny installed distribution: one module with one class, one entry-point line."""
    (tmp_path / "shouty_tts.py").write_text(
        textwrap.dedent(
            '''
            from convers.contracts.audio import AudioFrame

            class ShoutyTts:
                """Says everything as a short burst of silence, loudly named."""
                name = "shouty"
                sample_rate = 8000

                def __init__(self, voice="en-us"):
                    self.voice = voice

                @classmethod
                def from_settings(cls, settings):
                    return cls(voice=settings.tts.voice)

                async def synthesize(self, text):
                    yield AudioFrame(b"\\x00\\x00" * 80, self.sample_rate)
            '''
        )
    )
    dist = tmp_path / "shouty_tts-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shouty-tts\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[convers.tts]\nshouty = shouty_tts:ShoutyTts\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("shouty_tts", None)


async def test_third_party_provider_plugs_in_with_one_class_and_one_line(third_party_distribution: Path) -> None:
    from convers.contracts.tts import TextToSpeech

    assert "shouty" in registry.installed("tts")
    settings = load_settings(environ={}, cli={"tts.provider": "shouty", "tts.voice": "de"})
    tts = registry.create("tts", settings.tts.provider, settings)
    assert isinstance(tts, TextToSpeech)
    assert tts.voice == "de"
    frames = [frame async for frame in tts.synthesize("hallo")]
    assert frames[0].sample_rate == 8000
