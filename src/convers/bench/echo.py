"""`convers bench echo`: the agent on a speakerphone, hearing its own voice through a simulated room.

The agent's replies are spoken by the voice a fresh install picks (Piper) and played into a room:
the microphone hears them after `delay` (20-200 ms), with a decaying reverberation tail, at an echo
level from -20 to 0 dB against what the speaker played, with optional background noise. In every
other reply a person (espeak-ng, a different voice) speaks over the agent at a random moment, at the
level the agent's output has. Optionally the speaker distorts (`speaker_drive`: what it plays goes
through tanh(drive x) / drive, which no linear filter follows, as a small speaker driven hard does),
the microphone runs on a clock of its own (`clock_drift_ppm`, `microphone_own_rate`: RoomEcho), and
one room lasts the whole run (`replies_per_room` 0) instead of 4 replies.
Before every other session, a learning trial: a person over the first
reply in a room of its own, while the canceller is still learning it (as a person answering the
greeting would). Each microphone block (20 ms, what `convers talk` reads) goes, with the
canceller on, through the same `EchoCancelling` the local transport runs, with exactly what the speaker
played as the reference; then through the session's own listener (the VAD and `TurnTaker`) and its
`BargeInArbiter`. The arbiter's actions play out on the simulated speaker: a pause stops the echo, a cut
ends the reply. An utterance that ends is transcribed by the real STT and judged like the session does.

Time is simulated (the run is faster than real time), so the figures are the engine's decisions, not
the machine's speed: onset to pause is from the first sample of the person's voice to the frame at
which the arbiter paused the speaker. Turns end by the silence rule only (no end-of-turn model):
that decides when a reply starts, not whether the agent was interrupted.

Counted, per scenario (canceller on or off, an echo level):
- self-interruptions: a pause, a cut or a new reply while no person spoke (from their first sample to
  one second after their last), per minute of agent speech played;
- barge-ins caught: the person's interruptions that stopped the agent (a cut or their reply);
- the learning trials apart (no pause at onset then, by design): caught, onset to cut or reply,
  what the person said and what was heard, self-interruptions;
- onset to pause (ms), p50 and p95;
- the echo left after the canceller (dB under the microphone) while only the agent spoke, and the
  canceller's CPU as a share of one core.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from convers.audio import concat, dbfs, frame_from_float, pcm16_to_float32, resample
from convers.bench.results import write_json_result
from convers.bench.run_info import machine_info
from convers.bench.summary import summarise
from convers.clock_drift import TAPS, ClockReader
from convers.contracts.echo import EchoCanceller
from convers.echo_cancelling import EchoCancelling
from convers.engine.barge_in.arbiter import BargeInArbiter, Cut, Pause, Restart, Resume, StartReply
from convers.engine.barge_in.echo_witness import event_echo_removed_db, voice_echo_removed_db
from convers.engine.barge_in.learning_speech import LearningSpeech
from convers.engine.listening.listener import Listener
from convers.engine.listening.turn_taking import SpeechOnset, UserTurnEnded
from convers.engine.listening.verdict import verdict_of

RATE = 16000
# What `convers talk` reads from the microphone at a time (transports/local.py BLOCK_S).
BLOCK = 320
# Silence between two agent replies, and after the person's turn before the agent answers.
GAP_S = 0.8
# A pause or cut up to this long after the person's last sample is still theirs (their turn's end,
# its transcript).
PERSON_TAIL_S = 1.0
# By default the room, the canceller and the listener are new every this many replies (a new
# session); the agent's first words in a session are the canceller's hardest, before it has learnt
# the room. `--replies-per-room 0` keeps one room for the whole run, as one long conversation.
REPLIES_PER_ROOM = 4
# The person starts speaking at least this far into a reply, and this far before its end. People
# interrupt as soon as they hear where a reply is going, often in its first second.
BARGE_IN_FROM_S = 0.5
BARGE_IN_BEFORE_END_S = 2.0

# What the agent says: replies of two to four sentences, as a companion talks.
AGENT_REPLIES: tuple[str, ...] = (
    "Good morning! The kettle is a fine place to start. Would you like me to remind you about the dentist at ten?",
    "I think a walk by the river would do you good. The forecast says the rain stops after lunch, so bring a light coat.",
    "That sounds like a lovely weekend. Your sister must have been happy to see you. Did the kids enjoy the zoo?",
    "Let me see. If you leave at half past eight, you should reach the station with time to spare. The train takes about forty minutes.",
    "Tomatoes like plenty of sun and a deep drink twice a week. Pinch out the side shoots, and they will thank you in August.",
    "You mentioned last week that your knee was sore. Has it been any better since you started the stretches?",
    "Here is a simple one. Fry an onion, add a tin of tomatoes and a spoon of paprika, then crack two eggs into it and cover the pan.",
    "It is a good question. Most people sleep better when the room is cool and dark, and when they keep the phone out of the bedroom.",
    "I remember you love old films. Tonight there is a Hitchcock on channel four at nine. Shall I remind you at a quarter to?",
    "Breathe in slowly for four counts, hold for four, and let it go for six. Let us do that together three times.",
    "Congratulations on the new job! Starting somewhere new is exciting and a little scary. What are you looking forward to most?",
    "The library opens at nine on Saturdays. They have a book club on the first Thursday of the month, if you would like some company.",
    "Your daughter's birthday is on the fourteenth. Last year you gave her a scarf, and she wore it all winter.",
    "A short nap after lunch is fine, as long as it stays under half an hour. Longer than that can make the night harder.",
    "If the heating makes that knocking sound again, bleed the radiator with the little key. A towel underneath catches the drips.",
    "I am glad you called your brother. It sounds like you two had a lot to catch up on. Will you visit him in the spring?",
)

# What the person says over the agent: real interruptions, long enough to be a turn.
PERSON_INTERRUPTIONS: tuple[str, ...] = (
    "Wait, stop, I have a question about that.",
    "Hold on a second, that is not what I asked.",
    "Sorry, can you say the first part again?",
    "No no, I meant the other one, the one from Tuesday.",
    "Actually, let us talk about something else.",
    "Okay, thanks, that is enough for now.",
    "Hang on, my phone is ringing, give me a minute.",
    "Excuse me, what time did you say it was?",
)


@dataclass(frozen=True)
class Room:
    """How the speaker reaches the microphone: a delay, a reverberation tail, a level."""

    delay_ms: float
    rt60_s: float
    echo_db: float

    def impulse(self, rng: np.random.Generator) -> np.ndarray:
        """A direct path then an exponentially decaying diffuse tail (60 dB down at `rt60_s`), at unit energy."""
        delay = round(self.delay_ms * RATE / 1000)
        n = max(1, round(self.rt60_s * RATE))
        t = np.arange(n) / RATE
        tail = rng.standard_normal(n) * np.exp(-6.91 * t / self.rt60_s) * 0.3
        tail[0] = 1.0  # the direct path dominates, as from a speaker on the same table
        h = np.concatenate([np.zeros(delay), tail])
        return h / math.sqrt(float(np.sum(h * h)))


class RoomEcho:
    """Streams what the speaker plays through a room's impulse response (FFT overlap-save), after the
    speaker's own distortion when `drive` > 0 (tanh(drive x) / drive).

    With `drift_ppm`, the microphone's clock runs that much faster (or, below 0, slower) than the
    speaker's, as with a USB microphone and a speaker on another card: microphone sample n hears the
    echo at speaker time n / (1 + drift_ppm / 1e6) (`convers.clock_drift.ClockReader`), so the echo
    path's delay grows (or shrinks) by drift_ppm microseconds every second. The sample counts stay in
    step (the microphone's stream is read as fast as the speaker's): only the echo moves. A slower
    microphone hears everything `drift_reserve_s` x |drift_ppm| / 1e6 later, so its delay stays
    above the room's own for that long of audio. With `own_rate`, the microphone also delivers
    samples at its own rate, 1 + drift_ppm / 1e6 of them for every sample played (two devices read
    by one program): `push` then gives that many, and the echo's delay stays the room's.
    """

    def __init__(self, impulse: np.ndarray, gain: float, drive: float = 0.0, drift_ppm: float = 0.0,
                 drift_reserve_s: float = 0.0, own_rate: bool = False) -> None:
        self.gain = gain
        self.drive = drive
        self.size = 1 << math.ceil(math.log2(len(impulse) + BLOCK))
        self._spectrum = np.fft.rfft(impulse, self.size)
        self._history = np.zeros(self.size)
        self._step = 1 / (1 + drift_ppm / 1e6)
        reserve = abs(drift_ppm) / 1e6 * drift_reserve_s * RATE if drift_ppm < 0 and not own_rate else 0.0
        self._heard = ClockReader(lag=TAPS + reserve) if drift_ppm else None
        self.own_rate = own_rate
        self._due = 0.0  # microphone samples owed (own_rate)

    def push(self, played: np.ndarray) -> np.ndarray:
        if self.drive > 0:
            played = np.tanh(self.drive * played) / self.drive
        self._history = np.concatenate([self._history[len(played):], played])
        out = np.fft.irfft(np.fft.rfft(self._history) * self._spectrum, self.size)
        echo = out[-len(played):] * self.gain
        if self._heard is None:
            return echo
        self._heard.feed(echo)
        count = len(echo)
        if self.own_rate:
            self._due += len(echo) / self._step
            count = int(self._due)
            self._due -= count
        return self._heard.read(count, self._step)


@dataclass
class _Reply:
    """The reply the simulated speaker plays, as the arbiter reads it (engine/barge_in/arbiter.py ReplyView)."""

    turn: int
    audio: np.ndarray
    position: int = 0
    paused: bool = False
    settled: bool = False
    played_ms: float = 0.0

    @property
    def generating(self) -> bool:
        return False

    @property
    def audio_ms(self) -> float:
        return len(self.audio) * 1000 / RATE

    text: str = ""

    def unheard_text(self) -> str:
        return ""

    def said_text(self) -> str:
        return self.text


@dataclass
class ScenarioResult:
    """What happened in one scenario (a canceller setting and an echo level)."""

    canceller: str
    echo_db: float
    agent_speech_s: float = 0.0
    replies: int = 0
    self_pauses: int = 0
    self_cuts: int = 0
    self_replies: int = 0
    # Of those, the ones that answered speech begun while the room's canceller was still learning.
    self_while_learning: int = 0
    self_heard: list[str] = field(default_factory=list)
    # Each self-interruption: when, what the arbiter did, how far into the reply (seconds).
    self_events: list[dict[str, Any]] = field(default_factory=list)
    barge_ins: int = 0
    caught: int = 0
    # Learning trials: a person over a new room's first reply, while the canceller learnt it.
    learning_speech_s: float = 0.0
    learning_self_interruptions: int = 0
    learning_barge_ins: int = 0
    learning_caught: int = 0
    learning_onset_to_stop_ms: list[float] = field(default_factory=list)
    learning_heard: list[dict[str, str]] = field(default_factory=list)
    onset_to_pause_ms: list[float] = field(default_factory=list)
    mic_db: list[float] = field(default_factory=list)
    cleaned_db: list[float] = field(default_factory=list)
    canceller_cpu_s: float = 0.0
    # The clock drift each room's canceller followed at the room's end (ppm).
    drift_followed_ppm: list[float] = field(default_factory=list)
    simulated_s: float = 0.0
    # What the linear echo filter had removed at VAD onsets over the learnt canceller (dB): a person's, the echo's.
    person_onset_removed_db: list[float] = field(default_factory=list)
    echo_onset_removed_db: list[float] = field(default_factory=list)
    # Speech over a learning canceller read a second time, from the microphone: whose ("person"
    # or "echo"), and what that reading made it ("person_echo": a person taken for echo).
    microphone_readings: Counter[str] = field(default_factory=Counter)
    # Utterances over the agent taken for its echo by that filter: the echo's, a person's.
    echo_ignored: int = 0
    people_taken_for_echo: int = 0

    def summary(self) -> dict[str, Any]:
        minutes = self.agent_speech_s / 60
        self_total = self.self_pauses + self.self_cuts + self.self_replies
        removed = [m - c for m, c in zip(self.mic_db, self.cleaned_db, strict=True)]
        return {
            "canceller": self.canceller,
            "echo_db": self.echo_db,
            "agent_speech_min": round(minutes, 2),
            "replies": self.replies,
            "self_interruptions": self_total,
            "self_interruptions_per_min": round(self_total / minutes, 2) if minutes else None,
            "self_pauses": self.self_pauses,
            "self_cuts": self.self_cuts,
            "self_replies": self.self_replies,
            "self_interruptions_while_learning": self.self_while_learning,
            "self_heard": self.self_heard[:10],
            "self_events": self.self_events[:20],
            "barge_ins": self.barge_ins,
            "caught": self.caught,
            "caught_share": round(self.caught / self.barge_ins, 4) if self.barge_ins else None,
            "learning_agent_speech_min": round(self.learning_speech_s / 60, 2),
            "learning_self_interruptions": self.learning_self_interruptions,
            "learning_barge_ins": self.learning_barge_ins,
            "learning_caught": self.learning_caught,
            "learning_onset_to_stop_ms": summarise(self.learning_onset_to_stop_ms),
            "learning_heard": self.learning_heard[:20],
            "onset_to_pause_ms": summarise(self.onset_to_pause_ms),
            "echo_removed_db_p50": round(float(np.median(removed)), 1) if removed else None,
            "canceller_cpu_share_of_one_core": round(self.canceller_cpu_s / self.simulated_s, 4) if self.simulated_s else None,
            "clock_drift_followed_ppm": summarise(self.drift_followed_ppm, ("min", "p50", "max"), digits=2),
            "onset_witness_removed_db": {"person": summarise(self.person_onset_removed_db, ("min", "p50", "max")),
                                         "echo": summarise(self.echo_onset_removed_db, ("min", "p50", "max"))},
            "microphone_readings": {key: self.microphone_readings[key]
                                    for key in ("person_person", "person_echo", "echo_person", "echo_echo")},
            "echo_utterances_ignored": self.echo_ignored,
            "people_taken_for_echo": self.people_taken_for_echo,
        }


async def _speak(tts: Any, text: str) -> np.ndarray:
    frames = [frame async for frame in tts.synthesize(text)]
    return pcm16_to_float32(resample(concat(frames), RATE).pcm)


def _voice_onset(samples: np.ndarray) -> int:
    """The first sample of the voice in a synthesised phrase (past its leading silence)."""
    loud = np.flatnonzero(np.abs(samples) > 0.02)
    return int(loud[0]) if len(loud) else 0


@dataclass
class Voices:
    """The agent's replies and the person's interruptions as audio at 16 kHz."""

    agent: list[np.ndarray]
    agent_texts: list[str]
    person: list[np.ndarray]
    person_texts: list[str]

    @classmethod
    async def synthesise(cls, agent_tts: Any, person_tts: Any, replies: Sequence[str] = AGENT_REPLIES,
                         interruptions: Sequence[str] = PERSON_INTERRUPTIONS) -> Voices:
        agent = [await _speak(agent_tts, text) for text in replies]
        person = [await _speak(person_tts, text) for text in interruptions]
        # The person speaks at the agent's output level (a person next to the device).
        agent_rms = math.sqrt(float(np.mean(np.concatenate(agent) ** 2)))
        person = [p * agent_rms / math.sqrt(float(np.mean(p * p)) + 1e-12) for p in person]
        return cls(agent, list(replies), person, list(interruptions))


@dataclass
class Scenario:
    """One run: an echo level, the canceller on or off, how much agent speech to play."""

    echo_db: float
    canceller: Callable[[], EchoCanceller] | None
    minutes: float
    noise_dbfs: float | None = None
    seed: int = 7
    # The speaker's distortion (RoomEcho's `drive`); 0: a clean speaker.
    speaker_drive: float = 0.0
    # How many replies a room lasts before a new session starts in a new one; 0: one room throughout.
    replies_per_room: int = REPLIES_PER_ROOM
    # How much faster the microphone's clock runs than the speaker's (RoomEcho's `drift_ppm`), and
    # whether it also delivers samples at its own rate (RoomEcho's `own_rate`).
    clock_drift_ppm: float = 0.0
    microphone_own_rate: bool = False


@dataclass
class _Room:
    """One session's room and what hears it: the echo path, a canceller, the listener and the arbiter, all new."""

    echo: RoomEcho
    cancelling: EchoCancelling | None
    listener: Listener
    arbiter: BargeInArbiter
    # As the session reads speech over a learning canceller.
    learning_speech: LearningSpeech = field(default_factory=LearningSpeech)

    @classmethod
    def new(cls, rng: np.random.Generator, scenario: Scenario, vad: Any, settings: Any) -> _Room:
        room = Room(float(rng.uniform(20, 200)), float(rng.uniform(0.15, 0.5)), scenario.echo_db)
        echo = RoomEcho(room.impulse(rng), 10 ** (room.echo_db / 20), scenario.speaker_drive, scenario.clock_drift_ppm,
                        drift_reserve_s=scenario.minutes * 60 * 2, own_rate=scenario.microphone_own_rate)
        cancelling = EchoCancelling(scenario.canceller()) if scenario.canceller is not None else None
        vad.reset()
        return cls(echo, cancelling, Listener(vad, settings.turns), BargeInArbiter(settings.barge_in))


