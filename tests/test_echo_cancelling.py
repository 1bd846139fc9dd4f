"""Echo cancellation: the WebRTC canceller, EchoCancelling, PlayedAudio, the hello's `aec`, the
arbiter while the canceller learns, and a page whose echo the server cancels."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets

from convers.audio import resample
from convers.bench.echo import Room, RoomEcho
from convers.clock_drift import TAPS
from convers.config import ConfigError, Settings
from convers.contracts.audio import AudioFrame
from convers.contracts.transport import InboundAudio
from convers.echo_cancelling import RELEARN_S, EchoCancelling, canceller_factory
from convers.engine.barge_in.arbiter import BargeInArbiter, Cut, Pause, StartReply, SuspectEcho
from convers.engine.listening.turn_taking import SpeechOnset, UserTurnEnded
from convers.engine.listening.verdict import Verdict
from convers.policies import BargeInPolicy
from convers.providers.echo.webrtc import WebRtcEchoCanceller
from convers.transports.browser.protocol import Hello, parse_text
from convers.transports.played_audio import PlayedAudio
from tests.browser_helpers import TOKEN, EchoSession, running_server

RATE = 16000


def speech_like(seconds: float, seed: int = 1) -> np.ndarray:
    """Voiced sound with a wandering pitch and syllable-rate loudness: what a canceller must follow."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None)
    return 0.1 * voiced * syllables + 0.002 * rng.standard_normal(len(t))


def pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def level_db(frame_pcm: bytes) -> float:
    samples = np.frombuffer(frame_pcm, dtype="<i2").astype(np.float64) / 32768
    return 10 * math.log10(float(np.mean(samples * samples)) + 1e-12)


# ------------------------------------------------------------------ the canceller itself


def test_webrtc_canceller_removes_the_echo_of_what_was_played() -> None:
    played = speech_like(6.0)
    room = RoomEcho(Room(delay_ms=80, rt60_s=0.3, echo_db=0).impulse(np.random.default_rng(2)), 1.0)
    echo = EchoCancelling(WebRtcEchoCanceller())
    heard, cleaned = bytearray(), bytearray()
    for start in range(0, len(played) - 320, 320):  # 20 ms blocks at 48 kHz on the speaker side
        block = played[start : start + 320]
        echo.played(resample(AudioFrame(pcm(block), RATE), 48000))
        mic = pcm(room.push(block))
        out = echo.cleaned(AudioFrame(mic, RATE))
        assert out.sample_rate == RATE
        if start >= 3 * RATE:  # once it has learnt the room
            heard += mic
            cleaned += out.pcm
    assert level_db(bytes(heard)) - level_db(bytes(cleaned)) > 20


# A clean speaker, and one that distorts (tanh) as a small speaker driven hard does: a linear filter
# cannot follow that part of the echo, so the double-talk cue must not take it for a person.
@pytest.mark.parametrize("speaker_drive", [0.0, 2.5])
def test_webrtc_canceller_tells_a_person_over_the_agent_from_its_echo(speaker_drive: float) -> None:
    # The person comes 10 s in: on this buzz of harmonics (a poorer teacher than a voice) the linear
    # filter has removed 10 dB of the agent's echo by then, and the cue trusts it from there.
    played = speech_like(13.0)
    person = np.zeros_like(played)
    start, end = round(10.0 * RATE), round(11.5 * RATE)
    person[start:end] = speech_like(1.5, seed=9)[: end - start] * 1.3
    room = RoomEcho(Room(delay_ms=60, rt60_s=0.3, echo_db=0).impulse(np.random.default_rng(3)), 1.0, speaker_drive)
    echo = EchoCancelling(WebRtcEchoCanceller())
    talk: list[tuple[float, bool]] = []
    for at in range(0, len(played) - 320, 320):
        block = played[at : at + 320]
        echo.played(AudioFrame(pcm(block), RATE))
        echo.cleaned(AudioFrame(pcm(room.push(block) + person[at : at + 320]), RATE))
        talk.append(((at + 320) / RATE, echo.double_talk))
    assert not any(said for t, said in talk if 3.0 <= t < 10.0)  # the agent alone, once learnt
    assert any(said for t, said in talk if 10.0 <= t < 10.2)  # the person, within 200 ms
    # Heard through its syllables (half of this voice is the gaps between them).
    assert sum(said for t, said in talk if 10.0 <= t < 11.5) > 0.2 * 1.5 / 0.02


