"""Session on the voice path with a scripted timeline: turn-taking, barge-in, false interruptions.

The VAD and STT here are doubles (loudness is speech; STT returns scripted words) and time is a fake
clock, so every decision is exact; tests/test_voice_pipeline.py runs the same paths on real models.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import numpy as np
import pytest

from convers.contracts.audio import AudioFrame
from convers.contracts.stt import Transcript
from convers.engine.reply.prompt import PromptBuilder
from convers.engine.session import Session, SessionOptions, SessionParts
from convers.events import EventLog
from convers.idle_gate import IdleGate
from convers.policies import BargeInPolicy, TurnTiming
from tests.doubles import (
    MIC_FRAME_S,
    MIC_RATE,
    FakeClock,
    LoudnessVad,
    RecordingTransport,
    RunningSession,
    ScriptedLlm,
    ToneTts,
    mic_frame,
)

RATE = MIC_RATE
FRAME_S = MIC_FRAME_S


class ScriptedStt:
    """Returns the next scripted transcript for each utterance."""

    name = "scripted-stt"
    sample_rate = RATE

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)
        self.heard: list[float] = []

    async def transcribe(self, audio: AudioFrame) -> Transcript:
        self.heard.append(audio.duration_s)
        return Transcript(self.texts.pop(0) if self.texts else "", decode_s=0.01)


class Rig:
    """A voice session running on a fake clock, stepped frame by frame through its transport."""

    def __init__(
        self,
        tokens: Sequence[str],
        transcripts: Sequence[str],
        vad: LoudnessVad | None = None,
        stt: ScriptedStt | None = None,
        idle: IdleGate | None = None,
        **barge_in: object,
    ) -> None:
        self.clock = FakeClock()
        self.transport = RecordingTransport()
        self.llm = ScriptedLlm(tokens)
        self.stt = stt or ScriptedStt(transcripts)
        self.session = Session(
            self.transport,
            SessionParts(llm=self.llm, tts=ToneTts(), stt=self.stt, vad=vad or LoudnessVad(), idle=idle),
            PromptBuilder(persona="P"),
            EventLog(None, clock=self.clock),
            options=SessionOptions(greet=False, turns=TurnTiming(), barge_in=BargeInPolicy(**barge_in)),
        )
        self.running = RunningSession(self.session, self.transport)

    async def feed(self, loud: bool, seconds: float) -> None:
        for _ in range(round(seconds / FRAME_S)):
            self.clock.now += FRAME_S
            await self.running.hear(mic_frame(loud))

    async def played(self, turn: int, ms: float) -> None:
        await self.running.played(turn, ms)

    async def settle(self) -> None:
        await self.running.settle()

    def log_kinds(self) -> list[str]:
        return [kind for kind, _ in self.transport.log]


@pytest.fixture
async def rig_of() -> AsyncIterator[Callable[..., Rig]]:
    """Makes rigs; each one's session is stopped (the client leaves) when the test ends."""
    made: list[Rig] = []

    def make(*args: object, **kwargs: object) -> Rig:
        rig = Rig(*args, **kwargs)  # type: ignore[arg-type]
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.running.stop()


