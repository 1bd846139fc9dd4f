"""The rolling buffer: the last few thousand characters of this conversation, as whole turns."""

from __future__ import annotations

from collections.abc import Sequence

from convers.contracts.llm import ChatMessage


def recent_turns(history: Sequence[ChatMessage], budget_chars: int) -> list[ChatMessage]:
    """The newest whole turns whose text fits in `budget_chars`; the oldest drop out first.

    The session keeps the full history (a barge-in rewrites the cut reply in place); this is the
    window of it that goes into each prompt.
    """
    kept: list[ChatMessage] = []
    used = 0
    for message in reversed(history):
        used += len(message.content)
        if used > budget_chars:
            break
        kept.append(message)
    kept.reverse()
    # An assistant line cut off from the question it answered reads as a non sequitur.
    while kept and kept[0].role == "assistant" and len(kept) < len(history):
        kept.pop(0)
    return kept
