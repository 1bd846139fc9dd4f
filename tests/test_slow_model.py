"""A model that keeps the client waiting is told to the client (a `status` llm_slow), a quick one is not."""

from __future__ import annotations

import asyncio

from convers.contracts.llm import ChatMessage
from convers.engine.reply.streamer import ReplyProgress, ReplyStreamer
from convers.events import EventLog, TurnMetrics
from tests.doubles import RecordingTransport, ScriptedLlm

PROMPT = [ChatMessage("user", "hi")]


class HeldLlm:
    """Sends its first token, then nothing until `go` is set (a server that is busy or stuck)."""

    name = "held"

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def stream(self, messages, *, max_tokens=None, temperature=None):
        yield "Well"
        await self.go.wait()
        yield ", yes."


async def until(predicate, timeout_s: float = 5.0):
    async with asyncio.timeout(timeout_s):
        while not (result := predicate()):
            await asyncio.sleep(0.005)
        return result


async def test_a_model_that_goes_quiet_mid_reply_is_reported_as_slow_until_it_answers() -> None:
    llm, transport = HeldLlm(), RecordingTransport()
    streamer = ReplyStreamer(llm, None, transport, EventLog(None), slow_notice_s=0.02)
    reply = asyncio.create_task(streamer.run(PROMPT, ReplyProgress(turn=4), TurnMetrics(turn=4)))
    await until(lambda: len(transport.events("status")) >= 2)  # and again while it stays quiet
    statuses = transport.events("status")
    first = statuses[0]
    assert first["code"] == "llm_slow" and first["turn"] == 4 and first["waited_ms"] >= 20
    assert statuses[1]["waited_ms"] > first["waited_ms"]
    assert "language model" in first["message"]
    llm.go.set()
    await reply
    assert transport.reply_text(4) == "Well, yes."
    told = len(transport.events("status"))
    await asyncio.sleep(0.1)  # five notice periods: the watch stopped with the reply
    assert len(transport.events("status")) == told


async def test_a_model_that_answers_at_once_gets_no_slow_notice() -> None:
    transport = RecordingTransport()
    streamer = ReplyStreamer(ScriptedLlm(["Hi", " there."]), None, transport, EventLog(None), slow_notice_s=5.0)
    await streamer.run(PROMPT, ReplyProgress(turn=1), TurnMetrics(turn=1))
    assert transport.events("status") == []
