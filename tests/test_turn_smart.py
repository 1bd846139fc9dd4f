"""smart-turn v3.2 on real speech (the model from the pipecat-ai package), and what happens when it is missing or broken."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from convers import registry
from convers.app import wiring
from convers.audio import concat, resample, silence
from convers.config import Settings
from convers.contracts.audio import AudioFrame
from convers.model_checks import ModelFileError
from convers.packaged_models import SMART_TURN
from convers.providers.turn.smart_turn import SmartTurn, model_sources
from tests.speech import SpeechMaker, speech  # noqa: F401

pytestmark = pytest.mark.skipif(SMART_TURN.folder() is None, reason="pipecat-ai (the smart-turn model) is not installed")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SmartTurn:
    return SmartTurn.from_settings(Settings(data_dir=tmp_path_factory.mktemp("data")))


def spoken(speech: SpeechMaker, text: str, tail_s: float = 0.2) -> AudioFrame:  # noqa: F811
    return speech.padded(text, before_s=0.2, after_s=tail_s)


def test_auto_picks_the_packaged_model(tmp_path: Path) -> None:
    resolution = registry.resolve_auto("turn_end", Settings(data_dir=tmp_path))
    assert resolution.name == "smart-turn"
    assert "pipecat-ai" in resolution.detail


def test_a_finished_question_scores_above_a_filler(model: SmartTurn, speech: SpeechMaker) -> None:  # noqa: F811
    question = model.probability(spoken(speech, "what is the weather like tomorrow"))
    filler = model.probability(spoken(speech, "my favourite colour is um"))
    assert 0.0 <= filler < 0.5 < question <= 1.0


def test_audio_longer_than_the_window_is_judged_on_its_newest_eight_seconds(model: SmartTurn, speech: SpeechMaker) -> None:  # noqa: F811
    tail = spoken(speech, "can you tell me a joke")
    noise = AudioFrame((np.random.default_rng(7).standard_normal(16000 * 9) * 3000).astype("<i2").tobytes(), 16000)
    long = concat([noise, tail])
    newest = AudioFrame(long.pcm[-16000 * 8 * 2 :], 16000)
    assert long.duration_s > 9
    assert model.probability(long) == pytest.approx(model.probability(newest), abs=1e-6)
    # ... and not on its oldest: the noise alone scores differently from the question.
    assert model.probability(AudioFrame(long.pcm[: 16000 * 8 * 2], 16000)) != pytest.approx(model.probability(newest), abs=1e-3)


def test_other_sample_rates_are_resampled(model: SmartTurn, speech: SpeechMaker) -> None:  # noqa: F811
    audio = spoken(speech, "what is the weather like tomorrow")
    at_48k = resample(audio, 48000)
    assert model.probability(at_48k) == pytest.approx(model.probability(audio), abs=0.05)


def test_the_async_call_runs_off_the_loop(model: SmartTurn) -> None:
    async def main() -> tuple[float | None, float | None]:
        empty = await model.done_probability(AudioFrame(b"", 16000))
        quiet = await model.done_probability(silence(1.0, 16000))
        return empty, quiet

    empty, quiet = asyncio.run(main())
    assert empty is None  # nothing heard: no opinion
    assert quiet is not None and 0.0 <= quiet <= 1.0


def test_a_corrupt_model_file_fails_with_a_clear_message(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(ModelFileError, match="convers models pull turn"):
        SmartTurn(broken).probability(silence(0.5, 16000))


def test_a_missing_configured_model_is_passed_over_for_the_packaged_one(tmp_path: Path) -> None:
    settings = Settings.model_validate({"data_dir": str(tmp_path), "turn_end": {"model_path": str(tmp_path / "nope.onnx")}})
    sources = model_sources(settings)
    assert sources[0].broken and "turn_end.model_path" in (sources[0].problem or "")
    resolution = registry.resolve_auto("turn_end", settings)
    assert resolution.name == "smart-turn" and "passed over" in resolution.detail


def test_a_pulled_model_that_fails_its_checksum_is_not_loaded(tmp_path: Path) -> None:
    from convers.downloads import PULLED_RECORD, models_dir, smart_turn_path
    from convers.private_files import write_json_atomically

    settings = Settings(data_dir=tmp_path)
    pulled = smart_turn_path(settings)
    pulled.parent.mkdir(parents=True)
    pulled.write_bytes(b"tampered")
    write_json_atomically(models_dir(settings) / PULLED_RECORD, {str(pulled): "0" * 64})
    sources = model_sources(settings)
    pulled_source = next(s for s in sources if "pulled" in s.label)
    assert not pulled_source.usable and pulled_source.broken
    assert SmartTurn.from_settings(settings).model_path != pulled


def test_without_a_usable_model_the_session_gets_the_silence_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.model_validate(
        {"data_dir": str(tmp_path), "turn_end": {"provider": "smart-turn", "model_path": str(tmp_path / "nope.onnx")}}
    )
    monkeypatch.setattr(SmartTurn, "from_settings", classmethod(lambda cls, s: (_ for _ in ()).throw(FileNotFoundError("gone"))))
    assert wiring.build_turn_end(settings) is None
