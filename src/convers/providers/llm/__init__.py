"""Built-in language-model providers, and the `auto` choice between them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convers.config import Settings

AUTO = "auto"


def resolve_llm_provider(settings: Settings) -> tuple[str, str]:
    """What `auto` stands for here, and why: a running local server first, else a downloaded GGUF.

    A server the user started is the stronger signal of intent (and usually the bigger model);
    the in-process GGUF is the fallback that needs nothing running.
    """
    from convers.providers.llm.llama_cpp import LlamaCppLlm
    from convers.providers.llm.openai_compatible import OpenAICompatibleLlm

    server = OpenAICompatibleLlm.availability(settings)
    if server.usable:
        return "openai", server.detail
    in_process = LlamaCppLlm.availability(settings)
    if in_process.usable:
        return "llama-cpp", f"in process: {in_process.detail}"
    return "openai", f"no LLM usable: {server.detail}; or in process: {in_process.detail}"


def llm_provider_name(settings: Settings) -> str:
    """settings.llm.provider with `auto` resolved."""
    name = settings.llm.provider
    return resolve_llm_provider(settings)[0] if name == AUTO else name
