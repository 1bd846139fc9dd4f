"""What a latency run says and when: its settings, the spoken questions, each turn's plan, the microphone's frame grid.

Shared by the loopback run (bench/latency.py) and the run over a served WebSocket
(bench/latency_ws.py), so neither needs the other.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convers.audio import read_wav, resample
from convers.contracts.audio import AudioFrame

MIC_RATE = 16000
FRAME_S = 0.02

# Short everyday questions; the reference LLM answers each with two short sentences.
QUESTIONS: tuple[str, ...] = (
    "What should I cook for dinner tonight?",
    "Can you remind me what we talked about yesterday?",
    "How long does it take to walk to the station?",
    "What is a good book to read on holiday?",
    "Do you think it will rain this afternoon?",
    "How do I keep my plants alive in winter?",
    "What time should I go to bed tonight?",
    "Tell me something interesting about the moon.",
    "Which coat should I wear for the party?",
    "How can I learn to play the guitar?",
)
# Spoken over the agent on barge-in turns: real questions, so they become the next turn.
INTERRUPTIONS: tuple[str, ...] = (
    "Wait, what about tomorrow morning?",
    "Hold on, can you say that again?",
    "Sorry, what did you mean by that?",
)



@dataclass
class LatencyConfig:
    """What one `convers bench latency` run does."""

    turns: int = 20
    # Every Nth user turn is spoken over the agent's reply (0: never).
    barge_in_every: int = 4
    # How much of the reply plays before the interruption starts.
    barge_after_ms: float = 800.0
    # Reference LLM (True) or whatever settings.llm points at (False).
    reference_llm: bool = True
    ttft_s: float = 0.15
    tokens_per_s: float = 30.0
    # Silence between the end of the agent's reply and the next question.
    gap_s: float = 0.8
    words_per_minute: int = 160
    memory: bool = True
    speculate_llm: bool = False
    # Longest wait for a reply to start and for the previous one to finish playing (a real model's
    # reply may play for 40 s: speaking over it would measure a barge-in instead).
    turn_timeout_s: float = 60.0
    # A person who comes back (bench/returning.py): a profile and a long memory are seeded first,
    # and the questions are theirs, about their own life.
    returning: bool = False
    # A speakerphone (over --url only): the client hears its own speaker in its microphone at this
    # level against what it played (dB), through a room (bench/echo.py: 120 ms, a 0.3 s tail). None: a headset.
    speakerphone_echo_db: float | None = None
    # What the client's hello says: True, it cancelled its echo itself; False, the server should.
    client_aec: bool = True


@dataclass(frozen=True)
class Utterance:
    """A spoken question as 16 kHz PCM, with where the speech itself starts and ends in it."""

    text: str
    frame: AudioFrame
    speech_start_s: float
    speech_end_s: float


@dataclass
class TurnPlan:
    """A user turn the benchmark spoke, and what the session made of it."""

    index: int
    text: str
    barge_in: bool
    true_start: float
    true_end: float
    old_turn: int | None = None
    turn: int | None = None
    transcript: str = ""
    error: str | None = None
    # The end-of-turn verdict at each pause while this turn was spoken (the session's turn_judged events).
    judged: list[dict[str, Any]] = field(default_factory=list)


def judged_record(event: dict[str, Any]) -> dict[str, Any]:
    """What one `turn_judged` event says a pause was judged on: the model's probability, the
    provisional transcript, and the silence it set (kept per turn by `bench latency` and `bench turns`)."""
    return {key: event.get(key) for key in ("pause_s", "probability", "transcript", "silence_needed_s")}


async def wait_until(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.01) -> bool:
    """Polls `condition` until it holds (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step_s)
    return True


async def end_session(transport: Any, runner: asyncio.Task[Any], grace_s: float = 15.0) -> None:
    """Ends the loopback microphone's input and waits for the session to finish (cancelled after `grace_s`)."""
    transport.finish(0.1)
    try:
        await asyncio.wait_for(runner, grace_s)
    except TimeoutError:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


def frame_index(at_s: float) -> int:
    """The microphone frame a sound placed at `at_s` starts in."""
    return math.ceil(at_s / FRAME_S - 1e-6)


def speech_span(frame: AudioFrame, threshold_dbfs: float = -45.0, window_s: float = 0.005) -> tuple[float, float]:
    """First and last moment a 5 ms window is louder than `threshold_dbfs`: the true speech span."""
    samples = np.frombuffer(frame.pcm, dtype="<i2").astype(np.float32) / 32768.0
    step = max(1, round(window_s * frame.sample_rate))
    count = len(samples) // step
    if count == 0:
        raise ValueError("speech_span needs audio; got an empty frame")
    windows = samples[: count * step].reshape(count, step)
    levels = 20 * np.log10(np.sqrt(np.mean(windows**2, axis=1)) + 1e-12)
    loud = np.flatnonzero(levels > threshold_dbfs)
    if len(loud) == 0:
        raise ValueError(f"no speech above {threshold_dbfs} dBFS in the utterance")
    return loud[0] * window_s, (loud[-1] + 1) * window_s


def speak(text: str, directory: Path, words_per_minute: int = 160, voice: str = "en-us") -> Utterance:
    """Says `text` with espeak-ng (the user's voice in the benchmark)."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng (it speaks the benchmark's questions)")
    path = directory / f"q{abs(hash((text, words_per_minute, voice))) % 10**12}.wav"
    if not path.exists():
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text],
            check=True,
            capture_output=True,
        )
    frame = resample(read_wav(path), MIC_RATE)
    start, end = speech_span(frame)
    return Utterance(text, frame, start, end)
