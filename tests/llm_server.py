"""A scripted OpenAI-compatible streaming server on 127.0.0.1 for tests.

It speaks just enough HTTP/1.1 to be a real peer for httpx: `GET /v1/models` and
`POST /v1/chat/completions` with `"stream": true` (SSE `data:` lines, then `data: [DONE]`).
Each chat request takes the next scripted `Reply` (or asks `responder`); a reply can be slow
(time to first token, tokens per second), fail with an HTTP status, send garbage, close early or
stall. Every request is recorded, including whether the client hung up before the end, so a
test can prove that cancelling a reply really closed the connection.

Use it inside a test's event loop::

    async with ScriptedLlmServer([Reply(["Hel", "lo"])]) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url)

or from synchronous code (a CLI test, a subprocess) on its own thread::

    with ScriptedLlmServer([Reply(["Hi"])]).running_in_thread() as server:
        subprocess.run([..., "--set", f"llm.base_url={server.base_url}"])
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from convers.bench.openai_wire import (
    HttpRequest,
    SseStream,
    WireServer,
    send_body,
    send_error,
    send_models,
    sse_event,
)

Ending = Literal["done", "finish", "close", "stall"]


@dataclass
class Reply:
    """One scripted answer to a chat request.

    ending: "done" sends a finish_reason chunk and `data: [DONE]`; "finish" sends the finish_reason
    chunk and hangs up; "close" hangs up right after the tokens; "stall" sends nothing more
    and keeps the connection open until the client leaves (to test read timeouts).
    garbage_after: index of the token after which `garbage` is sent as a raw line.
    """

    # Text tokens; a dict is sent as a raw `delta` object instead (for tool_calls deltas).
    tokens: Sequence[str | dict[str, Any]] = ("Hello", " there", ".")
    first_token_delay_s: float = 0.0
    tokens_per_s: float | None = None
    status: int = 200
    error_body: str = '{"error": {"message": "scripted failure"}}'
    ending: Ending = "done"
    garbage: str | None = None
    garbage_after: int = 0
    finish_reason: str | None = "stop"


@dataclass
class ReceivedRequest:
    """What the server saw of one request and how the exchange ended."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    tokens_sent: int = 0
    completed: bool = False
    client_disconnected: bool = False
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []


Responder = Callable[[ReceivedRequest], Reply]


def echo_responder(request: ReceivedRequest) -> Reply:
    """Replies with the last user message, word by word: handy for end-to-end tests."""
    users = [m.get("content", "") for m in request.messages if m.get("role") == "user"]
    words = (users[-1] if users else "nothing").split(" ")
    return Reply([w if i == 0 else " " + w for i, w in enumerate(words)])


class ScriptedLlmServer(WireServer):
    """Serves scripted replies in order; when they run out, `responder` (default: a fixed reply).

    `models` is what `/v1/models` lists; `models_status` lets a test make that endpoint fail.
    """

    label = "scripted LLM server"

    def __init__(
        self,
        replies: Sequence[Reply] = (),
        *,
        responder: Responder | None = None,
        models: Sequence[str] = ("scripted-model",),
        models_status: int = 200,
        port: int = 0,
    ) -> None:
        super().__init__(host="127.0.0.1", port=port)
        self.replies = list(replies)
        self.responder = responder or (lambda _request: Reply())
        self.models = list(models)
        self.models_status = models_status
        self.requests: list[ReceivedRequest] = []

    # -- what tests look at ------------------------------------------------------------------

    def chat_requests(self) -> list[ReceivedRequest]:
        """The chat completion requests received so far, oldest first."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    async def wait_finished(self, request: ReceivedRequest, timeout_s: float = 5.0) -> None:
        """Waits until the server is done with `request` (sent all, or saw the client leave)."""
        deadline = time.monotonic() + timeout_s
        while not request.finished.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"server still busy with {request.path} after {timeout_s} s")
            await asyncio.sleep(0.01)

    # -- HTTP ------------------------------------------------------------------------------

    async def answer(self, http: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Records and serves one request; False when the connection should end."""
        try:
            body: Any = json.loads(http.raw_body) if http.raw_body else None
        except ValueError:
            body = http.raw_body.decode("utf-8", "replace")
        request = ReceivedRequest(http.method, http.path, http.headers, body)
        self.requests.append(request)
        try:
            if http.is_models():
                await self._send_models(writer)
                request.completed = True
                return True
            if http.is_chat():
                await self._send_chat(request, reader, writer)
                return False
            await send_error(writer, 404, f"no route {http.method} {http.path}")
            return True
        finally:
            request.finished.set()

    async def _send_models(self, writer: asyncio.StreamWriter) -> None:
        if self.models_status != 200:
            await send_error(writer, self.models_status, "models unavailable")
            return
        await send_models(writer, self.models, owned_by="scripted")

    async def _send_chat(
        self, request: ReceivedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        reply = self.replies.pop(0) if self.replies else self.responder(request)
        if reply.status != 200:
            await send_body(writer, reply.status, reply.error_body.encode())
            request.completed = True
            return
        stream = SseStream(reader, writer, completion_id="chatcmpl-scripted", model="scripted-model")
        try:
            await stream.start()
            interval = 1.0 / reply.tokens_per_s if reply.tokens_per_s else 0.0
            for index, token in enumerate(reply.tokens):
                delay = reply.first_token_delay_s if index == 0 else interval
                if await stream.hung_up_within(delay):
                    request.client_disconnected = True
                    return
                if isinstance(token, dict):  # a raw delta (tool_calls), sent as its own chunk
                    await stream.write(sse_event({"object": "chat.completion.chunk", "choices": [
                        {"index": 0, "delta": token, "finish_reason": None}]}))
                else:
                    await stream.send(token)
                request.tokens_sent += 1
                if reply.garbage is not None and index == reply.garbage_after:
                    await stream.write(reply.garbage.encode() + b"\n\n")
            if reply.ending == "stall":
                await stream.wait_for_hang_up()
                request.client_disconnected = True
                return
            if reply.ending == "close":
                return
            await stream.finish(reply.finish_reason, done=reply.ending == "done")
            request.completed = True
        except ConnectionError:
            request.client_disconnected = True
        finally:
            stream.close()


@contextlib.asynccontextmanager
async def serve_llm(*replies: Reply, **options: Any) -> AsyncIterator[ScriptedLlmServer]:
    """Shorthand: `async with serve_llm(Reply(["a"])) as server: ...`."""
    async with ScriptedLlmServer(replies, **options) as server:
        yield server
