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


# ------------------------------------------------------------------ auto


def _plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, rank: int, usable: bool) -> None:
    """An installed third-party STT provider that takes part in `auto` with the given rank."""
    module = "plugin_" + name.replace("-", "_")
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            f'''
            from convers.contracts.provider import AutoChoice

            class PluginStt:
                """Hears nothing; only here to be picked or passed over."""
                name = {name!r}
                sample_rate = 16000

                @classmethod
                def auto_choice(cls, settings):
                    return AutoChoice({rank}, {usable}, "plugin {name} here")
            '''
        )
    )
    dist = tmp_path / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[convers.stt]\n{name} = {module}:PluginStt\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_auto_takes_a_third_party_provider_that_outranks_the_built_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _plugin(tmp_path, monkeypatch, "sharp-ears", 1000, True)
    settings = load_settings(environ={}, cli={"data_dir": str(tmp_path / "data")})
    resolution = registry.resolve_auto("stt", settings)
    assert resolution.name == "sharp-ears"
    assert resolution.detail == "plugin sharp-ears here"
    assert {"sharp-ears", "faster-whisper", "pocketsphinx"} <= {name for name, _ in resolution.candidates}
    assert registry.provider_name("stt", settings) == "sharp-ears"
    # Named explicitly, auto is not asked at all.
    explicit = load_settings(environ={}, cli={"data_dir": str(tmp_path / "data"), "stt.provider": "pocketsphinx"})
    assert registry.provider_name("stt", explicit) == "pocketsphinx"


def test_auto_passes_over_a_better_ranked_provider_that_cannot_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _plugin(tmp_path, monkeypatch, "broken-ears", 1000, False)
    settings = load_settings(environ={}, cli={"data_dir": str(tmp_path / "data")})
    resolution = registry.resolve_auto("stt", settings)
    assert resolution.name != "broken-ears"
    assert "passed over: broken-ears: plugin broken-ears here" in resolution.detail


def test_auto_with_nothing_usable_names_the_best_ranked_and_every_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convers.contracts.provider import AutoChoice

    monkeypatch.setattr(registry, "installed", lambda kind: {"a": None, "b": None})
    choices = {"a": AutoChoice(100, False, "a is missing"), "b": AutoChoice(300, False, "b is missing")}

    class Asked:
        def __init__(self, name: str) -> None:
            self.name = name

        def auto_choice(self, settings: object) -> AutoChoice:
            return choices[self.name]

    monkeypatch.setattr(registry, "load", lambda kind, name: Asked(name))
    resolution = registry.resolve_auto("stt", load_settings(environ={}))
    assert resolution.name == "b"
    assert resolution.detail == "nothing usable: b: b is missing; a: a is missing"


def test_a_provider_that_fails_to_load_does_not_break_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    from convers.contracts.provider import AutoChoice

    monkeypatch.setattr(registry, "installed", lambda kind: {"crashes": None, "works": None})

    class Works:
        @classmethod
        def auto_choice(cls, settings: object) -> AutoChoice:
            return AutoChoice(100, True, "fine")

    def load(kind: str, name: str) -> object:
        if name == "crashes":
            raise ImportError("no module named nothing")
        return Works

    monkeypatch.setattr(registry, "load", load)
    resolution = registry.resolve_auto("tts", load_settings(environ={}))
    assert resolution.name == "works"
    assert dict(resolution.candidates)["crashes"].detail.startswith("cannot be asked: ImportError")


def test_fresh_install_picks_whisper_and_piper_from_the_packages(tmp_path: Path) -> None:
    from convers.packaged_models import PIPER_JOE, WHISPER_TINY_EN

    if WHISPER_TINY_EN.folder() is None or PIPER_JOE.folder() is None:
        pytest.skip("the model packages are not installed (scripts/install.sh installs them)")
    settings = load_settings(environ={}, cli={"data_dir": str(tmp_path)})
    stt = registry.resolve_auto("stt", settings)
    tts = registry.resolve_auto("tts", settings)
    assert (stt.name, tts.name) == ("faster-whisper", "piper")
    assert "tiny.en" in stt.detail and "en_US-joe-medium" in tts.detail
