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
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

MODEL_NAME = "convers-reference"

# Replies are spoken by the agent; two or three short sentences keep a benchmark turn a few
# seconds long while still giving barge-in something to interrupt.
DEFAULT_REPLIES: tuple[str, ...] = (
    "That sounds like a good plan. I would start with the easy part first, then see how it goes.",
    "Sure, I can help with that. Tell me a little more about what you have in mind.",
    "It depends on the weather, really. If it stays dry, a walk by the river would be lovely.",
    "Good question. Most people find that a short break every hour keeps them fresh all day.",
    "I remember you mentioned that before. It seemed important to you, so let us talk it through.",
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


class ReferenceLlmServer:
    """Serves canned replies at a fixed speed on `host:port` (port 0: any free port)."""

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
        self.timing = timing or ReferenceTiming()
        self.replies = list(replies)
        self.host = host
        self._port = port
        self.clock = clock
        self.requests: list[ServedRequest] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("reference LLM server is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """What to put in llm.base_url."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> ReferenceLlmServer:
        self._server = await asyncio.start_server(self._handle, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> ReferenceLlmServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.stop()

    @contextlib.contextmanager
    def running_in_thread(self) -> Iterator[ReferenceLlmServer]:
        """Runs on its own event loop in a daemon thread, so the loop under test never delays a token."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as error:  # reported to the caller below
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="reference-llm", daemon=True)
        thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"reference LLM server did not start on {self.host}:{self._port}: {failure[:1]}")
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    def reply_for(self, messages: Sequence[dict[str, Any]]) -> str:
        """The canned reply for a request: chosen by the number of user messages, so it is reproducible."""
        users = sum(1 for m in messages if m.get("role") == "user")
        return self.replies[max(users - 1, 0) % len(self.replies)]

    # ----------------------------------------------------------------- HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, path, _version = lines[0].split(" ", 2)
        except ValueError:
            await _send_json(writer, 400, {"error": {"message": f"bad request line {lines[0]!r}"}})
            return False
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0") or 0))
        route = path.split("?", 1)[0].rstrip("/")
        if method == "GET" and route.endswith("/models"):
            data = [{"id": MODEL_NAME, "object": "model", "owned_by": "convers"}]
            await _send_json(writer, 200, {"object": "list", "data": data})
            return True
        if method == "POST" and route.endswith("/chat/completions"):
            received_at = self.clock()
            try:
                body = json.loads(raw)
                messages = list(body.get("messages", []))
            except (ValueError, AttributeError, TypeError):
                await _send_json(writer, 400, {"error": {"message": "body must be a JSON object with messages"}})
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
        await _send_json(writer, 404, {"error": {"message": f"no route {method} {path}"}})
        return True

    async def _stream(
        self, request: ServedRequest, tokens: list[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # The client sends nothing after its request, so a read that ends means it hung up.
        hung_up = asyncio.ensure_future(reader.read(1))
        try:
            writer.write(_head(200, "text/event-stream", None))
            await writer.drain()
            interval = 1.0 / self.timing.tokens_per_s
            # Deadlines from the request's arrival, not sleeps after each write: a slow write
            # never stretches the schedule, so the rate holds on average.
            deadline = request.received_at + self.timing.ttft_s
            for token in tokens:
                if await _hung_up_before(hung_up, deadline - self.clock()):
                    request.client_disconnected = True
                    return
                writer.write(_sse(_chunk(token, None)))
                await writer.drain()
                request.token_times.append(self.clock())
                request.tokens.append(token)
                deadline += interval
            writer.write(_sse(_chunk("", "stop")) + b"data: [DONE]\n\n")
            await writer.drain()
            request.completed = True
        except ConnectionError:
            request.client_disconnected = True
        finally:
            hung_up.cancel()

    async def _whole(self, request: ServedRequest, tokens: list[str], writer: asyncio.StreamWriter) -> None:
        delay = request.received_at + self.timing.ttft_s + (len(tokens) - 1) / self.timing.tokens_per_s - self.clock()
        if delay > 0:
            await asyncio.sleep(delay)
        now = self.clock()
        request.token_times.extend([now] * len(tokens))
        request.tokens.extend(tokens)
        text = "".join(tokens)
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        await _send_json(writer, 200, {"id": "chatcmpl-reference", "object": "chat.completion", "model": MODEL_NAME, "choices": [choice]})
        request.completed = True


async def _hung_up_before(hung_up: asyncio.Future[bytes], delay_s: float) -> bool:
    if delay_s > 0:
        await asyncio.wait({hung_up}, timeout=delay_s)
    else:
        await asyncio.sleep(0)
    return hung_up.done()


def _head(status: int, content_type: str, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}", f"Content-Type: {content_type}"]
    if length is None:
        lines += ["Cache-Control: no-cache", "Connection: close"]  # the stream ends when the connection does
    else:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _send_json(writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    writer.write(_head(status, "application/json", len(body)) + body)
    await writer.drain()


def _chunk(token: str, finish_reason: str | None) -> dict[str, Any]:
    delta = {"content": token} if token else {}
    return {
        "id": "chatcmpl-reference",
        "object": "chat.completion.chunk",
        "model": MODEL_NAME,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