@dataclass
class _Person:
    """The person's interruption of one reply: their audio, words, and when it starts (simulated seconds)."""

    audio: np.ndarray
    text: str
    start: float

    @classmethod
    def over(cls, reply: np.ndarray, which: int, voices: Voices, rng: np.random.Generator, now: float) -> _Person:
        """Interruption `which` at a random moment of `reply`, which begins after the gap that follows `now`."""
        start_s = float(rng.uniform(BARGE_IN_FROM_S, len(reply) / RATE - BARGE_IN_BEFORE_END_S))
        return cls(voices.person[which], voices.person_texts[which], now + GAP_S + start_s)

    @staticmethod
    def fits(reply: np.ndarray) -> bool:
        """The reply is long enough to be interrupted where interruptions start."""
        return len(reply) > (BARGE_IN_FROM_S + BARGE_IN_BEFORE_END_S) * RATE

    @property
    def onset(self) -> float:
        return self.start + _voice_onset(self.audio) / RATE

    @property
    def end(self) -> float:
        return self.start + len(self.audio) / RATE


class _Player:
    """Plays replies into rooms on a simulated clock and counts what the arbiter did (one scenario)."""

    def __init__(self, result: ScenarioResult, stt: Any, rng: np.random.Generator, noise_gain: float) -> None:
        self.result = result
        self.stt = stt
        self.rng = rng
        self.noise_gain = noise_gain
        self.now = 0.0

    async def play(self, room: _Room, reply: _Reply, person: _Person | None, *, learning_trial: bool = False,
                   noise_rng: np.random.Generator | None = None) -> None:
        """One reply, from the silence before it until it ends or is stopped and the person is done.
        A `learning_trial` is counted apart: a person over a new room's first reply."""
        result = self.result
        noise_rng = noise_rng or self.rng
        audio = reply.audio
        cancelling, listener, arbiter = room.cancelling, room.listener, room.arbiter
        person_start = person.start if person is not None else math.inf
        person_onset = person.onset if person is not None else math.inf
        person_end = person.end if person is not None else math.inf
        stopped = False  # cut, or replaced by a reply to the person
        paused_at: float | None = None
        silence_left = round(GAP_S * RATE)  # the gap before the reply starts
        after_person = 0
        while True:
            # What the speaker plays in this block.
            if silence_left > 0:
                played = np.zeros(BLOCK)
                silence_left -= BLOCK
            elif not stopped and not reply.paused and reply.position < len(audio):
                played = audio[reply.position : reply.position + BLOCK]
                played = np.pad(played, (0, BLOCK - len(played)))
                reply.position += BLOCK
                reply.played_ms = reply.position * 1000 / RATE
                if learning_trial:
                    result.learning_speech_s += BLOCK / RATE
                else:
                    result.agent_speech_s += BLOCK / RATE
            else:
                played = np.zeros(BLOCK)
            mic = room.echo.push(played)  # BLOCK samples, or about that on a microphone of its own rate
            samples = len(mic)
            if person is not None:
                offset = round((self.now - person_start) * RATE)
                if -samples < offset < len(person.audio):
                    part = np.zeros(samples)
                    lo, hi = max(0, offset), min(len(person.audio), offset + samples)
                    part[lo - offset : hi - offset] = person.audio[lo:hi]
                    mic = mic + part
            if self.noise_gain:
                mic = mic + noise_rng.standard_normal(samples) * self.noise_gain
            frame = frame_from_float(mic, RATE)
            self.now += BLOCK / RATE
            now = self.now
            if cancelling is not None:
                cancelling.played(frame_from_float(played, RATE))
                began = time.process_time()
                cleaned = cancelling.cleaned(frame)
                result.canceller_cpu_s += time.process_time() - began
            else:
                cleaned = frame
            result.simulated_s += BLOCK / RATE
            if (not learning_trial and played.any() and not (person_start - 0.1 <= now <= person_end + 0.1)
                    and len(cleaned.pcm) == len(frame.pcm)):
                result.mic_db.append(dbfs(frame))
                result.cleaned_db.append(dbfs(cleaned))
            person_window = person_onset <= now <= person_end + PERSON_TAIL_S
            actions = []
            learning = cancelling is not None and cancelling.learning
            # What happens now answers speech that began while the canceller learnt.
            over_learning = learning
            measure = cancelling.witness_removed_db if cancelling is not None else None
            for event in listener.feed(cleaned, now):
                removed = event_echo_removed_db(measure, event, now)
                if (isinstance(event, SpeechOnset) and removed is not None and not learning and not learning_trial
                        and not stopped and 0 < reply.position < len(audio)):
                    (result.person_onset_removed_db if person_window else result.echo_onset_removed_db).append(removed)
                actions += arbiter.heard(event, reply, learning, removed)
                if isinstance(event, SpeechOnset):
                    room.learning_speech.onset(learning and not stopped and 0 < reply.position < len(audio))
                if isinstance(event, UserTurnEnded):
                    if arbiter.ended_echo:
                        # Taken for the agent's echo, as the session does: not transcribed.
                        if person_window:
                            result.people_taken_for_echo += 1
                        else:
                            result.echo_ignored += 1
                        continue
                    suspect = arbiter.ended_suspect
                    unsuppress = cancelling.unsuppressed if cancelling is not None else None
                    unsuppressed = room.learning_speech.ended(event.audio, suspect, unsuppress)
                    transcript = await self.stt.transcribe(unsuppressed or event.audio)
                    verdict = verdict_of(transcript.text, arbiter.policy)
                    microphone_text = None
                    if cancelling is not None and arbiter.wants_microphone_reading(verdict, transcript.text, suspect):
                        assert suspect is not None
                        heard = cancelling.microphone(event.audio, suspect.since)
                        microphone_text = (await self.stt.transcribe(heard)).text if heard is not None else None
                    decided = arbiter.transcribed(verdict, transcript.text, reply, suspect, microphone_text)
                    if microphone_text is not None:
                        # What the second reading decided: a would-be person taken for echo, or not.
                        flipped = not any(isinstance(action, StartReply) for action in decided)
                        key = "person" if person_window else "echo"
                        result.microphone_readings[f"{key}_{'echo' if flipped else 'person'}"] += 1
                    over_learning = over_learning or arbiter.ended_suspect is not None
                    if not person_window and verdict == "words":
                        result.self_heard.append(transcript.text)
                    actions += decided
            if cancelling is not None and cancelling.double_talk:
                actions += arbiter.double_talk(listener.last_probability, now, reply, learning)
            voice_removed = voice_echo_removed_db(measure, listener.voice_s, arbiter.judging, learning)
            actions += arbiter.voice(listener.voice_s, reply, learning, voice_removed)
            actions += arbiter.tick(now, reply)
            for action in actions:
                if isinstance(action, Pause):
                    reply.paused = True
                    if person_window:
                        if paused_at is None:
                            paused_at = now
                    else:
                        self._self_interruption("pause", reply, learning_trial, learning=learning)
                elif isinstance(action, Resume | Restart):
                    reply.paused = False
                elif isinstance(action, Cut | StartReply):
                    if learning_trial and person_window and isinstance(action, StartReply):
                        result.learning_heard.append({"said": person.text if person else "", "heard": action.text})
                    if isinstance(action, StartReply) and stopped and person_window:
                        continue  # the person's own turn after the cut: expected
                    if not stopped:
                        if person_window and learning_trial:
                            result.learning_caught += 1
                            result.learning_onset_to_stop_ms.append((now - person_onset) * 1000)
                        elif person_window:
                            result.caught += 1
                            if paused_at is None:
                                paused_at = now
                        else:
                            self._self_interruption("cut" if isinstance(action, Cut) else "reply", reply, learning_trial,
                                                    action.text if isinstance(action, StartReply) else None,
                                                    learning=over_learning)
                    stopped = True
                    reply.settled = True
            done_playing = stopped or reply.position >= len(audio)
            if person is not None and now > person_end:
                after_person += BLOCK
            if done_playing and (person is None or after_person >= (PERSON_TAIL_S + GAP_S) * RATE) and not listener.voice_s:
                break
        if paused_at is not None and person is not None and not learning_trial:
            result.onset_to_pause_ms.append((paused_at - person_onset) * 1000)
        reply.settled = True

    def _self_interruption(self, action: str, reply: _Reply, learning_trial: bool, heard: str | None = None, *,
                           learning: bool = False) -> None:
        """`learning`: it answered speech that began while the canceller was still learning the room."""
        result = self.result
        if learning_trial:
            result.learning_self_interruptions += 1
            return
        if learning:
            result.self_while_learning += 1
        if action == "pause":
            result.self_pauses += 1
        elif action == "cut":
            result.self_cuts += 1
        else:
            result.self_replies += 1
        event: dict[str, Any] = {"at_s": round(self.now, 2), "action": action, "reply_at_s": reply.position / RATE,
                                 "while_learning": learning}
        if heard is not None:
            event["heard"] = heard  # the words a reply would have answered
        result.self_events.append(event)


