"""Real speech for tests, made with espeak-ng and cached for the test session.

Import the fixture into a test module with `from tests.speech import speech  # noqa: F401`.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from convers.audio import concat, read_wav, resample, silence
from convers.contracts.audio import AudioFrame


class SpeechMaker:
    """Speaks text with espeak-ng into WAV files under `directory`; each text is synthesised once."""

    def __init__(self, directory: Path, voice: str = "en-us", words_per_minute: int = 150) -> None:
        self.directory = directory
        self.voice = voice
        self.words_per_minute = words_per_minute

    def wav(self, text: str) -> Path:
        key = hashlib.sha1(f"{self.voice}|{self.words_per_minute}|{text}".encode()).hexdigest()[:16]
        path = self.directory / f"{key}.wav"
        if not path.exists():
            subprocess.run(
                ["espeak-ng", "-v", self.voice, "-s", str(self.words_per_minute), "-w", str(path), text],
                check=True,
                capture_output=True,
            )
        return path

    def frame(self, text: str, sample_rate: int = 16000) -> AudioFrame:
        """The spoken text as PCM16 at `sample_rate` (espeak-ng itself speaks at 22050 Hz)."""
        return resample(read_wav(self.wav(text)), sample_rate)

    def padded(self, text: str, before_s: float, after_s: float, sample_rate: int = 16000) -> AudioFrame:
        """Silence, the spoken text, silence: an utterance as a microphone would hear it."""
        return concat([silence(before_s, sample_rate), self.frame(text, sample_rate), silence(after_s, sample_rate)])


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> SpeechMaker:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return SpeechMaker(tmp_path_factory.mktemp("speech"))


def words(text: str) -> list[str]:
    """Lower-case words without punctuation: what is compared of a transcript."""
    return re.findall(r"[a-z']+", text.lower())


def closeness(heard: str, said: str) -> float:
    """How close a transcript is to what was said, 0 to 1, by characters of the words (case and punctuation aside).

    Whisper tiny.en hears espeak-ng's "tell me about the weather" as "tell me I'm out of the weather"
    (0.84) when the utterance is cut a little differently: close, not always word for word.
    """
    return difflib.SequenceMatcher(None, " ".join(words(heard)), " ".join(words(said))).ratio()
