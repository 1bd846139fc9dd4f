"""VAD providers on real (espeak-ng) speech and on silence."""

from __future__ import annotations

import numpy as np
import pytest

from convers import registry
from convers.audio import Rechunker, concat, frame_from_float, silence
from convers.config import Settings
from convers.contracts.audio import AudioFrame
from convers.contracts.vad import Vad
from convers.providers.vad.energy import EnergyVad
from convers.providers.vad.silero import SileroVad
from convers.providers.vad.webrtc import WebRtcVad
from tests.speech import SpeechMaker, speech  # noqa: F401

LEAD_S = 1.0
TAIL_S = 1.0
SENTENCE = "Hello, what is the weather like today in the city?"


def scores(vad: Vad, audio: AudioFrame) -> list[tuple[float, float]]:
    """(frame start time, probability) for every whole VAD frame of the audio."""
    chunker = Rechunker(vad.frame_samples, vad.sample_rate)
    frames = chunker.push(audio)
    step = vad.frame_samples / vad.sample_rate
    return [(i * step, vad.speech_probability(f.pcm)) for i, f in enumerate(frames)]


def utterance(maker: SpeechMaker) -> tuple[AudioFrame, float]:
    """Speech padded with silence, and the time the speech ends."""
    spoken = maker.frame(SENTENCE)
    return maker.padded(SENTENCE, LEAD_S, TAIL_S), LEAD_S + spoken.duration_s


def split(result: list[tuple[float, float]], speech_end_s: float, frame_s: float) -> tuple[list[float], list[float]]:
    """Probabilities in clear silence (away from the speech edges) and inside the speech."""
    quiet = [p for t, p in result if t + frame_s < LEAD_S - 0.1 or t > speech_end_s + 0.4]
    inside = [p for t, p in result if LEAD_S + 0.1 < t and t + frame_s < speech_end_s - 0.1]
    return quiet, inside


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.mark.parametrize("name", ["silero", "webrtc", "energy"])
def test_providers_build_from_settings_and_follow_the_protocol(name: str, settings: Settings) -> None:
    assert registry.load("vad", name).availability(settings).usable
    vad = registry.create("vad", name, settings)
    assert isinstance(vad, Vad)
    assert vad.speech_probability(b"\x00\x00" * vad.frame_samples) < 0.5
    with pytest.raises(ValueError, match="Rechunker"):
        vad.speech_probability(b"\x00\x00" * (vad.frame_samples + 1))


def test_silero_high_in_speech_low_in_silence(speech: SpeechMaker, settings: Settings) -> None:  # noqa: F811
    vad = SileroVad.from_settings(settings)
    audio, speech_end = utterance(speech)
    quiet, inside = split(scores(vad, audio), speech_end, 512 / 16000)
    assert max(quiet) < 0.1
    assert np.mean(inside) > 0.75
    # Most of the sentence is confidently speech (gaps between words are allowed to dip).
    assert np.mean(np.array(inside) > 0.5) > 0.8


def test_silero_reset_forgets_state_and_results_repeat(speech: SpeechMaker, settings: Settings) -> None:  # noqa: F811
    vad = SileroVad.from_settings(settings)
    audio, _ = utterance(speech)
    first = [p for _, p in scores(vad, audio)]
    vad.reset()
    second = [p for _, p in scores(vad, audio)]
    assert first == pytest.approx(second, abs=1e-5)


def test_silero_carries_context_between_frames(speech: SpeechMaker, settings: Settings) -> None:  # noqa: F811
    """Scoring a frame after its real predecessor differs from scoring it on a fresh state."""
    vad = SileroVad.from_settings(settings)
    frames = Rechunker(512, 16000).push(utterance(speech)[0])
    middle = len(frames) // 2
    for frame in frames[:middle]:
        vad.speech_probability(frame.pcm)
    in_stream = vad.speech_probability(frames[middle].pcm)
    vad.reset()
    alone = vad.speech_probability(frames[middle].pcm)
    assert in_stream != pytest.approx(alone, abs=1e-4)


def test_silero_availability_names_the_model_or_why_not(tmp_path) -> None:
    found = SileroVad.availability(Settings())
    assert found.usable and "silero_vad" in found.detail
    missing = Settings.model_validate({"vad": {"options": {"model_path": str(tmp_path / "nope.onnx")}}})
    result = SileroVad.availability(missing)
    assert not result.usable and "nope.onnx" in result.detail
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        SileroVad.from_settings(missing)


def test_webrtc_speech_and_silence(speech: SpeechMaker) -> None:  # noqa: F811
    vad = WebRtcVad(aggressiveness=3)
    audio, speech_end = utterance(speech)
    quiet, inside = split(scores(vad, audio), speech_end, vad.frame_samples / 16000)
    assert max(quiet) == 0.0
    assert np.mean(inside) > 0.7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"aggressiveness": 4}, "aggressiveness"), ({"frame_ms": 25}, "frame_ms"), ({"sample_rate": 22050}, "sample_rate")],
)
def test_webrtc_rejects_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebRtcVad(**kwargs)


def test_webrtc_aggressiveness_comes_from_options() -> None:
    vad = WebRtcVad.from_settings(Settings.model_validate({"vad": {"options": {"aggressiveness": 1, "frame_ms": 30}}}))
    assert vad.aggressiveness == 1
    assert vad.frame_samples == 480


def test_energy_speech_over_noise(speech: SpeechMaker) -> None:  # noqa: F811
    rng = np.random.default_rng(1)
    noise = frame_from_float(rng.normal(0, 0.003, 16000 * 2), 16000)  # about -50 dBFS of hiss
    spoken = speech.frame(SENTENCE)
    mixed_speech = frame_from_float(
        np.frombuffer(spoken.pcm, dtype="<i2") / 32768.0 + rng.normal(0, 0.003, spoken.samples), 16000
    )
    vad = EnergyVad()
    audio = concat([noise, mixed_speech, noise])
    result = scores(vad, audio)
    step = vad.frame_samples / 16000
    settled_noise = [p for t, p in result if 0.5 < t < 1.9]
    inside = [p for t, p in result if 2.1 < t < 2.0 + spoken.duration_s - 0.1]
    assert max(settled_noise) < 0.2
    assert np.mean(np.array(inside) > 0.5) > 0.6
    assert vad.floor_dbfs < -40  # the speech did not drag the floor up to its own level
    assert step == 0.02


def test_energy_floor_never_drops_into_digital_silence() -> None:
    vad = EnergyVad()
    for _ in range(100):
        vad.speech_probability(silence(0.02, 16000).pcm)
    assert vad.floor_dbfs == EnergyVad.min_floor_dbfs
    # A whisper-quiet click in digital silence is not speech.
    faint = frame_from_float(np.full(320, 0.0005), 16000)
    assert vad.speech_probability(faint.pcm) < 0.1
    vad.reset()
    assert vad.floor_dbfs == EnergyVad.min_floor_dbfs
