"""The rolling buffer: the last few thousand characters of this conversation, as whole turns."""

from __future__ import annotations

from collections import deque
from typing import Literal

from convers.contracts.llm import ChatMessage


class RollingBuffer:
    """Keeps the newest whole turns whose text fits in `max_chars`; the oldest turns drop out first.

    The newest turn is always kept, even when it alone is longer than the budget: the model must
    see what was just said.
    """

    def __init__(self, max_chars: int = 2000) -> None:
        self.max_chars = max_chars
        self._turns: deque[ChatMessage] = deque()
        self._chars = 0

    def add(self, role: Literal["user", "assistant"], text: str) -> None:
        self._turns.append(ChatMessage(role, text))
        self._chars += len(text)
        while len(self._turns) > 1 and self._chars > self.max_chars:
            self._chars -= len(self._turns.popleft().content)
        # An assistant line cut off from the question it answered reads as a non sequitur.
        while len(self._turns) > 1 and self._turns[0].role == "assistant":
            self._chars -= len(self._turns.popleft().content)

    def messages(self) -> list[ChatMessage]:
        return list(self._turns)

    def __len__(self) -> int:
        return len(self._turns)

    @property
    def chars(self) -> int:
        return self._chars

    def clear(self) -> None:
        self._turns.clear()
        self._chars = 0
