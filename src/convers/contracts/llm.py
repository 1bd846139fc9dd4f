"""Language models: chat messages in, a stream of text deltas (and, with tools, tool calls) out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """The model asks for a function: `arguments_json` is the JSON text exactly as the model wrote it.

    It is kept as text because a model can write arguments that do not parse; the engine decides
    what to do with them (tell the model), not the provider.
    """

    id: str
    name: str
    arguments_json: str

    def as_dict(self) -> dict[str, Any]:
        """The OpenAI wire shape of one call inside an assistant message."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments_json}}


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation as the model sees it.

    An assistant message may carry the tool calls it made; a `tool` message answers one of them
    by `tool_call_id`.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.as_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


# What a stream yields: text to speak, or a call the model wants made before it goes on.
StreamItem = str | ToolCall


class LlmError(RuntimeError):
    """The model could not be reached or answered with something unusable; the message says which."""


@runtime_checkable
class LanguageModel(Protocol):
    """Streams a reply. Closing the iterator (or cancelling its consumer) must stop generation.

    A model without tools yields only `str`.
    """

    name: str

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]: ...


@runtime_checkable
class ToolCallingModel(Protocol):
    """A LanguageModel that also takes `tools` (OpenAI function schemas) and may yield ToolCall items.

    Tool calls come after the text that preceded them in the reply, once each call is complete.
    `supports_tools` is the marker the engine checks: a provider says it, the engine never guesses.
    """

    name: str
    supports_tools: bool

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> AsyncIterator[StreamItem]: ...


def supports_tools(llm: object) -> bool:
    """Whether `llm` takes a `tools` argument (and may yield ToolCall items)."""
    return bool(getattr(llm, "supports_tools", False))
