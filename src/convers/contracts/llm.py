"""Language models: chat messages in, a stream of text deltas out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation as the model sees it."""

    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class LlmError(RuntimeError):
    """The model could not be reached or answered with something unusable; the message says which."""


@runtime_checkable
class LanguageModel(Protocol):
    """Streams a reply. Closing the iterator (or cancelling its consumer) must stop generation."""

    name: str

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]: ...
