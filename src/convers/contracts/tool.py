"""Tools the agent may call while answering."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tool(Protocol):
    """A named function with a JSON-schema for its arguments; returns text for the model to use."""

    name: str
    description: str
    parameters: dict[str, Any]

    async def call(self, **arguments: Any) -> str: ...
