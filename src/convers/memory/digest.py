"""Digests: a long user turn is also stored as a short third-person summary, made in the background.

Long turns embed poorly (one vector averages many topics) and crowd the prompt; a one-sentence
summary that keeps names, places and dates is easier to find and cheaper to show. The raw turn is
always stored first, so a failed or slow summary loses nothing.
"""

from __future__ import annotations

import logging

from convers.contracts.llm import LanguageModel
from convers.memory.ask import ask, one_paragraph

log = logging.getLogger(__name__)

DIGEST_SYSTEM = (
    "You write memory notes. Summarise what the speaker said in one short third-person sentence of "
    "at most 30 words. Keep every name, place, date, number and stated feeling or plan. Do not add "
    "anything that was not said. Answer with the sentence only."
)
DIGEST_MAX_TOKENS = 80


def needs_digest(text: str, min_words: int) -> bool:
    return len(text.split()) > min_words


async def make_digest(llm: LanguageModel, speaker: str, text: str, timeout_s: float = 60.0) -> str | None:
    """The summary sentence, or None when the model fails or answers with nothing usable."""
    try:
        answer = await ask(
            llm, DIGEST_SYSTEM, f"Speaker: {speaker}\nWhat they said: {text}",
            max_tokens=DIGEST_MAX_TOKENS, timeout_s=timeout_s,
        )
    except Exception as error:  # noqa: BLE001 - any failure keeps just the raw turn
        log.warning("digest skipped, raw turn kept: %r", error)
        return None
    summary = one_paragraph(answer, max_chars=300)
    # A "summary" as long as the turn is not a summary (the model ignored the instruction).
    if not summary or len(summary) >= len(text):
        return None
    return summary
