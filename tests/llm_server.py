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
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Ending = Literal["done", "finish", "close", "stall"]


@dataclass
class Reply:
    """One scripted answer to a chat request.

    ending: "done" sends a finish_reason chunk and `data: [DONE]`; "finish" sends the finish_reason
    chunk and hangs up; "close" hangs up right after the tokens; "stall" sends nothing more
    and keeps the connection open until the client leaves (to test read timeouts).
    garbage_after: index of the token after which `garbage` is sent as a raw line.
    """

    tokens: Sequence[str] = ("Hello", " there", ".")
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


class ScriptedLlmServer:
    """Serves scripted replies in order; when they run out, `responder` (default: a fixed reply).

    `models` is what `/v1/models` lists; `models_status` lets a test make that endpoint fail.
    """

    def __init__(
        self,
        replies: Sequence[Reply] = (),
        *,
        responder: Responder | None = None,
        models: Sequence[str] = ("scripted-model",),
        models_status: int = 200,
        port: int = 0,
    ) -> None:
        self.replies = list(replies)
        self.responder = responder or (lambda _request: Reply())
        self.models = list(models)
        self.models_status = models_status
        self.requests: list[ReceivedRequest] = []
        self._port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("server not started")
        return self._port

    @property
    def base_url(self) -> str:
        """Root URL without /v1, as a user would put it in llm.base_url."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ScriptedLlmServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self._port)
        # Kept after stop() so tests can still name the address in assertions.
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> ScriptedLlmServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def running_in_thread(self) -> Iterator[ScriptedLlmServer]:
        """Runs the server on its own event loop in a daemon thread for synchronous callers."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="scripted-llm-server", daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("scripted LLM server did not start within 10 s")
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serves one request; False when the connection should end."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        request = ReceivedRequest(method, path, headers, body)
        self.requests.append(request)
        try:
            if method == "GET" and path.rstrip("/").endswith("/models"):
                await self._send_models(writer)
                request.completed = True
                return True
            if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
                await self._send_chat(request, reader, writer)
                return False
            await _send_json(writer, 404, {"error": {"message": f"no route {method} {path}"}})
            return True
        finally:
            request.finished.set()

    async def _send_models(self, writer: asyncio.StreamWriter) -> None:
        if self.models_status != 200:
            await _send_json(writer, self.models_status, {"error": {"message": "models unavailable"}})
            return
        data = [{"id": name, "object": "model", "owned_by": "scripted"} for name in self.models]
        await _send_json(writer, 200, {"object": "list", "data": data})

    async def _send_chat(
        self, request: ReceivedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        reply = self.replies.pop(0) if self.replies else self.responder(request)
        if reply.status != 200:
            body = reply.error_body.encode()
            writer.write(_head(reply.status, "application/json", len(body)) + body)
            await writer.drain()
            request.completed = True
            return
        # The client sends nothing after its request, so EOF on the socket means it hung up.
        hung_up = asyncio.ensure_future(reader.read(1))
        try:
            writer.write(_head(200, "text/event-stream", None))
            await writer.drain()
            interval = 1.0 / reply.tokens_per_s if reply.tokens_per_s else 0.0
            for index, token in enumerate(reply.tokens):
                delay = reply.first_token_delay_s if index == 0 else interval
                if await _hung_up_within(hung_up, delay):
                    request.client_disconnected = True
                    return
                writer.write(_sse(_chunk(token, None)))
                await writer.drain()
                request.tokens_sent += 1
                if reply.garbage is not None and index == reply.garbage_after:
                    writer.write(reply.garbage.encode() + b"\n\n")
                    await writer.drain()
            if reply.ending == "stall":
                await hung_up
                request.client_disconnected = True
                return
            if reply.ending == "close":
                return
            writer.write(_sse(_chunk("", reply.finish_reason)))
            if reply.ending == "done":
                writer.write(b"data: [DONE]\n\n")
            await writer.drain()
            request.completed = True
        except ConnectionError:
            request.client_disconnected = True
        finally:
            hung_up.cancel()


async def _hung_up_within(hung_up: asyncio.Future[bytes], delay_s: float) -> bool:
    """Sleeps `delay_s` unless the client leaves first; True if it left."""
    if delay_s > 0:
        await asyncio.wait({hung_up}, timeout=delay_s)
    else:
        await asyncio.sleep(0)
    return hung_up.done()


def _head(status: int, content_type: str, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Scripted'}", f"Content-Type: {content_type}"]
    if length is None:
        # No length and no chunking: the body ends when the connection closes, like a raw stream.
        lines.append("Connection: close")
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
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "model": "scripted-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


@contextlib.asynccontextmanager
async def serve_llm(*replies: Reply, **options: Any) -> AsyncIterator[ScriptedLlmServer]:
    """Shorthand: `async with serve_llm(Reply(["a"])) as server: ...`."""
    async with ScriptedLlmServer(replies, **options) as server:
        yield server
