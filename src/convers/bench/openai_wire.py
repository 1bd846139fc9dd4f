"""Just enough HTTP/1.1 and SSE to serve the OpenAI chat API from asyncio streams.

The reference LLM (bench) and the scripted LLM (tests) are both real peers for httpx: they read
requests off a socket and write `application/json` bodies or `text/event-stream` chunks. This
module holds the wire plumbing they share, so each server keeps only what it answers and when:

- `read_request` parses one request (line, headers, body) off the connection;
- `send_json` / `send_body` write a whole response with a Content-Length;
- `SseStream` writes a streaming completion (`data:` chunks, then `data: [DONE]`) and notices a
  client that hangs up between tokens;
- `WireServer` listens, runs one task per connection, and starts and stops in the caller's event
  loop or on a thread of its own; subclasses implement `answer` for each parsed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Self

DONE_LINE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class HttpRequest:
    """One request as read off the wire: method, full path, lower-cased headers, raw body."""

    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes

    @property
    def route(self) -> str:
        """The path without query string or trailing slash, for matching endpoints."""
        return self.path.split("?", 1)[0].rstrip("/")

    def is_models(self) -> bool:
        return self.method == "GET" and self.route.endswith("/models")

    def is_chat(self) -> bool:
        return self.method == "POST" and self.route.endswith("/chat/completions")


class BadRequestLine(ValueError):
    """The first line of a request is not `METHOD PATH VERSION`."""


async def read_request(reader: asyncio.StreamReader) -> HttpRequest:
    """Reads one request; raises BadRequestLine, or asyncio's read errors when the client leaves."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, path, _version = lines[0].split(" ", 2)
    except ValueError:
        raise BadRequestLine(f"bad request line {lines[0]!r}") from None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    raw = await reader.readexactly(int(headers.get("content-length", "0") or 0))
    return HttpRequest(method, path, headers, raw)


def response_head(status: int, content_type: str, length: int | None) -> bytes:
    """Status line and headers; `length=None` for a stream that ends when the connection closes."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}"]
    if length is None:
        # No length and no chunking: the body ends when the connection closes, like a raw stream.
        lines += ["Cache-Control: no-cache", "Connection: close"]
    else:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def send_body(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str = "application/json") -> None:
    writer.write(response_head(status, content_type, len(body)) + body)
    await writer.drain()


async def send_json(writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
    await send_body(writer, status, json.dumps(payload).encode())


async def send_error(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    """An error in OpenAI's shape, so clients show `message` to the user."""
    await send_json(writer, status, {"error": {"message": message}})


async def send_models(writer: asyncio.StreamWriter, names: list[str], owned_by: str) -> None:
    data = [{"id": name, "object": "model", "owned_by": owned_by} for name in names]
    await send_json(writer, 200, {"object": "list", "data": data})


def completion_chunk(token: str, finish_reason: str | None, *, completion_id: str, model: str) -> dict[str, Any]:
    """One `chat.completion.chunk`; an empty token sends an empty delta (the finish chunk)."""
    delta = {"content": token} if token else {}
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


class SseStream:
    """A streaming chat completion on one connection, watching for the client to hang up.

    Call `start` (writes the head), then `send` per token and `finish`; always `close` in a
    `finally`. Writes raise ConnectionError when the client is gone; callers record that.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, completion_id: str, model: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._completion_id = completion_id
        self._model = model
        self._hung_up: asyncio.Future[bytes] | None = None

    async def start(self) -> None:
        # The client sends nothing after its request, so a read that ends means it hung up.
        self._hung_up = asyncio.ensure_future(self._reader.read(1))
        await self.write(response_head(200, "text/event-stream", None))

    async def hung_up_within(self, delay_s: float) -> bool:
        """Waits `delay_s` unless the client leaves first; True if it left."""
        assert self._hung_up is not None, "SseStream.start() first"
        if delay_s > 0:
            await asyncio.wait({self._hung_up}, timeout=delay_s)
        else:
            await asyncio.sleep(0)  # still yield, so a zero delay cannot starve the loop
        return self._hung_up.done()

    async def wait_for_hang_up(self) -> None:
        assert self._hung_up is not None, "SseStream.start() first"
        await self._hung_up

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def send(self, token: str) -> None:
        await self.write(self._chunk(token, None))

    async def finish(self, finish_reason: str | None, *, done: bool = True) -> None:
        """The finish_reason chunk, then `data: [DONE]` unless `done` is False."""
        await self.write(self._chunk("", finish_reason) + (DONE_LINE if done else b""))

    def close(self) -> None:
        if self._hung_up is not None:
            self._hung_up.cancel()

    def _chunk(self, token: str, finish_reason: str | None) -> bytes:
        return sse_event(completion_chunk(token, finish_reason, completion_id=self._completion_id, model=self._model))


class WireServer:
    """An asyncio HTTP/1.1 server on `host:port` (port 0: any free port) for OpenAI-style endpoints.

    Subclasses implement `answer`, which writes the response to one parsed request and says whether
    the connection may carry another (False after a stream, which ends by closing).
    """

    label = "LLM server"  # names the server in errors and its thread

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def answer(
        self, request: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        raise NotImplementedError

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"{self.label} is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """Root URL without /v1, as a user would put it in llm.base_url."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._handle, self.host, self._port)
        # Kept after stop() so tests can still name the address in assertions.
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

    async def __aenter__(self) -> Self:
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
    def running_in_thread(self) -> Iterator[Self]:
        """Runs on its own event loop in a daemon thread: for synchronous callers, and so that the
        loop under test never delays a token."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[OSError] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except OSError as error:  # a busy port, most often: reported to the caller below
                failure.append(error)
                return
            finally:
                ready.set()  # whatever happened, so the caller never waits the full 10 s for nothing
            loop.run_forever()

        thread = threading.Thread(target=run, name=self.label.lower().replace(" ", "-"), daemon=True)
        thread.start()
        if not ready.wait(10) or failure or self._server is None:
            raise RuntimeError(f"{self.label} did not start on {self.host}:{self._port}: {failure[:1]}")
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    # ----------------------------------------------------------------- connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                try:
                    request = await read_request(reader)
                except BadRequestLine as error:
                    await send_error(writer, 400, str(error))
                    break
                if not await self.answer(request, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client left, or sent a head too large to be a chat request
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
