"""The reference LLM server: OpenAI-compatible, and shaped in time as configured (never timed asserts on speed)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from convers.bench.reference_llm import MODEL_NAME, ReferenceLlmServer, ReferenceTiming, tokens_of
from convers.contracts.llm import ChatMessage
from convers.providers.llm.openai_compatible import OpenAICompatibleLlm

REPLIES = ("One two three. Four five.", "Second reply here.")


def test_tokens_join_back_into_the_text() -> None:
    text = "Sure, that sounds good. Tell me more."
    tokens = tokens_of(text)
    assert "".join(tokens) == text
    assert tokens[0] == "Sure," and tokens[1] == " that" and len(tokens) == 7


@pytest.mark.parametrize("ttft_s, rate", [(-0.1, 30.0), (0.1, 0.0), (0.1, -5.0)])
def test_timing_rejects_impossible_values(ttft_s: float, rate: float) -> None:
    with pytest.raises(ValueError, match="reference LLM"):
        ReferenceTiming(ttft_s, rate)


async def test_streams_every_token_in_order_after_the_first_token_delay() -> None:
    timing = ReferenceTiming(ttft_s=0.12, tokens_per_s=50.0)
    async with ReferenceLlmServer(timing, replies=REPLIES) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url)
        started = time.monotonic()
        deltas = []
        first_at = None
        async for delta in llm.stream([ChatMessage("user", "hello")]):
            if first_at is None:
                first_at = time.monotonic()
            deltas.append(delta)
    assert "".join(deltas) == REPLIES[0]
    assert deltas == tokens_of(REPLIES[0])
    request = server.requests[-1]
    assert request.completed and not request.client_disconnected
    assert request.tokens == tokens_of(REPLIES[0])
    # Shape, not speed: the first token never comes before the configured delay, and each later
    # token keeps at least the configured spacing from the request's arrival.
    assert request.ttft_s is not None and request.ttft_s >= timing.ttft_s - 1e-3
    assert first_at is not None and first_at - started >= timing.ttft_s - 1e-3
    interval = 1 / timing.tokens_per_s
    for index, at in enumerate(request.token_times):
        assert at - request.received_at >= timing.ttft_s + index * interval - 1e-3
    assert request.token_times == sorted(request.token_times)


async def test_reply_is_chosen_by_the_number_of_user_turns() -> None:
    async with ReferenceLlmServer(ReferenceTiming(0.0, 1000.0), replies=REPLIES) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url)
        messages = [ChatMessage("user", "a"), ChatMessage("assistant", "b"), ChatMessage("user", "c")]
        text = "".join([d async for d in llm.stream(messages)])
    assert text == REPLIES[1]


async def test_models_whole_replies_max_tokens_and_unknown_routes() -> None:
    async with ReferenceLlmServer(ReferenceTiming(0.0, 1000.0), replies=REPLIES) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            models = (await client.get("/v1/models")).json()
            whole = (await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})).json()
            short = await client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "x"}], "stream": True, "max_tokens": 2},
            )
            missing = await client.get("/v2/nothing")
    assert [m["id"] for m in models["data"]] == [MODEL_NAME]
    assert whole["choices"][0]["message"]["content"] == REPLIES[0]
    contents = [
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in short.text.splitlines()
        if line.startswith("data: {")
    ]
    assert "".join(contents) == "One two"
    assert "data: [DONE]" in short.text
    assert missing.status_code == 404


async def test_closing_the_stream_early_is_seen_as_a_disconnect() -> None:
    async with ReferenceLlmServer(ReferenceTiming(0.0, 20.0), replies=REPLIES) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url)
        stream = llm.stream([ChatMessage("user", "hi")])
        first = await anext(stream)
        await stream.aclose()
        request = server.requests[-1]
        for _ in range(100):
            if request.client_disconnected:
                break
            await asyncio.sleep(0.01)
    assert first == "One"
    assert request.client_disconnected and not request.completed
    assert len(request.tokens) < len(tokens_of(REPLIES[0]))


def test_runs_in_a_thread_for_synchronous_callers() -> None:
    server = ReferenceLlmServer(ReferenceTiming(0.0, 1000.0), replies=REPLIES)
    with server.running_in_thread():
        response = httpx.get(f"{server.base_url}/v1/models")
    assert response.status_code == 200
    with pytest.raises(RuntimeError, match="not started"):
        _ = ReferenceLlmServer().port
