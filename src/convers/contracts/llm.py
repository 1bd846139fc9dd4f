"""Language models: chat messages in, a stream of text deltas (and, with tools, tool calls) out."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
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
    ) -> AsyncGenerator[StreamItem, None]: ...


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
    ) -> AsyncGenerator[StreamItem, None]: ...


def can_summarise(llm: object) -> bool:
    """Whether `llm` is worth asking for notes written in the background (digests, reflections).

    A provider says no with `can_summarise = False`: the packaged 135M model answers "summarise
    this" with apologies, which stored as memory would come back in every prompt.
    """
    return bool(getattr(llm, "can_summarise", True))


def supports_tools(llm: object) -> bool:
    """Whether `llm` takes a `tools` argument (and may yield ToolCall items)."""
    return bool(getattr(llm, "supports_tools", False))


@dataclass(frozen=True)
class PromptReading:
    """How much of one request's prompt the model had to read; the rest came from its cache.

    `purpose` is "reply" for a request that answers, "prefill" for one that only reads ahead.
    """

    purpose: str
    prompt_tokens: int
    read_tokens: int
    read_ms: float


ReadingReport = Callable[[PromptReading], None]


@runtime_checkable
class PromptCachingModel(Protocol):
    """A LanguageModel that keeps each session's prompt in a cache of its own and can read ahead.

    `for_session` gives the view one session streams through: its requests go to one cache slot,
    and what each request had to read is reported to `on_reading`. `prefill` reads `messages` into
    that cache with nothing to say, so that the next request reads only what was added since.
    A prefill is an optimisation: it never raises, and a failed one costs only the time it took.
    """

    def for_session(self, key: str, on_reading: ReadingReport | None = None) -> LanguageModel: ...

    async def prefill(self, messages: Sequence[ChatMessage]) -> None: ...


def for_session(llm: LanguageModel, key: str, on_reading: ReadingReport | None = None) -> LanguageModel:
    """`llm` as one session uses it: its own prompt cache where the model keeps one, else `llm` itself."""
    if isinstance(llm, PromptCachingModel):
        return llm.for_session(key, on_reading)
    return llm
