"""What a tool call costs the reply beyond the tool's own time and the model's: `convers bench tools`.

A scripted model asks for one tool call per reply and, once it gets the result, answers; a scripted
tool returns at once. Per reply the overhead is the time from the end of the model's first stream
(the call is known) to the start of its second request (the result is in the messages), minus the
time spent inside the tool itself. That span is the engine's: parsing the arguments, the task
group and the filler timer, the event log lines, building the tool messages. It runs through the
real `ReplyStreamer` and `Toolbox`, with a real event log file and no TTS (the TTS runs in its own
task and is not on this path). Goal (issue 17): under 30 ms.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from convers.bench.latency import describe, machine_info
from convers.bench.results import write_json_result
from convers.contracts.audio import AudioFormat, AudioFrame
from convers.contracts.llm import ChatMessage, StreamItem, ToolCall
from convers.contracts.transport import InboundEvent
from convers.engine.reply.streamer import ReplyProgress, ReplyStreamer
from convers.engine.reply.tool_calls import Toolbox
from convers.events import EventLog, TurnMetrics

GOAL_MS = 30.0


class _ScriptedToolModel:
    """Round 1: a sentence and one call; round 2: the answer. Records when each round ends and starts."""

    name = "scripted-tool-model"
    supports_tools = True

    def __init__(self) -> None:
        self.first_ended_at = 0.0
        self.second_started_at = 0.0

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        if messages[-1].role != "tool":
            yield "One moment."
            yield ToolCall("call_0", "lookup", '{"query": "opening hours"}')
            self.first_ended_at = time.perf_counter()
            return
        self.second_started_at = time.perf_counter()
        yield "It opens at seven."


class _InstantTool:
    """Returns at once and records how long it was inside `call`."""

    name = "lookup"
    description = "Look something up."
    parameters: dict[str, Any] = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}  # noqa: RUF012

    def __init__(self) -> None:
        self.inside_s = 0.0

    async def call(self, query: str) -> str:
        started = time.perf_counter()
        result = f"Results for {query}: opens at 7, closes at 18."
        self.inside_s = time.perf_counter() - started
        return result


class _NullTransport:
    """Takes every event and discards it (the browser transport's send is a queue append, as cheap)."""

    name = "null"
    output_format = AudioFormat(sample_rate=16000)

    async def inbound(self) -> AsyncIterator[InboundEvent]:
        return
        yield  # pragma: no cover

    async def send_audio(self, turn: int, seq: int, frame: AudioFrame) -> None:
        return None

    async def send_event(self, event: dict[str, Any]) -> None:
        return None

    async def flush(self, turn: int) -> None:
        return None

    async def pause(self, turn: int) -> None:
        return None

    async def resume(self, turn: int) -> None:
        return None

    async def close(self) -> None:
        return None


async def measure(replies: int, events_path: Path) -> list[float]:
    """Overhead in ms of each of `replies` replies with one tool call."""
    overheads: list[float] = []
    tool = _InstantTool()
    toolbox = Toolbox([tool])
    events = EventLog(events_path)
    for turn in range(1, replies + 1):
        model = _ScriptedToolModel()
        streamer = ReplyStreamer(model, None, _NullTransport(), events, tools=toolbox)
        progress = ReplyProgress(turn=turn)
        await streamer.run([ChatMessage("user", "when does it open?")], progress, TurnMetrics(turn=turn))
        if progress.text != "One moment. It opens at seven.":
            raise RuntimeError(f"the scripted reply came out as {progress.text!r}: the tool loop is broken")
        overheads.append((model.second_started_at - model.first_ended_at - tool.inside_s) * 1000)
    return overheads


def run_benchmark(replies: int = 200, warmup: int = 20) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        samples = asyncio.run(measure(replies + warmup, path))[warmup:]
    summary = describe(samples)
    return {
        "benchmark": "tool_round_trip_overhead",
        "replies": replies,
        "overhead_ms": summary,
        "goal_ms": GOAL_MS,
        "meets_goal": summary["p95"] is not None and summary["p95"] < GOAL_MS,
        "machine": machine_info(),
    }


def print_table(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    summary = result["overhead_ms"]
    echo(f"tool round trip overhead over {result['replies']} replies (tool and model time excluded):")
    echo(f"  p50 {summary['p50']:.1f} ms   p95 {summary['p95']:.1f} ms   max {summary['max']:.1f} ms   "
         f"goal < {result['goal_ms']:.0f} ms: {'met' if result['meets_goal'] else 'NOT met'}")


def write_result(result: dict[str, Any], out: Path | None = None) -> Path:
    return write_json_result(result, out, "tools")
