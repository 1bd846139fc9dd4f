"""A reference OpenAI-compatible LLM server with a fixed, known speed, for latency benchmarks.

It answers `GET /v1/models` and `POST /v1/chat/completions` (streaming SSE, or one JSON body when
`"stream": false`) with canned replies, waiting `ttft_s` after the request before the first token
and then sending `tokens_per_s` tokens a second. With the model's cost fixed and recorded (every
request keeps the monotonic times it was received and each token was written), a benchmark can
subtract it and see what the pipeline itself costs.

Tokens are words with their leading space: real tokenisers cut finer, but only the timing of the
first speakable chunk depends on the cut, and that is reported separately.

Run it standalone with `convers bench reference-llm`, or in-process::

    async with ReferenceLlmServer(ReferenceTiming(ttft_s=0.15, tokens_per_s=30)) as server:
        settings.llm.base_url = server.base_url
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from convers.bench.openai_wire import (
    HttpRequest,
    SseStream,
    WireServer,
    send_error,
    send_json,
    send_models,
)

MODEL_NAME = "convers-reference"
COMPLETION_ID = "chatcmpl-reference"

# Replies are spoken by the agent: short sentences keep a benchmark turn a few seconds long while
# still giving barge-in something to interrupt. The same replies serve `convers bench latency` in
# process and `convers bench reference-llm` for a run over --url, so both measure the same speech.
DEFAULT_REPLIES: tuple[str, ...] = (
    "Sure, that sounds good. Tell me a little more about it, and we can plan it together.",
    "Good question. I think the easy part comes first, then we can see how it goes.",
    "It depends on the weather. If it stays dry, a walk by the river would be lovely.",
    "Let me think. Most people find that a short break every hour keeps them fresh.",
)


@dataclass(frozen=True)
class ReferenceTiming:
    """How fast the reference model answers: time to first token and steady token rate."""

    ttft_s: float = 0.15
    tokens_per_s: float = 30.0

    def __post_init__(self) -> None:
        if self.ttft_s < 0:
            raise ValueError(f"reference LLM ttft_s must be >= 0, got {self.ttft_s!r}")
        if self.tokens_per_s <= 0:
            raise ValueError(f"reference LLM tokens_per_s must be > 0, got {self.tokens_per_s!r}")


@dataclass
class ServedRequest:
    """One chat request as the server handled it, with monotonic times (time.monotonic)."""

    received_at: float
    messages: list[dict[str, Any]]
    stream: bool
    token_times: list[float] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    completed: bool = False
    client_disconnected: bool = False

    @property
    def first_token_at(self) -> float | None:
        return self.token_times[0] if self.token_times else None

    @property
    def ttft_s(self) -> float | None:
        """Server-side time to first token: what the model costs, without HTTP or client parsing."""
        first = self.first_token_at
        return None if first is None else first - self.received_at


def tokens_of(text: str) -> list[str]:
    """Word tokens with their leading space, so concatenating them gives `text` back."""
    words = text.split(" ")
    return [word if index == 0 else " " + word for index, word in enumerate(words) if word or index == 0]


class ReferenceLlmServer(WireServer):
    """Serves canned replies at a fixed speed on `host:port` (port 0: any free port)."""

    label = "reference LLM server"

    def __init__(
        self,
        timing: ReferenceTiming | None = None,
        *,
        replies: Sequence[str] = DEFAULT_REPLIES,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not replies:
            raise ValueError("the reference LLM needs at least one canned reply")
        super().__init__(host=host, port=port)
        self.timing = timing or ReferenceTiming()
        self.replies = list(replies)
        self.clock = clock
        self.requests: list[ServedRequest] = []

    def reply_for(self, messages: Sequence[dict[str, Any]]) -> str:
        """The canned reply for a request: chosen by the number of user messages, so it is reproducible."""
        users = sum(1 for m in messages if m.get("role") == "user")
        return self.replies[max(users - 1, 0) % len(self.replies)]

    # ----------------------------------------------------------------- HTTP

    async def answer(self, http: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if http.is_models():
            await send_models(writer, [MODEL_NAME], owned_by="convers")
            return True
        if not http.is_chat():
            await send_error(writer, 404, f"no route {http.method} {http.path}")
            return True
        received_at = self.clock()
        try:
            body = json.loads(http.raw_body)
            messages = list(body.get("messages", []))
        except (ValueError, AttributeError, TypeError):
            await send_error(writer, 400, "body must be a JSON object with messages")
            return False
        request = ServedRequest(received_at, messages, stream=bool(body.get("stream", False)))
        self.requests.append(request)
        tokens = tokens_of(self.reply_for(messages))
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and max_tokens > 0:
            tokens = tokens[:max_tokens]
        if request.stream:
            await self._stream(request, tokens, reader, writer)
            return False
        await self._whole(request, tokens, writer)
        return True

    async def _stream(
        self, request: ServedRequest, tokens: list[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        stream = SseStream(reader, writer, completion_id=COMPLETION_ID, model=MODEL_NAME)
        try:
            await stream.start()
            interval = 1.0 / self.timing.tokens_per_s
            # Deadlines from the request's arrival, not sleeps after each write: a slow write
            # never stretches the schedule, so the rate holds on average.
            deadline = request.received_at + self.timing.ttft_s
            for token in tokens:
                if await stream.hung_up_within(deadline - self.clock()):
                    request.client_disconnected = True
                    return
                await stream.send(token)
                request.token_times.append(self.clock())
                request.tokens.append(token)
                deadline += interval
            await stream.finish("stop")
            request.completed = True
        except ConnectionError:
            request.client_disconnected = True
        finally:
            stream.close()

    async def _whole(self, request: ServedRequest, tokens: list[str], writer: asyncio.StreamWriter) -> None:
        delay = request.received_at + self.timing.ttft_s + (len(tokens) - 1) / self.timing.tokens_per_s - self.clock()
        if delay > 0:
            await asyncio.sleep(delay)
        now = self.clock()
        request.token_times.extend([now] * len(tokens))
        request.tokens.extend(tokens)
        text = "".join(tokens)
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        await send_json(writer, 200, {"id": COMPLETION_ID, "object": "chat.completion", "model": MODEL_NAME, "choices": [choice]})
        request.completed = True
