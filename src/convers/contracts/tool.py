"""Tools the agent may call while answering."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tool(Protocol):
    """A named function with a JSON-schema for its arguments; returns text for the model to use."""

    name: str
    description: str
    parameters: dict[str, Any]

    # Called with the arguments its schema names, as keywords. Each tool declares its own
    # (`async def call(self, query: str) -> str`); `*args: Any, **arguments: Any` accepts any of them.
    async def call(self, *args: Any, **arguments: Any) -> str: ...