def _echo_delay_samples(room: RoomEcho, seconds: float) -> list[int]:
    """Where one click a second comes back from `room`: its delay, in samples, each second."""
    delays = []
    for _ in range(round(seconds)):
        played = np.zeros(RATE)
        played[0] = 1.0
        heard = np.concatenate([room.push(played[at : at + 320]) for at in range(0, RATE, 320)])
        delays.append(int(np.argmax(np.abs(heard))))
    return delays


@pytest.mark.parametrize("drift_ppm", [200.0, -200.0])
def test_a_room_with_two_clocks_drifts_its_echo_delay_at_the_stated_rate(drift_ppm: float) -> None:
    impulse = np.zeros(800)
    impulse[480] = 1.0  # 30 ms, nothing else
    steady = _echo_delay_samples(RoomEcho(impulse, 1.0), 30)
    assert set(steady) == {480}
    drifting = _echo_delay_samples(RoomEcho(impulse, 1.0, drift_ppm=drift_ppm, drift_reserve_s=60), 30)
    # 200 ppm: 3.2 samples more (or less) delay every second, 93 over the 29 seconds between.
    change = drifting[-1] - drifting[0]
    assert abs(change - drift_ppm / 1e6 * RATE * 29) <= 2, drifting
    assert min(drifting) >= 480  # a slower microphone starts late enough never to hear the echo early


def test_a_microphone_of_its_own_rate_delivers_its_clocks_samples() -> None:
    # 200 ppm faster: 1.0002 samples heard for every one played, and the echo (30 ms, a click a
    # second) where the microphone's clock puts it: the click played at sample s, at (s + 480) x 1.0002.
    impulse = np.zeros(800)
    impulse[480] = 1.0
    room = RoomEcho(impulse, 1.0, drift_ppm=200.0, own_rate=True)
    played = np.zeros(30 * RATE)
    played[:: RATE] = 1.0
    heard = np.concatenate([room.push(played[at : at + 320]) for at in range(0, len(played), 320)])
    assert abs(len(heard) - len(played) * 1.0002) <= 1
    starts = range(RATE, len(played) - RATE, RATE)
    clicks = [at + int(np.argmax(np.abs(heard[at : at + 2000]))) for at in starts]
    expected = [(at + 480 + TAPS) * 1.0002 for at in starts]
    assert np.max(np.abs(np.asarray(clicks) - np.asarray(expected))) <= 1.5


def test_webrtc_canceller_refuses_a_block_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="160 samples"):
        WebRtcEchoCanceller().capture(b"\x00\x00" * 100)


# ------------------------------------------------------------------ EchoCancelling


