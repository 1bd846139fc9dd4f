"""Speculative turn processing on a scripted timeline: committed when the silence confirms the turn,
thrown away when the user speaks again. VAD, STT, LLM and memory are doubles; time is a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from convers.contracts.audio import AudioFrame
from convers.contracts.memory import MemoryHit
from convers.contracts.stt import Transcript
from convers.engine.listening.speculation import Speculator
from convers.engine.listening.turn_taking import TurnTaker
from convers.engine.reply.prompt import PromptBuilder
from convers.engine.session import Session, SessionOptions, SessionParts
from convers.events import EventLog
from convers.policies import SpeculationPolicy, TurnTiming
from tests.doubles import (
    MIC_FRAME_S,
    MIC_RATE,
    FakeClock,
    ListMemory,
    LoudnessVad,
    RecordingTransport,
    RunningSession,
    ScriptedLlm,
    ToneTts,
    hit,
    mic_frame,
)

RATE = MIC_RATE
FRAME_S = MIC_FRAME_S


class CountingStt:
    """Names each transcription by its call number, and keeps the audio it was given."""

    name = "counting-stt"
    sample_rate = RATE

    def __init__(self) -> None:
        self.audio: list[AudioFrame] = []

    async def transcribe(self, audio: AudioFrame) -> Transcript:
        self.audio.append(audio)
        return Transcript(f"question number {len(self.audio)}", decode_s=0.01)


@dataclass
class CountingMemory(ListMemory):
    queries: list[str] = field(default_factory=list)

    async def recall(self, query: str) -> list[MemoryHit]:
        self.queries.append(query)
        return await super().recall(query)


class Rig:
    def __init__(self, policy: SpeculationPolicy, memory: ListMemory | None = None) -> None:
        self.clock = FakeClock()
        self.transport = RecordingTransport()
        self.llm = ScriptedLlm(["Sure."])
        self.stt = CountingStt()
        self.tts = ToneTts()
        self.memory = memory
        self.kinds: list[str] = []
        events = EventLog(None, clock=self.clock)
        events.listeners.append(lambda event: self.kinds.append(event["event"]))
        self.session = Session(
            self.transport,
            SessionParts(llm=self.llm, tts=self.tts, stt=self.stt, vad=LoudnessVad(), memory=memory),
            PromptBuilder(persona="P"),
            events,
            options=SessionOptions(greet=False, turns=TurnTiming(), speculation=policy),
        )
        self.running: RunningSession | None = None

    async def feed(self, loud: bool, seconds: float) -> None:
        if self.running is None:
            self.running = RunningSession(self.session, self.transport)
        for _ in range(round(seconds / FRAME_S)):
            self.clock.now += FRAME_S
            # Delivery waits for the session's listen loop: speculative tasks get their turn in
            # between, as on a live event loop.
            await self.running.hear(mic_frame(loud))

    async def settle(self) -> None:
        assert self.running is not None
        await self.running.settle()
        await self.running.stop()
        self.running = None


async def test_turn_confirmed_by_silence_reuses_the_speculative_transcript() -> None:
    rig = Rig(SpeculationPolicy(enabled=True))
    await rig.feed(False, 0.2)
    await rig.feed(True, 0.8)
    await rig.feed(False, 0.3)  # past the 0.2 s post-roll, before the 0.5 s end of turn
    assert len(rig.stt.audio) == 1, "STT started during the end-of-turn silence"
    assert "speech_end" not in rig.kinds
    await rig.feed(False, 0.3)
    await rig.settle()
    assert len(rig.stt.audio) == 1, "the confirmed turn did not transcribe again"
    assert rig.kinds.index("speculation_start") < rig.kinds.index("speech_end") < rig.kinds.index("speculation_commit")
    assert rig.transport.events("transcript")[0]["text"] == "question number 1"
    assert rig.transport.reply_text(1) == "Sure."
    metrics = rig.transport.events("metrics")[0]
    # STT finished before the turn was confirmed: no STT time after the confirmation.
    assert metrics["stt_final_ms"] <= metrics["turn_confirmed_ms"]


async def test_speech_resuming_throws_the_speculation_away() -> None:
    rig = Rig(SpeculationPolicy(enabled=True))
    await rig.feed(True, 0.6)
    await rig.feed(False, 0.3)  # a speculation starts on the first half ...
    assert len(rig.stt.audio) == 1
    await rig.feed(True, 0.6)  # ... and is dropped when the user goes on
    assert "speculation_discard" in rig.kinds
    await rig.feed(False, 0.6)
    await rig.settle()
    assert len(rig.stt.audio) == 2
    assert rig.kinds.count("speculation_commit") == 1
    # The turn is answered from the second transcription, made on the whole utterance.
    assert rig.transport.events("transcript")[0]["text"] == "question number 2"
    assert rig.stt.audio[1].duration_s > rig.stt.audio[0].duration_s + 0.5
    assert len(rig.transport.events("transcript")) == 1


async def test_waiting_for_the_post_roll_a_shorter_pause_starts_nothing() -> None:
    rig = Rig(SpeculationPolicy(enabled=True, wait_for_post_roll=True))
    await rig.feed(True, 0.5)
    await rig.feed(False, 0.1)
    await rig.feed(True, 0.5)
    assert rig.stt.audio == [] and "speculation_start" not in rig.kinds


async def test_by_default_speculation_starts_at_the_first_silent_frame_on_the_speech_alone() -> None:
    rig = Rig(SpeculationPolicy(enabled=True))
    await rig.feed(True, 0.5)
    await rig.feed(False, 0.1)  # shorter than the post-roll
    assert len(rig.stt.audio) == 1 and "speculation_start" in rig.kinds
    speech_only = rig.stt.audio[0].duration_s
    await rig.feed(False, 0.5)
    await rig.settle()
    # The turn ended with the post-roll added: the same speech, so the early transcript is kept.
    assert len(rig.stt.audio) == 1 and "speculation_commit" in rig.kinds
    assert rig.transport.events("transcript")[0]["text"] == "question number 1"
    assert speech_only < 0.5 + TurnTiming().pre_roll_s + 0.05


async def test_off_by_policy_transcribes_only_at_the_end_of_turn() -> None:
    rig = Rig(SpeculationPolicy(enabled=False))
    await rig.feed(True, 0.8)
    await rig.feed(False, 0.3)
    assert rig.stt.audio == []
    await rig.feed(False, 0.3)
    await rig.settle()
    assert len(rig.stt.audio) == 1 and rig.transport.reply_text(1) == "Sure."


async def test_recall_runs_once_during_the_silence_and_reaches_the_prompt() -> None:
    memory = CountingMemory(hits=[hit("Sam likes tea")])
    rig = Rig(SpeculationPolicy(enabled=True), memory=memory)
    await rig.feed(True, 0.8)
    await rig.feed(False, 0.3)
    assert memory.queries == ["question number 1"]
    await rig.feed(False, 0.3)
    await rig.settle()
    assert memory.queries == ["question number 1"]
    prompt = "\n".join(m.content for m in rig.llm.prompts[0])
    assert "Sam likes tea" in prompt


async def test_llm_prefetch_is_used_when_the_turn_is_confirmed() -> None:
    rig = Rig(SpeculationPolicy(enabled=True, llm=True))
    await rig.feed(True, 0.8)
    await rig.feed(False, 0.3)
    assert len(rig.llm.prompts) == 1, "the LLM request started in the silence"
    await rig.feed(False, 0.3)
    await rig.settle()
    assert len(rig.llm.prompts) == 1, "the reply used the prefetched stream"
    assert rig.transport.reply_text(1) == "Sure."
    assert rig.llm.prompts[0][-1].content == "question number 1"


async def test_llm_prefetch_is_closed_when_speech_resumes() -> None:
    rig = Rig(SpeculationPolicy(enabled=True, llm=True))
    rig.llm.delay_s = 0.01  # still streaming when the user goes on
    rig.llm.tokens = ["One", " two", " three", " four."]
    await rig.feed(True, 0.6)
    await rig.feed(False, 0.3)
    assert len(rig.llm.prompts) == 1
    await rig.feed(True, 0.4)
    await asyncio.sleep(0.02)
    assert rig.llm.closed_early
    await rig.feed(False, 0.6)
    await rig.settle()
    assert [p[-1].content for p in rig.llm.prompts] == ["question number 1", "question number 2"]
    assert rig.transport.reply_text(1) == "One two three four."


async def test_first_chunk_is_synthesised_in_the_silence_and_sent_only_once_confirmed() -> None:
    rig = Rig(SpeculationPolicy(enabled=True, llm=True, tts=True))
    rig.llm.tokens = ["Sure.", " Here is", " more."]
    await rig.feed(True, 0.8)
    await rig.feed(False, 0.3)
    await asyncio.sleep(0.01)
    assert rig.tts.texts == ["Sure."], "the first chunk was synthesised during the silence"
    assert rig.transport.audio() == [], "nothing is sent before the turn is confirmed"
    await rig.feed(False, 0.3)
    await rig.settle()
    assert rig.tts.texts == ["Sure.", "Here is more."], "the prefetched chunk was replayed, not synthesised again"
    sent = b"".join(frame.pcm for _turn, _seq, frame in rig.transport.audio(1))
    samples_per_char = int(16000 * 0.01)  # ToneTts: 10 ms of tone per character
    assert len(sent) == 2 * samples_per_char * (len("Sure.") + len("Here is more."))  # both chunks, whole


async def test_first_chunk_synthesis_is_dropped_when_speech_resumes() -> None:
    rig = Rig(SpeculationPolicy(enabled=True, llm=True, tts=True))
    rig.tts.delay_s = 0.01  # still synthesising when the user goes on
    rig.llm.tokens = ["Long first sentence here.", " Second."]
    await rig.feed(True, 0.6)
    await rig.feed(False, 0.3)
    await asyncio.sleep(0.015)
    assert rig.tts.texts == ["Long first sentence here."]
    await rig.feed(True, 0.4)
    await asyncio.sleep(0.05)
    assert rig.transport.audio() == []
    await rig.feed(False, 0.6)
    await rig.settle()
    # The confirmed turn (question 2) was answered and spoken; nothing of the dropped one was sent.
    assert [p[-1].content for p in rig.llm.prompts] == ["question number 1", "question number 2"]
    turns = {turn for turn, _seq, _frame in rig.transport.audio()}
    assert turns == {1}
    assert rig.transport.reply_text(1) == "Long first sentence here. Second."


async def test_no_speculative_synthesis_when_the_policy_says_no() -> None:
    rig = Rig(SpeculationPolicy(enabled=True, llm=True, tts=False))
    await rig.feed(True, 0.8)
    await rig.feed(False, 0.3)
    await asyncio.sleep(0.01)
    assert len(rig.llm.prompts) == 1 and rig.tts.texts == []
    await rig.feed(False, 0.3)
    await rig.settle()
    assert rig.tts.texts == ["Sure."]


def test_provisional_audio_is_the_turn_audio_once_the_post_roll_is_heard() -> None:
    timing = TurnTiming()
    turns = TurnTaker(timing, sample_rate=RATE)
    now = 0.0
    ended = None
    provisional = []
    for loud, seconds in [(True, 0.6), (False, 0.6)]:
        for _ in range(round(seconds / FRAME_S)):
            now += FRAME_S
            for event in turns.feed(1.0 if loud else 0.0, now, mic_frame(loud)):
                if event.kind == "user_turn_ended":
                    ended = event
            audio = turns.provisional_audio()
            if audio is not None:
                provisional.append((round(now, 2), audio))
    assert ended is not None
    # None during the first 0.2 s of silence, then exactly what the turn ended with.
    assert provisional[0][0] >= 0.6 + timing.post_roll_s - 1e-6
    assert all(audio.pcm == ended.audio.pcm for _, audio in provisional)
    early = TurnTaker(timing, sample_rate=RATE)
    early.feed(1.0, 0.02, mic_frame(True))
    assert early.provisional_audio() is None  # not pausing
    for step in range(2, 20):
        early.feed(1.0, step * FRAME_S, mic_frame(True))
    early.feed(0.0, 0.4, mic_frame(False))
    without = early.provisional_audio(with_post_roll=False)
    assert without is not None and early.provisional_audio() is None


def test_speculation_is_kept_only_for_the_same_speech() -> None:
    speculator = Speculator(CountingStt(), EventLog(None), SpeculationPolicy(), post_roll_s=0.2)
    speech = AudioFrame(b"\x01\x00" * 8000, RATE)
    post_roll = AudioFrame(speech.pcm + b"\x00\x00" * 3200, RATE)
    longer = AudioFrame(speech.pcm + b"\x00\x00" * 3201, RATE)
    other = AudioFrame(b"\x02\x00" * 8000 + b"\x00\x00" * 100, RATE)
    assert speculator._same_turn(speech, speech)
    assert speculator._same_turn(speech, post_roll)
    assert not speculator._same_turn(speech, longer)
    assert not speculator._same_turn(speech, other)
    assert not speculator._same_turn(speech, AudioFrame(speech.pcm, 8000))


async def test_a_first_chunk_completed_after_the_end_of_turn_is_synthesised_once() -> None:
    """The reply starts before its first chunk is complete: it must still replay the early synthesis."""
    rig = Rig(SpeculationPolicy(enabled=True, llm=True, tts=True))
    rig.llm.delay_s = 0.05  # the first sentence completes after the turn is confirmed
    rig.llm.tokens = ["It", " depends", " on", " the", " weather.", " Really."]
    await rig.feed(True, 0.8)
    await rig.feed(False, 0.6)  # confirmed while the tokens still stream
    await rig.settle()
    assert rig.tts.texts == ["It depends on the weather.", "Really."]
    assert rig.transport.reply_text(1) == "It depends on the weather. Really."


def test_the_post_roll_wait_follows_the_kind_of_decoder_unless_set() -> None:
    """A live decoder waits for the post-roll (its last step is cheap); a one-shot decoder starts at once."""
    stt = CountingStt()
    events = EventLog(None, clock=FakeClock())

    async def live_finish(audio: AudioFrame) -> Transcript:
        return Transcript("live")

    def speculator(policy: SpeculationPolicy, live: bool) -> Speculator:
        return Speculator(stt, events, policy, post_roll_s=0.2, transcribe=live_finish if live else None)

    assert speculator(SpeculationPolicy(), live=True).wait_for_post_roll is True
    assert speculator(SpeculationPolicy(), live=False).wait_for_post_roll is False
    assert speculator(SpeculationPolicy(wait_for_post_roll=True), live=False).wait_for_post_roll is True
    assert speculator(SpeculationPolicy(wait_for_post_roll=False), live=True).wait_for_post_roll is False
