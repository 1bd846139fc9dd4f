"""One-shot questions to the language model for background memory work (digests, greetings, journal)."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

from convers.contracts.llm import ChatMessage, LanguageModel


async def ask(llm: LanguageModel, system: str, user: str, *, max_tokens: int, timeout_s: float) -> str:
    """The model's whole answer as text; raises TimeoutError or the provider's error.

    Background work uses a low temperature: a summary should say what was said, not embroider it.
    """
    messages = [ChatMessage("system", system), ChatMessage("user", user)]
    parts: list[str] = []

    async def collect() -> None:
        async with aclosing(llm.stream(messages, max_tokens=max_tokens, temperature=0.2)) as stream:
            async for delta in stream:
                assert isinstance(delta, str)  # no tools are offered here, so the model yields only text
                parts.append(delta)

    await asyncio.wait_for(collect(), timeout_s)
    return "".join(parts).strip()


def one_paragraph(text: str, max_chars: int = 600) -> str:
    """First paragraph of a model answer, unquoted and cut at a sentence end within `max_chars`."""
    text = text.strip().split("\n\n")[0].strip().strip('"').strip()
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    return cut[: end + 1] if end > 0 else cut