class CountingCanceller:
    """Records blocks; returns the microphone halved so a test can see it went through."""

    name = "counting"
    sample_rate = RATE
    frame_samples = 160

    def __init__(self, fail: bool = False) -> None:
        self.rendered: list[bytes] = []
        self.captured: list[bytes] = []
        self.fail = fail

    def render(self, block: bytes) -> None:
        self.rendered.append(block)

    def capture(self, block: bytes) -> bytes:
        if self.fail:
            raise RuntimeError("native failure")
        self.captured.append(block)
        return (np.frombuffer(block, dtype="<i2") // 2).astype("<i2").tobytes()


def test_blocks_reach_the_canceller_played_first_and_in_whole_blocks() -> None:
    canceller = CountingCanceller()
    echo = EchoCancelling(canceller)
    echo.played(AudioFrame(pcm(speech_like(0.03)), RATE))  # 480 samples: 3 blocks
    out = echo.cleaned(AudioFrame(b"\x10\x00" * 250, RATE))  # 250 samples: 1 block now, 90 wait
    assert len(canceller.rendered) == 3 and len(canceller.captured) == 1
    assert out.samples == 160 and set(np.frombuffer(out.pcm, dtype="<i2")) == {8}
    out = echo.cleaned(AudioFrame(b"\x10\x00" * 70, RATE))  # 90 + 70 = one more block
    assert out.samples == 160


def test_the_canceller_s_output_is_used_only_while_the_agents_echo_may_be_in_the_room() -> None:
    canceller = CountingCanceller()
    echo = EchoCancelling(canceller)
    # Nothing played yet: the microphone comes out as it is (the canceller still hears every block).
    assert values(echo.cleaned(AudioFrame(b"\x10\x00" * 160, RATE))) == [16]
    echo.played(AudioFrame(pcm(speech_like(0.5)), RATE))
    assert values(echo.cleaned(AudioFrame(b"\x10\x00" * 160, RATE))) == [8]  # the agent speaks: its output
    echo.played(AudioFrame(b"\x00\x00" * round(0.9 * RATE), RATE))
    assert values(echo.cleaned(AudioFrame(b"\x10\x00" * 160, RATE))) == [8]  # its echo may still ring
    echo.played(AudioFrame(b"\x00\x00" * round(0.2 * RATE), RATE))
    assert values(echo.cleaned(AudioFrame(b"\x10\x00" * 160, RATE))) == [16]  # silent a second: gone
    assert len(canceller.captured) == 4


def test_webrtc_canceller_s_output_is_its_input_8_ms_late_with_nothing_played() -> None:
    # Why the microphone itself is handed on once the agent's echo is gone.
    from convers.providers.echo.webrtc import WebRtcEchoCanceller

    canceller = WebRtcEchoCanceller()
    noise = np.random.default_rng(1).standard_normal(2 * RATE) * 0.1
    out = []
    for start in range(0, len(noise), 160):
        canceller.render(bytes(320))
        out.append(np.frombuffer(canceller.capture(pcm(noise[start : start + 160])), dtype="<i2") / 32768)
    heard = np.concatenate(out)
    lags = [float(np.dot(heard[RATE + lag : RATE + lag + 8000], noise[RATE : RATE + 8000])) for lag in range(400)]
    assert int(np.argmax(lags)) == 128


def test_learning_counts_only_audible_agent_speech() -> None:
    echo = EchoCancelling(CountingCanceller(), learning_s=0.5)
    assert echo.learning
    echo.played(AudioFrame(b"\x00\x00" * RATE, RATE))  # a second of silence teaches nothing
    echo.cleaned(AudioFrame(b"\x00\x00" * 160, RATE))
    assert echo.learning
    echo.played(AudioFrame(pcm(speech_like(1.0)), RATE))
    echo.cleaned(AudioFrame(b"\x00\x00" * 160, RATE))
    assert not echo.learning


def test_after_a_device_glitch_the_room_is_learnt_again_for_a_moment_of_agent_speech() -> None:
    def voice(seconds: float) -> AudioFrame:  # audible in every block, so every block counts
        return AudioFrame(pcm(np.random.default_rng(3).standard_normal(round(seconds * RATE)) * 0.1), RATE)

    echo = EchoCancelling(CountingCanceller(), learning_s=3.0)
    echo.played(voice(3.2))
    echo.cleaned(AudioFrame(b"\x00\x00" * 160, RATE))
    assert not echo.learning
    echo.device_glitched()  # from the speaker's audio thread: it underflowed
    assert not echo.learning  # told at the next microphone frame, in order with the audio
    echo.cleaned(AudioFrame(b"\x00\x00" * 160, RATE))
    assert echo.learning
    echo.played(voice(RELEARN_S - 0.2))
    echo.cleaned(AudioFrame(b"\x00\x00" * 160, RATE))
    assert echo.learning
    echo.played(voice(0.4))
    echo.cleaned(AudioFrame(b"\x00\x00" * 160, RATE))
    assert not echo.learning


def test_a_failing_canceller_lets_the_microphone_through(caplog: pytest.LogCaptureFixture) -> None:
    echo = EchoCancelling(CountingCanceller(fail=True))
    mic = AudioFrame(b"\x10\x00" * 320, RATE)
    with caplog.at_level(logging.WARNING):
        first = echo.cleaned(mic)
        second = echo.cleaned(mic)
    assert echo.failed and not echo.learning
    assert first.pcm == mic.pcm and second.pcm == mic.pcm
    assert "echo cancellation failed" in caplog.text


def test_a_resumed_canceller_keeps_what_it_learnt_and_drops_the_old_streams_audio() -> None:
    canceller = CountingCanceller()
    echo = EchoCancelling(canceller, learning_s=0.5)
    echo.played(AudioFrame(pcm(speech_like(1.0))[: 2 * (RATE + 80)], RATE))  # 80 samples past a block
    out = echo.cleaned(AudioFrame(b"\x10\x00" * 250, RATE))  # one block out, 90 samples wait
    assert out.samples == 160 and echo.unsuppressed(out) is not None
    echo.played(AudioFrame(pcm(speech_like(0.05)), 48000))  # queued: the next microphone frame would render it
    assert not echo.learning
    heard_s, rendered = echo.heard_s, len(canceller.rendered)

    echo.resume_stream()

    assert echo.heard_s == heard_s and not echo.learning
    assert echo.unsuppressed(out) is None  # the old stream's audio is not kept
    echo.played(AudioFrame(b"\x00\x00" * 80, RATE))  # 80 + the old 80 would make a block
    out = echo.cleaned(AudioFrame(b"\x20\x00" * 160, RATE))
    assert len(canceller.rendered) == rendered  # neither the queued 50 ms nor the old remainder
    # The new microphone alone (as it is: after a reconnection the agent is silent, no echo to remove).
    assert out.samples == 160 and values(out) == [32]
    # The new stream may come at another rate.
    assert echo.cleaned(AudioFrame(b"\x20\x00" * 960, 48000)).sample_rate == RATE


def test_canceller_factory_follows_the_settings(caplog: pytest.LogCaptureFixture) -> None:
    assert canceller_factory(Settings(echo={"enabled": False})) is None
    made = canceller_factory(Settings())
    assert made is not None and made().name == "webrtc"
    with caplog.at_level(logging.WARNING):
        assert canceller_factory(Settings(echo={"provider": "nonesuch"})) is None
    assert "echo cancellation is off" in caplog.text
    with pytest.raises(ConfigError, match="noise_supression"):
        canceller_factory(Settings(echo={"options": {"noise_supression": True}}))


# ------------------------------------------------------------------ PlayedAudio


def tone(ms: int, value: int) -> AudioFrame:
    return AudioFrame(np.full(RATE * ms // 1000, value, dtype="<i2").tobytes(), RATE)


def values(frame: AudioFrame) -> list[int]:
    return sorted(set(np.frombuffer(frame.pcm, dtype="<i2").tolist()))


def test_played_audio_follows_reports_pauses_and_flushes() -> None:
    played = PlayedAudio(RATE)
    assert values(played.next(160)) == [0]  # nothing playing yet
    played.sent(1, tone(100, 5))
    played.sent(1, tone(100, 7))
    assert values(played.next(160)) == [0]  # sent, but the client has not started it
    played.report(1, 0)
    assert values(played.next(1600)) == [5]  # the first 100 ms
    played.paused(1)
    assert values(played.next(160)) == [0]
    played.resumed(1)
    played.report(1, 100)  # within the resync tolerance: the playhead is not moved
    assert values(played.next(160)) == [7]
    played.report(1, 40)  # 70 ms off: the client's word is taken
    assert values(played.next(160)) == [5]
    played.flushed(1)
    assert played.playing_turn is None and values(played.next(160)) == [0]
    played.sent(1, tone(100, 9))  # a late frame of the flushed turn is not the client's audio
    played.report(1, 0)
    assert values(played.next(160)) == [0]


def test_played_audio_moves_to_the_next_turn_at_its_first_report() -> None:
    played = PlayedAudio(RATE)
    played.sent(1, tone(20, 3))
    played.sent(2, tone(100, 4))
    played.report(1, 0)
    assert values(played.next(320)) == [3]
    assert values(played.next(320)) == [0]  # turn 1 is over, turn 2 not started
    played.report(2, 0)
    assert values(played.next(320)) == [4]
    played.report(1, 20)  # a late report of the finished turn changes nothing
    assert played.playing_turn == 2


# ------------------------------------------------------------------ the hello


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"hello","sample_rate":16000}', Hello(16000, (), True)),
        ('{"type":"hello","sample_rate":16000,"aec":false}', Hello(16000, (), False)),
        ('{"type":"hello","sample_rate":16000,"aec":"off"}', "bad_hello"),
        ('{"type":"hello","sample_rate":16000,"aec":0}', "bad_hello"),
        ('{"type":"hello","sample_rate":16000,"aec":false,"echo_reference":true}', Hello(16000, (), False, True)),
        # A client that cancels its own echo has no reference to send.
        ('{"type":"hello","sample_rate":16000,"echo_reference":true}', Hello(16000, (), True, False)),
        ('{"type":"hello","sample_rate":16000,"aec":false,"echo_reference":1}', "bad_hello"),
    ],
)
def test_hello_says_whether_the_client_cancelled_echo(text: str, expected: object) -> None:
    parsed = parse_text(text)
    if isinstance(expected, str):
        assert getattr(parsed, "code", None) == expected
    else:
        assert parsed == expected


