"""The short Whisper window: how long a window an utterance gets (tables), and a real decode on it."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from convers.audio import pcm16_to_float32
from convers.bench.stt import normalise, parse_conditions, word_errors
from convers.config import Settings
from convers.packaged_models import WHISPER_TINY_EN
from convers.providers.stt import whisper_window
from convers.providers.stt.faster_whisper import FasterWhisperStt
from convers.providers.stt.whisper_window import (
    DEFAULT_RULE,
    FULL_WINDOW_FRAMES,
    WindowDecode,
    WindowRule,
    audio_frames,
    compression_ratio,
    parse_window,
    token_limit,
    window_frames,
)
from tests.speech import SpeechMaker, speech  # noqa: F401

RULE = WindowRule(min_window_s=10.0, pad_s=1.0, max_window_s=None)


@pytest.mark.parametrize(
    ("audio_s", "frames"),
    [
        (0.0, 1000),  # the floor
        (1.5, 1000),
        (9.0, 1000),  # 9 s + 1 s pad is exactly the floor
        (9.004, 1001),  # rounded up to whole 10 ms frames: the pad is never shortened
        (12.0, 1300),
        (28.99, 2999),
        (29.0, None),  # the padded window would be the whole 30 s: faster-whisper's own path
        (45.0, None),  # longer than one window: its path seeks window by window
    ],
)
def test_window_frames(audio_s: float, frames: int | None) -> None:
    assert window_frames(audio_s, RULE) == frames


@pytest.mark.parametrize(
    ("rule", "audio_s", "frames"),
    [
        (WindowRule(min_window_s=0.0, pad_s=0.0, max_window_s=None), 2.0, 200),  # the bare audio
        (WindowRule(min_window_s=0.0, pad_s=2.0, max_window_s=None), 2.0, 400),
        (WindowRule(min_window_s=5.0, pad_s=2.0, max_window_s=None), 2.0, 500),
        (WindowRule(min_window_s=30.0, pad_s=0.0, max_window_s=None), 2.0, None),  # a 30 s floor is the full window
        (WindowRule(min_window_s=12.0, pad_s=3.0, max_window_s=12.0), 0.5, 1200),  # the default's shape
        (WindowRule(min_window_s=12.0, pad_s=3.0, max_window_s=12.0), 9.0, 1200),
        (WindowRule(min_window_s=12.0, pad_s=3.0, max_window_s=12.0), 9.01, None),  # its pad no longer fits
    ],
)
def test_window_frames_follow_the_rule(rule: WindowRule, audio_s: float, frames: int | None) -> None:
    assert window_frames(audio_s, rule) == frames


def test_window_rule_rejects_negative_lengths() -> None:
    with pytest.raises(ValueError, match="min_window_s=-1"):
        WindowRule(min_window_s=-1.0)
    with pytest.raises(ValueError, match="negative"):
        window_frames(-0.5, RULE)


def test_the_default_window_is_short_for_a_question_and_full_for_long_speech() -> None:
    question = window_frames(3.0)
    assert question is not None and question <= FULL_WINDOW_FRAMES // 2
    assert window_frames(9.0) is not None  # the longest utterance measured was 8.5 s
    assert window_frames(12.0) is None and window_frames(40.0) is None


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (None, DEFAULT_RULE),
        ("auto", DEFAULT_RULE),
        ("full", None),
        (8, WindowRule(min_window_s=8.0, pad_s=DEFAULT_RULE.pad_s, max_window_s=8.0)),
        ("12.5", WindowRule(min_window_s=12.5, pad_s=DEFAULT_RULE.pad_s, max_window_s=12.5)),
    ],
)
def test_parse_window(value: Any, rule: WindowRule | None) -> None:
    assert parse_window(value) == rule


@pytest.mark.parametrize("value", ["short", -1, 31, [5]])
def test_parse_window_names_the_bad_value(value: Any) -> None:
    with pytest.raises(ValueError, match="stt.options.window"):
        parse_window(value)


def test_the_window_option_reaches_the_provider(tmp_path: Any) -> None:
    if WHISPER_TINY_EN.folder() is None:
        pytest.skip("packaged Whisper tiny.en not installed")
    for option, expected in (({}, DEFAULT_RULE), ({"window": "full"}, None), ({"window": 6}, WindowRule(6.0, DEFAULT_RULE.pad_s, 6.0))):
        settings = Settings.model_validate({"data_dir": str(tmp_path), "stt": {"options": option}})
        assert FasterWhisperStt.from_settings(settings).window == expected, option


def test_audio_frames_are_10_ms_hops() -> None:
    assert audio_frames(16000) == 100 and audio_frames(24000) == 150 and audio_frames(48000, 48000) == 100


def test_token_limit_leaves_room_for_fast_speech() -> None:
    # ~6 tokens a second at four words a second: twice that, plus room for punctuation.
    assert token_limit(500) == 16 + 60
    assert token_limit(1000) > 6 * 10 * 1.5


@pytest.mark.parametrize(
    ("decode", "silent", "doubtful", "looping"),
    [
        (WindowDecode("What time is it?", -0.2, 0.05, 0.9), False, False, False),
        (WindowDecode("", -1.5, 0.9, 0.0), True, False, False),  # faster-whisper drops it as no speech
        (WindowDecode(".", -0.9, 0.95, 0.1), True, False, False),  # digital silence on a short window
        (WindowDecode("Yes.", -0.9, 0.95, 0.4), False, False, False),  # a word is kept, as faster-whisper keeps it
        (WindowDecode(".", -0.3, 0.2, 0.1), False, False, False),  # the model thinks it heard speech: its call
        (WindowDecode("hmm", -1.4, 0.2, 0.5), False, True, False),  # unsure: its path retries at a higher temperature
        (WindowDecode("go " * 40, -0.1, 0.0, compression_ratio("go " * 40)), False, True, True),  # a loop
        (WindowDecode("fine so far", -0.1, 0.0, 0.9, truncated=True), False, True, True),  # ran into the token limit
    ],
)
def test_which_decodes_are_trusted(decode: WindowDecode, silent: bool, doubtful: bool, looping: bool) -> None:
    assert decode.silent is silent and decode.doubtful is doubtful and decode.looping is looping


class RecordingModel:
    """Stands in for faster_whisper.WhisperModel on the full path: records the temperatures asked for."""

    def __init__(self) -> None:
        self.temperatures: list[list[float]] = []

    def encode(self, features: Any) -> None:  # present, so transcribe takes the short window first
        raise AssertionError("decode_window is replaced in these tests")

    def transcribe(self, samples: Any, **options: Any) -> tuple[Any, Any]:
        from types import SimpleNamespace

        self.temperatures.append(list(options["temperature"]))
        return iter([SimpleNamespace(text=" Sam.")]), SimpleNamespace(language="en")


@pytest.mark.parametrize(
    ("decode", "ladder", "path", "temperatures"),
    [
        # Trusted: no second decode.
        (WindowDecode("What time is it?", -0.2, 0.05, 0.9), False, "window", []),
        # Unsure, not looping: one greedy decode on the 30 s window, not the sampling ladder.
        (WindowDecode("M", -1.7, 0.2, 0.1), False, "retry", [[0.0]]),
        # A loop: faster-whisper's whole fallback, which samples its way out of loops.
        (WindowDecode("go " * 40, -0.1, 0.0, compression_ratio("go " * 40)), False, "ladder",
         [list(whisper_window.TEMPERATURE_LADDER)]),
        (WindowDecode("fine so far", -0.1, 0.0, 0.9, truncated=True), False, "ladder",
         [list(whisper_window.TEMPERATURE_LADDER)]),
        # ladder=True keeps the old retry for every unsure decode (the benchmark's "!ladder").
        (WindowDecode("M", -1.7, 0.2, 0.1), True, "ladder", [list(whisper_window.TEMPERATURE_LADDER)]),
    ],
)
def test_an_unsure_short_decode_is_retried_once_greedily_and_a_loop_on_the_ladder(
    monkeypatch: pytest.MonkeyPatch, decode: WindowDecode, ladder: bool, path: str, temperatures: list[list[float]],
) -> None:
    import numpy as np

    monkeypatch.setattr(whisper_window, "decode_window", lambda *args, **kwargs: decode)
    model = RecordingModel()
    heard = whisper_window.transcribe(model, np.zeros(16000, np.float32), DEFAULT_RULE, language="en", ladder=ladder)
    assert heard.path == path and model.temperatures == temperatures
    assert heard.window_text == decode.text
    assert heard.text == (decode.text if path == "window" else "Sam.")


def test_word_errors_count_edits_after_normalising() -> None:
    assert normalise("What's the colour, Anna?") == ["what's", "the", "colour", "anna"]
    assert word_errors("My favourite color is green.", "my favorite colour is green") == (0, 5)
    assert word_errors("turn off the lights", "turn of lights please") == (3, 4)
    assert word_errors("", "") == (0, 0)
    # Whisper writes numbers in digits; the words said are what count.
    assert normalise("At 7, or 21.") == ["at", "seven", "or", "twenty", "one"]
    assert normalise("1,000 people") == ["one", "thousand", "people"]
    assert word_errors("twenty", "20.") == (0, 1) and word_errors("tomorrow at five", "Tomorrow at 5") == (0, 3)


@pytest.mark.parametrize(
    ("value", "prompt"),
    [(None, None), ("fillers", whisper_window.FILLER_PROMPT), ("none", None), ("", None),
     ("  Hello, Juniper.  ", "Hello, Juniper.")],
)
def test_parse_prompt(value: Any, prompt: str | None) -> None:
    assert whisper_window.parse_prompt(value) == prompt


def test_parse_prompt_names_the_bad_value() -> None:
    with pytest.raises(ValueError, match="stt.options.prompt"):
        whisper_window.parse_prompt(3)


def test_the_prompt_option_reaches_the_provider(tmp_path: Any) -> None:
    if WHISPER_TINY_EN.folder() is None:
        pytest.skip("packaged Whisper tiny.en not installed")
    for option, expected in (({}, None), ({"prompt": "fillers"}, whisper_window.FILLER_PROMPT),
                             ({"prompt": "Juniper, Ines"}, "Juniper, Ines")):
        settings = Settings.model_validate({"data_dir": str(tmp_path), "stt": {"options": option}})
        assert FasterWhisperStt.from_settings(settings).prompt == expected, option


def test_parse_conditions() -> None:
    full, window = parse_conditions("full, 10+1", [1])
    assert full.window is None and window.window == (10.0, 1.0) and window.threads == 1
    assert [c.label for c in parse_conditions("5+1", [1, 2])] == ["min 5 s + pad 1 s x1", "min 5 s + pad 1 s x2"]
    with pytest.raises(ValueError, match="MIN\\+PAD"):
        parse_conditions("ten", [1])
    plain, prompted = parse_conditions("12+3,12+3@fillers", [1])
    assert plain.prompt is None and prompted.prompt == whisper_window.FILLER_PROMPT
    assert prompted.label == "min 12 s + pad 3 s @fillers" and prompted.window == plain.window
    with pytest.raises(ValueError, match="@fillers"):
        parse_conditions("12+3@chatty", [1])
    configured, mixed = parse_conditions("12+3,12+3@fillers~int8_float32", [2])
    assert configured.compute_type is None and mixed.compute_type == "int8_float32"
    assert mixed.prompt == whisper_window.FILLER_PROMPT and mixed.label == "min 12 s + pad 3 s @fillers ~int8_float32"


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory: pytest.TempPathFactory) -> FasterWhisperStt:
    if importlib.util.find_spec("faster_whisper") is None or WHISPER_TINY_EN.folder() is None:
        pytest.skip("faster-whisper or the packaged Whisper tiny.en is not installed")
    return FasterWhisperStt.from_settings(Settings.model_validate({"data_dir": str(tmp_path_factory.mktemp("data"))}))


@pytest.mark.slow
@pytest.mark.parametrize(
    "text",
    ["What is the weather like in Paris today?", "Play some quiet music in the kitchen.", "Call my sister."],
)
def test_the_short_window_hears_a_sentence(tiny_en: FasterWhisperStt, speech: SpeechMaker, text: str) -> None:  # noqa: F811
    samples = pcm16_to_float32(speech.padded(text, 0.3, 0.2).pcm)
    heard = whisper_window.transcribe(tiny_en.load(), samples, DEFAULT_RULE, language="en")
    assert heard.path == "window", heard  # decoded on the short window, not handed to the full path
    assert normalise(heard.text) == normalise(text)
    full = whisper_window.transcribe(tiny_en.load(), samples, None, language="en")
    assert full.path == "full" and normalise(full.text) == normalise(heard.text)


@pytest.mark.slow
async def test_the_provider_decodes_on_the_short_window(tiny_en: FasterWhisperStt, speech: SpeechMaker) -> None:  # noqa: F811
    text = "Where did I park the car?"
    transcript = await tiny_en.transcribe(speech.padded(text, 0.3, 0.2, 48000))
    assert normalise(transcript.text) == normalise(text) and transcript.language == "en"


@pytest.mark.slow
def test_with_the_filler_prompt_a_lone_um_is_written_as_one(tiny_en: FasterWhisperStt, speech: SpeechMaker) -> None:  # noqa: F811
    """What turn-taking needs before a thinking pause: the filler as a filler, not as words."""
    samples = pcm16_to_float32(speech.padded("so um", 0.3, 0.2).pcm)
    prompted = whisper_window.transcribe(tiny_en.load(), samples, DEFAULT_RULE, language="en",
                                         prompt=whisper_window.FILLER_PROMPT)
    assert normalise(prompted.text)[-1] in ("um", "umm", "uhm"), prompted
    sentence = pcm16_to_float32(speech.padded("What is the weather like in Paris today?", 0.3, 0.2).pcm)
    heard = whisper_window.transcribe(tiny_en.load(), sentence, DEFAULT_RULE, language="en",
                                      prompt=whisper_window.FILLER_PROMPT)
    assert normalise(heard.text) == normalise("What is the weather like in Paris today?"), heard


def test_the_prompt_reaches_the_full_path() -> None:
    import numpy as np

    model = TranscribeOnly()
    whisper_window.transcribe(model, np.zeros(16000, np.float32), DEFAULT_RULE, language="en", prompt="Um, so.")
    assert model.options["initial_prompt"] == "Um, so."


class TranscribeOnly:
    """A model with faster-whisper's transcribe and nothing else (no encode step to cut short)."""

    def transcribe(self, samples: Any, **options: Any) -> tuple[Any, Any]:
        self.options = options
        segment = type("Segment", (), {"text": " Hello there. "})()
        return iter([segment]), type("Info", (), {"language": "en"})()


def test_a_model_without_an_encode_step_takes_the_full_path() -> None:
    import numpy as np

    model = TranscribeOnly()
    heard = whisper_window.transcribe(model, np.zeros(16000, np.float32), DEFAULT_RULE, language="en")
    assert heard == whisper_window.WindowedTranscript("Hello there.", "en", "full")
    assert model.options["without_timestamps"] is True and model.options["vad_filter"] is False
