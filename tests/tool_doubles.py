"""Test doubles for function calling: a scripted LLM that calls tools, and tools that misbehave on cue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from convers.contracts.llm import ChatMessage, StreamItem, ToolCall


class ScriptedToolLlm:
    """Answers request N with round N of `rounds` (text deltas and ToolCall items); records each request.

    After the last round it repeats a plain "Done." so a test never hangs on a missing script line.
    """

    name = "scripted-tools"
    supports_tools = True

    def __init__(self, rounds: Sequence[Sequence[StreamItem]]) -> None:
        self.rounds = [list(r) for r in rounds]
        self.requests: list[list[ChatMessage]] = []
        self.tools_offered: list[list[Mapping[str, Any]] | None] = []

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> AsyncIterator[StreamItem]:
        self.requests.append(list(messages))
        self.tools_offered.append(list(tools) if tools is not None else None)
        items = self.rounds.pop(0) if self.rounds else ["Done."]
        for item in items:
            await asyncio.sleep(0)
            yield item


def call(name: str, arguments: str = "{}", id: str | None = None) -> ToolCall:
    return ToolCall(id=id or f"call_{name}", name=name, arguments_json=arguments)


class EchoTool:
    """Returns its `text` argument; counts calls."""

    name = "echo"
    description = "Repeat the text."
    parameters: dict[str, Any] = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def call(self, text: str) -> str:
        self.calls.append(text)
        return f"echo: {text}"


class BlockingTool:
    """Waits until `release` is set (never, unless the test sets it); records whether it was cancelled."""

    description = "Waits."
    parameters: dict[str, Any] = {"type": "object", "properties": {}}

    def __init__(self, name: str = "slow", result: str = "slow result") -> None:
        self.name = name
        self.result = result
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False

    async def call(self) -> str:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return self.result


class FailingTool:
    """Raises on every call."""

    name = "broken"
    description = "Always fails."
    parameters: dict[str, Any] = {"type": "object", "properties": {}}

    async def call(self) -> str:
        raise ConnectionError("backend is down")


class PlainTool:
    """A tool whose `call` is a plain blocking function (it must run in a worker thread)."""

    name = "plain"
    description = "Blocking."
    parameters: dict[str, Any] = {"type": "object", "properties": {}}

    def __init__(self) -> None:
        import threading

        self.thread: Any = None
        self._threading = threading

    def call(self) -> str:
        self.thread = self._threading.current_thread()
        return "plain result"