# ------------------------------------------------------------------ the arbiter while the canceller learns


class Reply:
    turn = 1
    played_ms = 500.0
    settled = False
    generating = True
    audio_ms = 4000.0

    def unheard_text(self) -> str:
        return "the rest"

    def said_text(self) -> str:
        return "Good morning! The kettle is a fine place to start. Shall I remind you at half past eight?"


def ended(at: float) -> UserTurnEnded:
    return UserTurnEnded(at=at, audio=AudioFrame(b"", RATE), started_at=at - 0.5, ended_at=at - 0.3)


def test_while_learning_an_onset_pauses_nothing_and_the_cut_waits() -> None:
    policy = BargeInPolicy()
    learning = BargeInArbiter(policy)
    assert learning.heard(SpeechOnset(at=1.0, started_at=1.0), Reply(), echo_learning=True) == []
    assert learning.voice(policy.min_barge_in_speech_s + 0.05, Reply(), echo_learning=True) == []
    cut = learning.voice(policy.min_barge_in_speech_while_echo_learning_s, Reply(), echo_learning=True)
    assert [type(action) for action in cut] == [Cut]
    learnt = BargeInArbiter(policy)
    assert learnt.heard(SpeechOnset(at=1.0, started_at=1.0), Reply()) == [Pause(1)]
    assert [type(action) for action in learnt.voice(policy.min_barge_in_speech_s, Reply())] == [Cut]


