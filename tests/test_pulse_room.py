"""`convers talk`'s transport and echo canceller through a real audio server (a PulseAudio null sink as the
room, its monitor as the microphone): the real Piper voice, Silero, WebRTC AEC3, PortAudio's own timing."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from convers.app.wiring import build
from convers.bench.echo import AGENT_REPLIES, PERSON_INTERRUPTIONS, Voices
from convers.bench.pulse_room import PulseRoom, PulseUnavailable, measure
from convers.config import Settings
from convers.echo_cancelling import canceller_factory

pytestmark = pytest.mark.slow


def test_through_pulseaudio_the_canceller_removes_the_agents_echo_and_keeps_a_person(tmp_path, monkeypatch) -> None:
    if shutil.which("pulseaudio") is None:
        pytest.skip("pulseaudio is not installed (apt-get install pulseaudio pulseaudio-utils libasound2-plugins)")
    pytest.importorskip("sounddevice", reason="sounddevice/PortAudio is not installed (pip install 'convers[local-audio]', libportaudio2)")
    settings = Settings(data_dir=tmp_path / "data")
    make_canceller = canceller_factory(settings)
    assert make_canceller is not None
    (tmp_path / "pulse").mkdir()
    room = PulseRoom(tmp_path / "pulse")
    try:
        room.start()
    except PulseUnavailable as error:
        pytest.skip(f"PulseAudio will not start here: {error}")
    try:
        for key, value in room.environment().items():
            monkeypatch.setenv(key, value)
        voices = asyncio.run(Voices.synthesise(build("tts", settings), build("tts", settings, "espeak-ng"),
                                               AGENT_REPLIES[:3], PERSON_INTERRUPTIONS[:1]))
        # Two replies of the agent alone, then a person over the third, 1.5 s into it.
        result = measure(settings, make_canceller, room, voices, replies=3, person_every=3, workdir=tmp_path)
    finally:
        room.stop()

    # The echo came through the server at a steady delay (60 ms in 4 runs of `convers bench pulse-room`,
    # within one 20 ms speaker block), and the raw microphone's listener heard the agent in it.
    delay = result["delay_ms"]
    assert delay["n"] >= 5 and delay["p95"] - delay["p5"] <= 40, delay
    assert result["false_onsets_raw_per_min"] > 0, result
    # Learnt, the canceller removes most of it (71 dB p50 there) and the listener hears no one (while
    # it learns, an onset over the agent pauses nothing; on a loaded machine one came 0.1 s in)...
    assert result["echo_removed_db_p50"] >= 30, result
    assert result["false_onsets_cleaned_learnt"] == 0, result["false_onsets_cleaned_at_s"]
    # ... and the double-talk witness follows the speaker's lead over the microphone (0 dB when it did not).
    assert result["witness_removed_db_p50"] >= 10, result["witness_queued_blocks"]
    # The person is heard within 300 ms of their first sample (94-147 ms in those runs).
    (person,) = result["people"]
    assert person["vad_onset_after_ms"] is not None and person["vad_onset_after_ms"] <= 300, person