async def run_scenario(scenario: Scenario, voices: Voices, vad: Any, stt: Any, settings: Any,
                       progress: Callable[[str], None] = lambda _: None) -> ScenarioResult:
    """Plays replies into a simulated room until `scenario.minutes` of agent speech have been played.

    With a canceller, every other session is preceded by a learning trial: a room of its own and a
    person over its first reply (their own random draws, so the sessions counted are those of a run
    without trials)."""
    rng = np.random.default_rng(scenario.seed)
    trial_rng = np.random.default_rng(scenario.seed + 1)
    result = ScenarioResult(canceller="off", echo_db=scenario.echo_db)
    noise_gain = 10 ** (scenario.noise_dbfs / 20) if scenario.noise_dbfs is not None else 0.0
    player = _Player(result, stt, rng, noise_gain)
    index = 0
    turn = 0
    room: _Room | None = None
    while result.agent_speech_s < scenario.minutes * 60:
        room_number, reply_in_room = divmod(index, scenario.replies_per_room) if scenario.replies_per_room else (0, index)
        if reply_in_room == 0:
            if scenario.canceller is not None and room_number % 2 == 0:
                turn += 1
                await _learning_trial(player, turn, scenario, voices, vad, settings, trial_rng)
            # A new session: a room of its own, and a canceller, VAD and arbiter that know nothing yet.
            _note_drift(result, room)
            room = _Room.new(rng, scenario, vad, settings)
            if room.cancelling is not None:
                result.canceller = room.cancelling.canceller.name
        assert room is not None
        turn += 1
        reply_index = index % len(voices.agent)
        audio = voices.agent[reply_index]
        person: _Person | None = None
        if index % 2 == 1 and _Person.fits(audio):
            person = _Person.over(audio, (index // 2) % len(voices.person), voices, rng, player.now)
            result.barge_ins += 1
        index += 1
        result.replies += 1
        await player.play(room, _Reply(turn, audio, text=voices.agent_texts[reply_index]), person)
    _note_drift(result, room)
    progress(f"canceller {result.canceller}, echo {scenario.echo_db:+.0f} dB: {result.summary()['self_interruptions']} self-interruptions "
             f"in {result.agent_speech_s / 60:.1f} min, caught {result.caught}/{result.barge_ins}, "
             f"while learning {result.learning_caught}/{result.learning_barge_ins}")
    return result


def _note_drift(result: ScenarioResult, room: _Room | None) -> None:
    """The clock drift the room's canceller followed by its end."""
    if room is not None and room.cancelling is not None and (drift := room.cancelling.clock_drift_ppm) is not None:
        result.drift_followed_ppm.append(drift)


async def _learning_trial(player: _Player, turn: int, scenario: Scenario, voices: Voices, vad: Any, settings: Any,
                          rng: np.random.Generator) -> None:
    """A person speaks over the first reply in a new room, while its canceller is learning (as over a greeting)."""
    room = _Room.new(rng, scenario, vad, settings)
    long_enough = [i for i, a in enumerate(voices.agent) if _Person.fits(a)]
    reply_index = long_enough[int(rng.integers(len(long_enough)))]
    audio = voices.agent[reply_index]
    which = int(rng.integers(len(voices.person)))
    person = _Person.over(audio, which, voices, rng, player.now)
    player.result.learning_barge_ins += 1
    await player.play(room, _Reply(turn, audio, text=voices.agent_texts[reply_index]), person, learning_trial=True, noise_rng=rng)


def run_benchmark(settings: Any, progress: Callable[[str], None], *, echo_levels: Sequence[float] = (-20, -10, -5, 0),
                  minutes: float = 10.0, off_minutes: float = 2.0, noise_dbfs: float | None = None,
                  seed: int = 7, speaker_drive: float = 0.0, replies_per_room: int = REPLIES_PER_ROOM,
                  clock_drift_ppm: float = 0.0, microphone_own_rate: bool = False) -> dict[str, Any]:
    """Every echo level with the canceller on (`minutes` of agent speech each) and off (`off_minutes`)."""
    from convers.app.wiring import build, provider_name
    from convers.echo_cancelling import canceller_factory

    canceller = canceller_factory(settings)
    if canceller is None:
        raise RuntimeError("no echo canceller can run here (`convers doctor` says why)")
    agent_tts = build("tts", settings)
    person_tts = build("tts", settings, "espeak-ng")
    stt = build("stt", settings)
    vad = build("vad", settings)
    progress(f"synthesising {len(AGENT_REPLIES)} replies ({provider_name('tts', settings)}) and "
             f"{len(PERSON_INTERRUPTIONS)} interruptions (espeak-ng)")

    async def run() -> list[ScenarioResult]:
        voices = await Voices.synthesise(agent_tts, person_tts)
        results = []
        for level in echo_levels:
            for factory, length in ((canceller, minutes), (None, off_minutes)):
                if length <= 0:
                    continue
                scenario = Scenario(level, factory, length, noise_dbfs, seed, speaker_drive, replies_per_room, clock_drift_ppm,
                                    microphone_own_rate)
                results.append(await run_scenario(scenario, voices, vad, stt, settings, progress))
        return results

    started = time.perf_counter()
    results = asyncio.run(run())
    return {
        "benchmark": "echo",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - started, 1),
        "agent_voice": provider_name("tts", settings),
        "person_voice": "espeak-ng",
        "stt": provider_name("stt", settings),
        "vad": provider_name("vad", settings),
        "config": {"echo_levels_db": list(echo_levels), "minutes": minutes, "off_minutes": off_minutes,
                   "noise_dbfs": noise_dbfs, "seed": seed, "speaker_drive": speaker_drive,
                   "replies_per_room": replies_per_room, "clock_drift_ppm": clock_drift_ppm,
                   "microphone_own_rate": microphone_own_rate, "delay_ms": [20, 200], "rt60_s": [0.15, 0.5],
                   "person_level": "the agent's output level", "block_ms": BLOCK * 1000 // RATE},
        "scenarios": [result.summary() for result in results],
    }


def print_table(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    echo(f"{'canceller':<10} {'echo dB':>7} {'agent min':>9} {'self-int':>8} {'learning':>8} {'/min':>6} {'caught':>9} "
         f"{'onset->pause p50/p95 ms':>24} {'removed dB':>10} {'cpu':>6}")
    for row in result["scenarios"]:
        pause = row["onset_to_pause_ms"]
        removed = row["echo_removed_db_p50"]
        cpu = row["canceller_cpu_share_of_one_core"]
        echo(f"{row['canceller']:<10} {row['echo_db']:>7.0f} {row['agent_speech_min']:>9.1f} {row['self_interruptions']:>8} "
             f"{row['self_interruptions_while_learning']:>8} {row['self_interruptions_per_min'] or 0:>6.2f} {row['caught']:>4}/{row['barge_ins']:<4} "
             f"{str(pause['p50']) + ' / ' + str(pause['p95']):>24} {'' if removed is None else removed:>10} "
             f"{'' if cpu is None else f'{cpu:.1%}':>6}")
    echo("(self-int: the agent paused, cut or answered itself; learning: of those, answering speech that began while a"
         " room's canceller was still learning it, its first 6 s of agent speech)")
    if result["config"].get("clock_drift_ppm"):
        followed = ", ".join(f"{row['echo_db']:.0f} dB: {row['clock_drift_followed_ppm']['p50']}"
                             for row in result["scenarios"] if row.get("clock_drift_followed_ppm", {}).get("n"))
        echo(f"clock drift {result['config']['clock_drift_ppm']:g} ppm; followed at each room's end (p50 ppm): {followed}")
    learning = [row for row in result["scenarios"] if row.get("learning_barge_ins")]
    if learning:
        echo("learning trials (a person over a new room's first reply, while the canceller learnt it):")
        for row in learning:
            stop = row["learning_onset_to_stop_ms"]
            echo(f"  echo {row['echo_db']:>4.0f} dB: caught {row['learning_caught']}/{row['learning_barge_ins']}, "
                 f"onset to cut or reply p50/p95 {stop['p50']} / {stop['p95']} ms, "
                 f"self-interruptions {row['learning_self_interruptions']}")


def write_result(result: dict[str, Any], out: Path | None = None) -> Path:
    return write_json_result(result, out, "echo")
