"""Tool calls put back together from OpenAI-style `tool_calls` deltas.

Servers split a call differently: llama-server sends the id and name in the first delta and the
arguments a few characters at a time; Ollama sends a whole call in one delta; vLLM may send the
name and arguments separately. Every delta names its call by `index`, so pieces are joined by index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from convers.contracts.llm import LlmError, ToolCall


@dataclass
class _Partial:
    id: str = ""
    name: str = ""
    arguments: str = ""


class ToolCallAssembler:
    """Collects `tool_calls` delta lists of one reply; `finish()` gives the complete calls in index order."""

    def __init__(self, source: str) -> None:
        self.source = source  # named in errors: the URL or the model file
        self._calls: dict[int, _Partial] = {}

    def add(self, deltas: Any) -> None:
        if not isinstance(deltas, list):
            raise LlmError(f"{self.source} sent tool_calls that are not a list: {str(deltas)[:120]!r}")
        for delta in deltas:
            if not isinstance(delta, dict):
                raise LlmError(f"{self.source} sent a tool call that is not an object: {str(delta)[:120]!r}")
            index = delta.get("index")
            if index is None:
                # A server that sends whole calls may leave out the index: a delta with an id starts
                # a new call, one without continues the newest.
                newest = max(self._calls, default=-1)
                index = newest + 1 if delta.get("id") or newest < 0 else newest
            if not isinstance(index, int):
                raise LlmError(f"{self.source} sent a tool call with index {index!r}; an integer was expected")
            partial = self._calls.setdefault(index, _Partial())
            if isinstance(delta.get("id"), str) and delta["id"]:
                partial.id = delta["id"]
            function = delta.get("function") or {}
            if isinstance(function, dict):
                if isinstance(function.get("name"), str):
                    # Names come whole, but a server that splits them too is joined the same way.
                    partial.name += function["name"]
                arguments = function.get("arguments")
                if isinstance(arguments, str):
                    partial.arguments += arguments
                elif isinstance(arguments, dict):
                    # Ollama's native shape: arguments as an object, not as JSON text.
                    partial.arguments += json.dumps(arguments)

    def finish(self) -> list[ToolCall]:
        """The calls so far, complete; each call is given out once."""
        calls = [
            ToolCall(id=partial.id or f"call_{index}", name=partial.name, arguments_json=partial.arguments or "{}")
            for index, partial in sorted(self._calls.items())
        ]
        self._calls.clear()
        return calls
