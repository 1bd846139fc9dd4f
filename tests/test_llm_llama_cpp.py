"""The in-process llama.cpp provider, on a tiny random-weight GGUF the tests write themselves."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from convers.config import Settings
from convers.contracts.llm import ChatMessage, LanguageModel, LlmError
from convers.downloads import default_gguf_path
from convers.providers.llm.llama_cpp import LlamaCppLlm

needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"
)
pytestmark = pytest.mark.llama
HELLO = [ChatMessage("system", "You are a test."), ChatMessage("user", "hello friend")]
GUARD_S = 60.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    from tests.tiny_gguf import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.fixture(scope="module")
def llm(tiny_model: Path) -> LlamaCppLlm:
    return LlamaCppLlm(tiny_model, threads=1, context_tokens=512, temperature=0.0)


@needs_llama
async def test_streams_one_delta_per_token_up_to_max_tokens(llm: LlamaCppLlm):
    assert isinstance(llm, LanguageModel)
    async with asyncio.timeout(GUARD_S):
        deltas = [text async for text in llm.stream(HELLO, max_tokens=12)]
    # The tiny model can only pick words (see tests/tiny_gguf.py), so every token is a delta.
    assert len(deltas) == 12
    assert all(d.strip() for d in deltas)
    assert llm.last_generation is not None
    assert llm.last_generation.tokens == 12
    assert not llm.last_generation.stopped_early


@needs_llama
async def test_greedy_generation_is_repeatable(llm: LlamaCppLlm):
    first = [t async for t in llm.stream(HELLO, max_tokens=8, temperature=0.0)]
    second = [t async for t in llm.stream(HELLO, max_tokens=8, temperature=0.0)]
    other = [t async for t in llm.stream([ChatMessage("user", "rain and tea")], max_tokens=8, temperature=0.0)]
    assert first == second
    assert other != first  # the prompt reaches the model through the chat template


@needs_llama
async def test_closing_the_stream_stops_generation_early(llm: LlamaCppLlm):
    stream = llm.stream(HELLO, max_tokens=400)
    got = [await anext(stream) for _ in range(3)]
    await stream.aclose()
    generation = llm.last_generation
    assert generation is not None
    assert await asyncio.to_thread(generation.finished.wait, GUARD_S)
    assert len(got) == 3
    assert generation.stopped_early
    assert generation.tokens < 400


@needs_llama
async def test_cancelling_the_consumer_stops_generation_early(llm: LlamaCppLlm):
    got: list[str] = []
    three = asyncio.Event()

    async def consume() -> None:
        async for text in llm.stream(HELLO, max_tokens=400):
            got.append(text)
            if len(got) == 3:
                three.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(three.wait(), GUARD_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    generation = llm.last_generation
    assert generation is not None
    assert await asyncio.to_thread(generation.finished.wait, GUARD_S)
    assert generation.stopped_early
    assert generation.tokens < 400
    # The model is free again for the next reply.
    assert len([t async for t in llm.stream(HELLO, max_tokens=2)]) == 2


async def test_a_missing_file_is_a_clear_error(tmp_path: Path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(LlmError, match="nope.gguf does not exist.*llm.model_path"):
        async for _ in LlamaCppLlm(missing).stream(HELLO):
            pass


def test_availability_says_to_pull_the_default_model(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    found = LlamaCppLlm.availability(settings)
    assert not found.usable
    if importlib.util.find_spec("llama_cpp") is not None:
        assert "convers models pull llm" in found.detail
        assert str(default_gguf_path(settings)) in found.detail


@needs_llama
def test_availability_is_usable_with_a_model_file(tiny_model: Path):
    settings = Settings.model_validate({"llm": {"model_path": str(tiny_model), "threads": 2}})
    found = LlamaCppLlm.availability(settings)
    assert found.usable
    assert str(tiny_model) in found.detail and "2 thread" in found.detail


def test_availability_without_llama_cpp_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    found = LlamaCppLlm.availability(Settings(data_dir=tmp_path))
    assert not found.usable
    assert "pip install 'convers[llama]'" in found.detail and "CMAKE_ARGS" in found.detail


async def test_streaming_without_llama_cpp_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(LlmError, match=r"pip install 'convers\[llama\]'.*CMAKE_ARGS"):
        async for _ in LlamaCppLlm(model).stream(HELLO):
            pass


@needs_llama
async def test_a_file_that_is_not_a_gguf_is_a_clear_error(tmp_path: Path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model at all" * 100)
    with pytest.raises(LlmError, match="cannot load .*broken.gguf"):
        async for _ in LlamaCppLlm(broken).stream(HELLO):
            pass


def test_from_settings_defaults_to_the_pulled_model(tmp_path: Path):
    settings = Settings.model_validate({"data_dir": str(tmp_path), "llm": {"threads": 2, "context_tokens": 1024}})
    llm = LlamaCppLlm.from_settings(settings)
    assert llm.model_path == tmp_path / "models" / "qwen2.5-1.5b-instruct-q4_k_m.gguf"
    assert (llm.threads, llm.context_tokens) == (2, 1024)