def suspect_after(arbiter: BargeInArbiter, speech_s: float) -> SuspectEcho | None:
    """Speech over the agent while the canceller learns, ended after `speech_s`: what the arbiter made of it."""
    arbiter.heard(SpeechOnset(at=1.0, started_at=1.0), Reply(), echo_learning=True)
    arbiter.heard(UserTurnEnded(at=1.0 + speech_s + 0.5, audio=AudioFrame(b"", RATE), started_at=1.0,
                                ended_at=1.0 + speech_s), Reply(), echo_learning=True)
    return arbiter.ended_suspect


@pytest.mark.parametrize(("speech_s", "transcript", "a_person"), [
    (1.5, "kettle", False),  # one long word of the agent's
    (0.6, "what time is it", False),  # too short: the echo lets runs this long through
    (1.5, "the kettle is a fine place", False),  # the agent's words in order
    (1.5, "at half past 8", False),  # "at half past eight", as the recogniser writes it
    (1.5, "what time is my appointment tomorrow", True),
    (1.5, "Sorry, can you say the first part again?", True),  # "the first" alone is a short run
    (1.5, "", False),
])
def test_speech_over_the_agent_while_learning_is_a_person_only_by_length_and_words_of_its_own(
    speech_s: float, transcript: str, a_person: bool,
) -> None:
    arbiter = BargeInArbiter()
    suspect = suspect_after(arbiter, speech_s)
    assert suspect is not None and suspect.said == Reply().said_text()
    verdict: Verdict = "words" if transcript else "nothing"
    actions = arbiter.transcribed(verdict, transcript, Reply(), suspect)
    assert actions == ([StartReply(transcript)] if a_person else [])


