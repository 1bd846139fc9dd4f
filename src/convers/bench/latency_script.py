"""What a latency run says and when: its settings, the spoken questions, each turn's plan, the microphone's frame grid.

Shared by the loopback run (bench/latency.py) and the run over a served WebSocket
(bench/latency_ws.py), so neither needs the other.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from convers.contracts.audio import AudioFrame

MIC_RATE = 16000
FRAME_S = 0.02


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
    turn_timeout_s: float = 25.0


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


async def wait_until(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.01) -> bool:
    """Polls `condition` until it holds (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step_s)
    return True


def frame_index(at_s: float) -> int:
    """The microphone frame a sound placed at `at_s` starts in."""
    return math.ceil(at_s / FRAME_S - 1e-6)