async def test_spoken_question_gets_a_spoken_reply(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of(["It is sunny today."], ["what is the weather"])
    await rig.feed(False, 0.2)
    await rig.feed(True, 0.8)
    await rig.feed(False, 0.6)  # past the 0.5 s end-of-turn silence
    await rig.settle()
    assert rig.transport.events("transcript")[0]["text"] == "what is the weather"
    assert rig.transport.reply_text(1) == "It is sunny today."
    assert rig.transport.audio(1)
    # Pre-roll, the utterance and the post-roll reached STT, not the whole silence.
    assert 0.8 < rig.stt.heard[0] < 0.8 + 0.3 + 0.2 + 0.05


async def test_the_idle_gate_is_held_while_the_person_speaks_and_until_the_reply_is_played(
        rig_of: Callable[..., Rig]) -> None:
    gate = IdleGate(settle_s=0.0)
    rig = rig_of(["It is sunny today."], ["what is the weather"], idle=gate)
    await rig.feed(False, 0.2)
    assert not gate.busy
    await rig.feed(True, 0.5)
    assert gate.busy  # speaking: background model work waits
    await rig.feed(False, 0.6)
    await rig.settle()
    assert rig.transport.audio(1) and gate.busy  # the reply is sent but not yet heard
    await rig.played(1, 60_000)
    assert not gate.busy


async def test_pause_shorter_than_end_of_turn_keeps_one_turn(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of(["Okay."], ["one long sentence"])
    await rig.feed(True, 0.5)
    await rig.feed(False, 0.3)
    await rig.feed(True, 0.5)
    await rig.feed(False, 0.6)
    await rig.settle()
    assert len(rig.stt.heard) == 1 and rig.stt.heard[0] > 1.2


async def agent_is_speaking(rig: Rig) -> None:
    rig.llm.tokens = ["This is a long answer that keeps going. " * 3, "And then some more words follow here."]
    task = await rig.session.user_said("tell me something")
    await task
    assert rig.session.current is not None and rig.session.current.audible


async def test_barge_in_pauses_at_onset_then_flushes_and_cuts_history(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of([], ["stop please"], min_barge_in_speech_s=0.25)
    await agent_is_speaking(rig)
    await rig.played(1, 500)  # the client has played 0.5 s of about 1.6 s
    frames_before = len(rig.transport.audio(1))
    await rig.feed(True, 0.06)
    assert ("pause", 1) in rig.transport.log and ("flush", 1) not in rig.transport.log
    await rig.feed(True, 0.24)
    assert ("flush", 1) in rig.transport.log
    flush_at = rig.transport.log.index(("flush", 1))
    # No frame of the interrupted turn is sent after its flush.
    assert all(not (k == "audio" and v[0] == 1) for k, v in rig.transport.log[flush_at:])
    assert len(rig.transport.audio(1)) == frames_before
    kept = rig.session.history[-1]
    # 10 ms of audio per character: about 50 characters were heard.
    assert kept.role == "assistant" and 30 < len(kept.content) < 70
    assert kept.content.startswith("This is a long answer")
    # The interruption itself becomes the next user turn.
    rig.llm.tokens = ["Sure."]
    await rig.feed(False, 0.6)
    await rig.settle()
    assert rig.transport.reply_text(2) == "Sure."
    assert [m.role for m in rig.session.history][-2:] == ["user", "assistant"]


async def speech_until_flush(rig: Rig) -> float:
    """Feeds speech over the agent's turn 1 until the session flushes it; returns how long that took."""
    onset = rig.clock.now
    for _ in range(30):
        await rig.feed(True, FRAME_S)
        if ("flush", 1) in rig.transport.log:
            return rig.clock.now - onset
    raise AssertionError("no flush after 0.6 s of speech over the agent")


async def test_barge_in_latency_is_the_minimum_speech_duration(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of([], [], min_barge_in_speech_s=0.25)
    await agent_is_speaking(rig)
    assert 0.25 <= await speech_until_flush(rig) <= 0.25 + 0.05


class SileroSizedVad(LoudnessVad):
    """Scores 32 ms frames, as Silero does, while the microphone sends 20 ms ones."""

    frame_samples = 512


@pytest.mark.parametrize("lead_frames", [0, 1, 2, 3, 4, 5, 6, 7])
async def test_barge_in_is_confirmed_between_vad_frames(lead_frames: int, rig_of: Callable[..., Rig]) -> None:
    # Whatever the phase of the VAD's 32 ms frames against the 20 ms microphone frames, the flush
    # comes with the microphone frame that brings the speech to the minimum (judged in 8 ms hops),
    # not with the VAD's next whole frame.
    rig = rig_of([], [], vad=SileroSizedVad(), min_barge_in_speech_s=0.25)
    await agent_is_speaking(rig)
    await rig.feed(False, FRAME_S * (lead_frames + 1))
    assert 0.25 - 1e-6 <= await speech_until_flush(rig) <= 0.25 + FRAME_S + 0.008 + 1e-6


async def test_a_cough_pauses_and_resumes_without_losing_the_reply(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of([], [], min_barge_in_speech_s=0.25)
    await agent_is_speaking(rig)
    await rig.feed(True, 0.08)  # shorter than min_speech_s (0.15) and the barge-in minimum
    await rig.feed(False, 0.1)
    assert ("pause", 1) in rig.transport.log and ("resume", 1) in rig.transport.log
    assert ("flush", 1) not in rig.transport.log
    assert rig.session.current is not None and rig.session.current.turn == 1
    assert rig.stt.heard == []


async def test_an_mm_hm_restarts_the_unheard_rest_of_the_reply(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of([], ["mm-hm"], min_barge_in_speech_s=0.25)
    await agent_is_speaking(rig)
    await rig.played(1, 500)
    await rig.feed(True, 0.4)  # long enough to cut the reply ...
    assert ("flush", 1) in rig.transport.log
    await rig.feed(False, 0.6)  # ... but it held no words
    await rig.settle()
    restarted = rig.transport.reply_text(2)
    assert restarted.startswith("This is a long answer")
    assert rig.transport.audio(2)
    assert rig.llm.prompts and len(rig.llm.prompts) == 1  # no new LLM call for a backchannel


@pytest.mark.parametrize("enabled", [False])
async def test_barge_in_can_be_turned_off(enabled: bool, rig_of: Callable[..., Rig]) -> None:
    rig = rig_of([], [], enabled=enabled)
    await agent_is_speaking(rig)
    await rig.feed(True, 0.5)
    assert ("pause", 1) not in rig.transport.log and ("flush", 1) not in rig.transport.log


async def test_audio_at_another_rate_is_resampled_for_the_vad(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of(["Fine."], ["hello there"])

    async def feed_48k(loud: bool, seconds: float) -> None:
        for _ in range(round(seconds / FRAME_S)):
            rig.clock.now += FRAME_S
            samples = np.full(int(48000 * FRAME_S), 8000 if loud else 0, dtype="<i2")
            await rig.running.hear(AudioFrame(samples.tobytes(), 48000))

    await feed_48k(False, 0.2)
    await feed_48k(True, 0.8)
    await feed_48k(False, 0.7)
    await rig.settle()
    assert rig.transport.reply_text(1) == "Fine."
    assert 0.8 < rig.stt.heard[0] < 1.4  # the utterance, at the VAD's 16 kHz


async def test_speech_shorter_than_a_barge_in_without_words_resumes_the_reply(rig_of: Callable[..., Rig]) -> None:
    # 0.2 s: long enough to be a user turn (min_speech_s 0.15), too short to cut the agent (0.25 s).
    rig = rig_of([], [""], min_barge_in_speech_s=0.25)
    await agent_is_speaking(rig)
    await rig.feed(True, 0.2)
    await rig.feed(False, 0.6)
    await rig.settle()
    assert rig.stt.heard, "the short utterance was a turn and was transcribed"
    assert ("pause", 1) in rig.transport.log and ("resume", 1) in rig.transport.log
    assert ("flush", 1) not in rig.transport.log
    assert rig.session.current is not None and rig.session.current.turn == 1
    assert rig.transport.log.index(("resume", 1)) > rig.transport.log.index(("pause", 1))


class FailingStt(ScriptedStt):
    async def transcribe(self, audio: AudioFrame) -> Transcript:
        raise RuntimeError("decoder crashed")


async def test_a_pause_that_nothing_settles_resumes_after_the_timeout(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of([], [], stt=FailingStt([]), min_barge_in_speech_s=0.25, false_interruption_timeout_s=1.0)
    await agent_is_speaking(rig)
    await rig.feed(True, 0.2)
    assert ("pause", 1) in rig.transport.log
    await rig.feed(False, 0.6)  # the turn ends, and its transcription fails: no verdict comes
    await rig.settle()
    assert any(e["code"] == "stt_failed" for e in rig.transport.events("error"))
    await rig.feed(False, 0.1)  # 0.9 s since the pause: not yet
    assert ("resume", 1) not in rig.transport.log
    await rig.feed(False, 0.12)  # past 1.0 s on the session's clock
    assert ("resume", 1) in rig.transport.log
    assert ("flush", 1) not in rig.transport.log


async def test_a_short_turn_with_words_over_the_agent_replaces_the_reply(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of([], ["no"], min_barge_in_speech_s=0.25)
    await agent_is_speaking(rig)
    rig.llm.tokens = ["Okay."]
    await rig.feed(True, 0.2)
    await rig.feed(False, 0.6)
    await rig.settle()
    assert ("resume", 1) not in rig.transport.log
    assert ("flush", 1) in rig.transport.log
    assert rig.transport.reply_text(2) == "Okay."


def cancelling_echo(rig: Rig, *, learning: bool, double_talk: bool, unsuppressed: AudioFrame | None = None,
                    removed_db: float | None = None, microphone: AudioFrame | None = None) -> list[tuple[float, float]]:
    """Makes the rig's transport an `EchoCancellingTransport` in the given state; `unsuppressed` is
    what it hands for any stretch of its cleaned audio, `removed_db` how much of any stretch its
    linear filter explained as echo. Returns the list of (span, ago) it is asked about."""
    asked: list[tuple[float, float]] = []

    def echo_removed_db(span_s: float, ago_s: float = 0.0) -> float | None:
        asked.append((span_s, ago_s))
        return removed_db

    rig.transport.echo_learning = learning  # type: ignore[attr-defined]
    rig.transport.echo_double_talk = double_talk  # type: ignore[attr-defined]
    rig.transport.echo_unsuppressed = lambda audio, since=None: unsuppressed  # type: ignore[attr-defined]
    rig.transport.echo_removed_db = echo_removed_db  # type: ignore[attr-defined]
    rig.transport.echo_microphone = lambda audio, since=None: microphone  # type: ignore[attr-defined]
    return asked


async def test_speech_over_the_agent_that_the_linear_filter_explains_is_ignored(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of([], ["love all of us."], min_barge_in_speech_s=0.25)
    logged: list[dict[str, object]] = []
    rig.session.events.listeners.append(logged.append)
    asked = cancelling_echo(rig, learning=False, double_talk=False, removed_db=25.0)
    await agent_is_speaking(rig)
    await rig.played(1, 500)
    await rig.feed(True, 0.6)  # longer than the barge-in minimum
    await rig.feed(False, 0.8)
    await rig.settle()
    assert not rig.stt.heard, "the agent's own echo is not transcribed"
    assert ("pause", 1) not in rig.transport.log and ("flush", 1) not in rig.transport.log
    assert rig.session.current is not None and rig.session.current.turn == 1
    assert [event["event"] for event in logged].count("echo_heard") == 1
    # The onset's last 0.1 s, the voice as it grew, and the ended utterance (which lies in the past).
    assert asked[0] == (pytest.approx(0.1), 0.0)
    assert any(ago > 0 for _, ago in asked)


async def test_speech_over_the_agent_that_the_linear_filter_cannot_explain_cuts(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of([], ["wait a moment"], min_barge_in_speech_s=0.25)
    cancelling_echo(rig, learning=False, double_talk=False, removed_db=2.0)
    await agent_is_speaking(rig)
    await rig.played(1, 500)
    await rig.feed(True, 0.6)
    await rig.feed(False, 0.8)
    await rig.settle()
    assert ("pause", 1) in rig.transport.log and ("flush", 1) in rig.transport.log
    assert rig.stt.heard


async def test_while_the_echo_canceller_learns_short_speech_over_the_agent_is_taken_for_echo(
    rig_of: Callable[..., Rig],
) -> None:
    rig = rig_of([], ["Thank you."], min_barge_in_speech_s=0.25, min_barge_in_speech_while_echo_learning_s=1.0)
    cancelling_echo(rig, learning=True, double_talk=False)
    await agent_is_speaking(rig)
    await rig.played(1, 500)
    await rig.feed(True, 0.5)  # twice the barge-in minimum, but under the learning one
    assert ("pause", 1) not in rig.transport.log and ("flush", 1) not in rig.transport.log
    await rig.feed(False, 0.6)  # it ends; Whisper's "Thank you." for it starts no reply
    await rig.settle()
    assert rig.stt.heard and not rig.transport.reply_text(2)
    assert ("flush", 1) not in rig.transport.log
    # Once it has learnt, speech over the agent pauses it at once again.
    rig.transport.echo_learning = False  # type: ignore[attr-defined]
    await rig.feed(True, 0.06)
    assert ("pause", 1) in rig.transport.log


async def test_while_the_echo_canceller_learns_a_person_over_the_agent_is_heard_by_their_own_words(
    rig_of: Callable[..., Rig],
) -> None:
    """Speech over the agent shorter than the learning cut, over a second long, whose transcript is not
    the agent's words, is the person's turn; it is decoded from the linear filter's residual."""
    residual = AudioFrame(bytes(2 * RATE * 2), RATE)  # 2.0 s: told apart from the cleaned utterance by its length
    rig = rig_of([], ["what time is my appointment"], min_barge_in_speech_s=0.25,
                 min_barge_in_speech_while_echo_learning_s=2.5)
    cancelling_echo(rig, learning=True, double_talk=False, unsuppressed=residual)
    logged: list[dict[str, object]] = []
    rig.session.events.listeners.append(logged.append)
    await agent_is_speaking(rig)
    rig.llm.tokens = ["At ten."]
    await rig.played(1, 500)
    await rig.feed(True, 1.2)
    assert ("pause", 1) not in rig.transport.log and ("flush", 1) not in rig.transport.log
    await rig.feed(False, 0.6)
    await rig.settle()
    assert rig.stt.heard == [2.0]
    assert ("flush", 1) in rig.transport.log
    assert rig.transport.reply_text(2) == "At ten."
    judged = [e for e in logged if e["event"] == "learning_speech"]
    assert [(e["person"], e["residual"]) for e in judged] == [(True, True)]


async def test_while_the_echo_canceller_learns_echo_garbled_in_the_residual_is_read_again_from_the_microphone(
    rig_of: Callable[..., Rig],
) -> None:
    """The residual's reading ("the bill.") is not the agent's words; the microphone's own audio, read
    as well, is: echo, no reply."""
    residual = AudioFrame(bytes(2 * RATE * 2), RATE)  # 2.0 s
    microphone = AudioFrame(bytes(3 * RATE * 2), RATE)  # 3.0 s
    rig = rig_of([], ["the bill.", "a long answer that keeps going"], min_barge_in_speech_s=0.25,
                 min_barge_in_speech_while_echo_learning_s=2.5)
    cancelling_echo(rig, learning=True, double_talk=False, unsuppressed=residual, microphone=microphone)
    logged: list[dict[str, object]] = []
    rig.session.events.listeners.append(logged.append)
    await agent_is_speaking(rig)
    await rig.played(1, 500)
    await rig.feed(True, 1.2)
    await rig.feed(False, 0.6)
    await rig.settle()
    assert rig.stt.heard == [2.0, 3.0]
    assert ("flush", 1) not in rig.transport.log and not rig.transport.reply_text(2)
    judged = [e for e in logged if e["event"] == "learning_speech"]
    assert [(e["person"], e["microphone_text"]) for e in judged] == [(False, "a long answer that keeps going")]


async def test_while_the_echo_canceller_learns_a_person_read_again_from_the_microphone_is_still_heard(
    rig_of: Callable[..., Rig],
) -> None:
    microphone = AudioFrame(bytes(3 * RATE * 2), RATE)
    rig = rig_of([], ["what time is my appointment", "what time is my appointment"], min_barge_in_speech_s=0.25,
                 min_barge_in_speech_while_echo_learning_s=2.5)
    cancelling_echo(rig, learning=True, double_talk=False, microphone=microphone)
    await agent_is_speaking(rig)
    rig.llm.tokens = ["At ten."]
    await rig.played(1, 500)
    await rig.feed(True, 1.2)
    await rig.feed(False, 0.6)
    await rig.settle()
    assert len(rig.stt.heard) == 2 and rig.stt.heard[1] == 3.0
    assert rig.transport.reply_text(2) == "At ten."


async def test_while_the_echo_canceller_learns_the_agents_own_words_coming_back_are_echo(
    rig_of: Callable[..., Rig],
) -> None:
    rig = rig_of([], ["a long answer that keeps going"], min_barge_in_speech_s=0.25,
                 min_barge_in_speech_while_echo_learning_s=2.5)
    cancelling_echo(rig, learning=True, double_talk=False)
    await agent_is_speaking(rig)
    await rig.played(1, 500)
    await rig.feed(True, 1.2)
    await rig.feed(False, 0.6)
    await rig.settle()
    assert rig.stt.heard  # transcribed (no residual at hand: the cleaned audio) ...
    assert ("flush", 1) not in rig.transport.log and not rig.transport.reply_text(2)  # ... and taken for echo


class FaintVad(LoudnessVad):
    """Scores a loud frame `faint`: a voice the canceller's suppressor has thinned, under the onset threshold."""

    faint = 0.3

    def speech_probability(self, pcm: bytes) -> float:
        return self.faint if super().speech_probability(pcm) else 0.0


async def test_the_cancellers_double_talk_cue_pauses_the_agent_before_the_vads_onset(
    rig_of: Callable[..., Rig],
) -> None:
    vad = FaintVad()
    rig = rig_of([], [], vad=vad, min_barge_in_speech_s=0.25)
    cancelling_echo(rig, learning=False, double_talk=True)
    await agent_is_speaking(rig)
    await rig.played(1, 500)
    await rig.feed(True, 0.04)  # VAD 0.3: no onset yet, but the canceller removed little
    assert ("pause", 1) in rig.transport.log and ("resume", 1) not in rig.transport.log
    # The cue stops and the VAD never confirms a voice: playback goes on where it paused.
    rig.transport.echo_double_talk = False  # type: ignore[attr-defined]
    await rig.feed(False, 0.4)
    assert ("resume", 1) in rig.transport.log and ("flush", 1) not in rig.transport.log


async def test_a_double_talk_pause_confirmed_by_the_vad_becomes_a_barge_in(rig_of: Callable[..., Rig]) -> None:
    vad = FaintVad()
    rig = rig_of([], ["wait a moment"], vad=vad, min_barge_in_speech_s=0.25)
    cancelling_echo(rig, learning=False, double_talk=True)
    await agent_is_speaking(rig)
    await rig.played(1, 500)
    await rig.feed(True, 0.04)
    vad.faint = 1.0  # the VAD hears the person now
    await rig.feed(True, 0.4)
    assert ("flush", 1) in rig.transport.log and ("resume", 1) not in rig.transport.log


async def test_by_default_the_double_talk_cue_pauses_even_while_the_vad_hears_nothing(rig_of: Callable[..., Rig]) -> None:
    # The suppressor thins a person's first syllables below what the VAD scores as speech at all.
    vad = FaintVad()
    vad.faint = 0.0
    rig = rig_of([], [], vad=vad, min_barge_in_speech_s=0.25)
    cancelling_echo(rig, learning=False, double_talk=True)
    await agent_is_speaking(rig)
    await rig.played(1, 500)
    await rig.feed(True, 0.04)
    assert ("pause", 1) in rig.transport.log


async def test_with_a_vad_gate_a_double_talk_cue_with_a_silent_vad_pauses_nothing(rig_of: Callable[..., Rig]) -> None:
    vad = FaintVad()
    vad.faint = 0.05
    rig = rig_of([], [], vad=vad, min_barge_in_speech_s=0.25, double_talk_min_probability=0.2)
    cancelling_echo(rig, learning=False, double_talk=True)
    await agent_is_speaking(rig)
    await rig.played(1, 500)
    await rig.feed(True, 0.3)
    assert ("pause", 1) not in rig.transport.log


async def test_while_the_echo_canceller_learns_a_person_who_goes_on_still_cuts_the_reply(
    rig_of: Callable[..., Rig],
) -> None:
    rig = rig_of([], ["wait I want to ask something else"], min_barge_in_speech_while_echo_learning_s=1.0)
    cancelling_echo(rig, learning=True, double_talk=False)
    await agent_is_speaking(rig)
    await rig.played(1, 500)
    await rig.feed(True, 0.9)
    assert ("flush", 1) not in rig.transport.log
    await rig.feed(True, 0.2)
    assert ("flush", 1) in rig.transport.log