def test_pieces_of_speech_over_the_agent_close_together_are_judged_as_one() -> None:
    """The learning canceller's suppressor cuts a voice into pieces: a question of 1.3 s came as 0.22 s
    and 0.47 s with 0.24 s between; the second piece is judged, and read, from the first one's start."""
    arbiter = BargeInArbiter()
    audio: dict[float, AudioFrame] = {}

    def piece(start: float, end: float) -> SuspectEcho | None:
        audio[start] = AudioFrame(bytes(round((end - start) * RATE) * 2), RATE)
        arbiter.heard(SpeechOnset(at=start, started_at=start), Reply(), echo_learning=True)
        arbiter.heard(UserTurnEnded(at=end + 0.5, audio=audio[start], started_at=start, ended_at=end),
                      Reply(), echo_learning=True)
        return arbiter.ended_suspect

    first = piece(1.0, 1.22)
    assert first is not None and first.since is None
    second = piece(1.46, 1.93)
    assert second is not None and second.since is audio[1.0] and abs(second.speech_s - 0.93) < 1e-9
    third = piece(2.2, 2.5)
    assert third is not None and third.since is audio[1.0] and abs(third.speech_s - 1.5) < 1e-9
    assert arbiter.transcribed("words", "what sort of animal did I adopt", Reply(), third) == [
        StartReply("what sort of animal did I adopt")]
    # Past the gap, a piece stands alone, and starts a run of its own.
    alone = piece(3.5, 3.8)
    assert alone is not None and alone.since is None and abs(alone.speech_s - 0.3) < 1e-9
    after = piece(4.0, 4.3)
    assert after is not None and after.since is audio[3.5] and abs(after.speech_s - 0.8) < 1e-9


def test_short_speech_over_the_agent_while_learning_is_echo_and_the_next_turn_is_heard() -> None:
    arbiter = BargeInArbiter()
    suspect = suspect_after(arbiter, 0.8)
    assert arbiter.transcribed("words", "Thank you.", Reply(), suspect) == []
    # The next turn, spoken once the canceller has learnt, is the person's.
    arbiter.heard(SpeechOnset(at=3.0, started_at=3.0), Reply())
    arbiter.heard(ended(3.8), Reply())
    assert arbiter.ended_suspect is None
    assert arbiter.transcribed("words", "what time is it", Reply()) == [StartReply("what time is it")]


# ------------------------------------------------------------------ a page whose echo the server cancels


async def test_the_server_cancels_the_echo_of_a_page_that_asks(tmp_path: Path) -> None:
    """A client that cancels nothing plays the agent's audio and sends it back in its microphone
    (80 ms later, through a room); what reaches the session has the echo taken out."""
    double = EchoSession(output_rate=24000, reply_audio_s=5.0)
    async with running_server(double, tmp_path / "tls", echo_canceller=WebRtcEchoCanceller) as server:
        url = server.ws_url + f"?token={TOKEN}"
        async with websockets.connect(url, ssl=server.ssl_context, origin=server.base_url) as ws:
            await ws.send(json.dumps({"type": "hello", "sample_rate": RATE, "format": "pcm16", "aec": False}))
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready" and ready["aec"] == "server"
            # The double answers typed text with a tone; speech-like audio is sent on the same turn.
            transport = await double.wait_for(lambda: double.transports and double.transports[0])
            speech = speech_like(5.0, seed=3)
            for index in range(0, len(speech), 480):
                await transport.send_audio(1, index // 480, resample(AudioFrame(pcm(speech[index : index + 480]), RATE), 24000))
            received = bytearray()
            async with asyncio.timeout(10):
                while len(received) < 2 * 24000 * 4:
                    message = await ws.recv()
                    if isinstance(message, bytes):
                        received += message[8:]
            played = np.frombuffer(resample(AudioFrame(bytes(received), 24000), RATE).pcm, dtype="<i2") / 32768
            room = RoomEcho(Room(delay_ms=80, rt60_s=0.25, echo_db=0).impulse(np.random.default_rng(4)), 1.0)
            sent = bytearray()
            for index, start in enumerate(range(0, len(played) - 320, 320)):
                if index % 5 == 0:
                    await ws.send(json.dumps({"type": "played", "turn": 1, "ms": index * 20}))
                mic = pcm(room.push(played[start : start + 320]))
                sent += mic
                await ws.send(mic)
            heard = await double.wait_for(
                lambda: sum(e.frame.samples for e in double.events(InboundAudio)) >= len(sent) // 2 - 320
                and double.events(InboundAudio))
    cleaned = b"".join(event.frame.pcm for event in heard)
    assert all(event.frame.sample_rate == RATE for event in heard)
    # Once the canceller has learnt the room (after 2 s), the echo is at least 20 dB down.
    late = slice(2 * RATE * 2, len(sent) - 320 * 2)
    assert level_db(bytes(sent[late])) - level_db(cleaned[late]) > 20, "echo not cancelled"


async def test_a_page_that_cancels_its_own_echo_is_left_alone(tmp_path: Path) -> None:
    double = EchoSession()
    async with running_server(double, tmp_path / "tls", echo_canceller=WebRtcEchoCanceller) as server:
        url = server.ws_url + f"?token={TOKEN}"
        async with websockets.connect(url, ssl=server.ssl_context, origin=server.base_url) as ws:
            await ws.send(json.dumps({"type": "hello", "sample_rate": RATE, "format": "pcm16"}))
            ready: dict[str, Any] = json.loads(await ws.recv())
            assert "aec" not in ready
            mic = pcm(speech_like(0.1))
            await ws.send(mic)
            heard = await double.wait_for(lambda: double.events(InboundAudio))
    assert heard[0].frame.pcm == mic


async def test_a_page_that_asks_is_told_when_the_server_cannot(tmp_path: Path) -> None:
    async with running_server(EchoSession(), tmp_path / "tls") as server:
        url = server.ws_url + f"?token={TOKEN}"
        async with websockets.connect(url, ssl=server.ssl_context, origin=server.base_url) as ws:
            await ws.send(json.dumps({"type": "hello", "sample_rate": RATE, "aec": False}))
            assert json.loads(await ws.recv())["aec"] == "unavailable"


def interleaved(microphone: bytes, played: bytes) -> bytes:
    both = np.empty(len(microphone), dtype="<i2")
    both[0::2] = np.frombuffer(microphone, dtype="<i2")
    both[1::2] = np.frombuffer(played, dtype="<i2")
    return both.tobytes()


async def test_the_server_cancels_the_echo_with_the_reference_the_page_sends(tmp_path: Path) -> None:
    """The page's way: each message is (microphone, what was played) interleaved; no played reports."""
    double = EchoSession()
    async with running_server(double, tmp_path / "tls", echo_canceller=WebRtcEchoCanceller) as server:
        url = server.ws_url + f"?token={TOKEN}"
        async with websockets.connect(url, ssl=server.ssl_context, origin=server.base_url) as ws:
            await ws.send(json.dumps({"type": "hello", "sample_rate": RATE, "aec": False, "echo_reference": True}))
            assert json.loads(await ws.recv())["aec"] == "server"
            played = speech_like(5.0, seed=5)
            room = RoomEcho(Room(delay_ms=150, rt60_s=0.3, echo_db=0).impulse(np.random.default_rng(6)), 1.0)
            sent = bytearray()
            for start in range(0, len(played) - 320, 320):
                block = played[start : start + 320]
                mic = pcm(room.push(block))
                sent += mic
                await ws.send(interleaved(mic, pcm(block)))
            heard = await double.wait_for(
                lambda: sum(e.frame.samples for e in double.events(InboundAudio)) >= len(sent) // 2 - 320
                and double.events(InboundAudio))
    cleaned = b"".join(event.frame.pcm for event in heard)
    late = slice(2 * RATE * 2, len(sent) - 320 * 2)
    assert level_db(bytes(sent[late])) - level_db(cleaned[late]) > 20, "echo not cancelled"


async def test_a_page_that_sends_a_reference_to_a_server_without_a_canceller_is_heard(tmp_path: Path) -> None:
    double = EchoSession()
    async with running_server(double, tmp_path / "tls") as server:
        url = server.ws_url + f"?token={TOKEN}"
        async with websockets.connect(url, ssl=server.ssl_context, origin=server.base_url) as ws:
            await ws.send(json.dumps({"type": "hello", "sample_rate": RATE, "aec": False, "echo_reference": True}))
            assert json.loads(await ws.recv())["aec"] == "unavailable"
            mic = pcm(speech_like(0.1))
            await ws.send(interleaved(mic, pcm(speech_like(0.1, seed=9))))
            heard = await double.wait_for(lambda: double.events(InboundAudio))
    assert heard[0].frame.pcm == mic  # the microphone channel alone
