"""Helpers for browser-transport tests: a real uvicorn server over TLS and an echoing session double."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from convers.contracts.audio import AudioFrame
from convers.contracts.transport import InboundAudio, InboundEvent, InboundPlayed, InboundText, Transport
from convers.transports.browser.app import BrowserAppConfig, create_app
from convers.transports.browser.server import uvicorn_config
from convers.transports.browser.tls import ensure_certificate

TOKEN = "test-token-0123456789abcdefghijklmnopqrstuv"


@dataclass
class Seen:
    """One inbound event a session received, when, and over which connection."""

    connection: int
    event: InboundEvent
    at: float


@dataclass
class EchoSession:
    """A stand-in for the engine: answers typed text with `reply` deltas and a tone, audio with transcripts.

    Typed text "/flush" flushes the last turn, "/late" then sends more frames of that flushed turn.
    The test can also drive a connection directly through `transports`.
    """

    output_rate: int = 24000
    reply_audio_s: float = 0.6
    frame_ms: int = 20
    seen: list[Seen] = field(default_factory=list)
    transports: list[Transport] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    last_turn: dict[int, int] = field(default_factory=dict)
    _changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _note(self) -> None:
        async with self._condition():
            self._condition().notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        """Waits until `predicate()` is truthy (re-checked on every inbound event) and returns it."""
        async with asyncio.timeout(timeout_s):
            async with self._condition():
                while not (result := predicate()):
                    try:
                        await asyncio.wait_for(self._condition().wait(), 0.2)
                    except TimeoutError:
                        pass
                return result

    def events(self, kind: type, connection: int | None = None) -> list[Any]:
        return [s.event for s in self.seen if isinstance(s.event, kind) and (connection is None or s.connection == connection)]

    def played(self, turn: int, since: float = 0.0) -> list[int]:
        return [s.event.ms for s in self.seen if isinstance(s.event, InboundPlayed) and s.event.turn == turn and s.at >= since]

    async def __call__(self, transport: Transport) -> None:
        connection = len(self.transports)
        self.transports.append(transport)
        await transport.send_event({"type": "state", "state": "listening"})
        audio_frames = 0
        loop = asyncio.get_running_loop()
        try:
            async for event in transport.inbound():
                self.seen.append(Seen(connection, event, loop.time()))
                if isinstance(event, InboundText):
                    await self._on_text(transport, connection, event.text)
                elif isinstance(event, InboundAudio):
                    audio_frames += 1
                    if audio_frames % 25 == 0:
                        heard_ms = round(audio_frames * event.frame.duration_s * 1000)
                        await transport.send_event({"type": "transcript", "text": f"heard {heard_ms} ms", "final": False})
                await self._note()
        finally:
            self.finished.append(connection)
            await self._note()

    async def _on_text(self, transport: Transport, connection: int, text: str) -> None:
        turn = self.last_turn.get(connection, 0)
        if text == "/flush":
            await transport.flush(turn)
            return
        if text == "/late":
            await self.speak(transport, turn, 0.5)
            return
        turn += 1
        self.last_turn[connection] = turn
        await transport.send_event({"type": "transcript", "text": text, "final": True})
        await transport.send_event({"type": "state", "state": "thinking"})
        for word in f"You said: {text}".split(" "):
            await transport.send_event({"type": "reply", "turn": turn, "delta": word + " "})
        await transport.send_event({"type": "state", "state": "speaking"})
        await self.speak(transport, turn, self.reply_audio_s)

    async def speak(self, transport: Transport, turn: int, seconds: float, start_seq: int = 0) -> None:
        """Sends `seconds` of a 330 Hz tone for `turn` in `frame_ms` frames, all at once."""
        per_frame = self.output_rate * self.frame_ms // 1000
        frames = max(1, round(seconds * 1000 / self.frame_ms))
        for index in range(frames):
            samples = [
                int(6000 * math.sin(2 * math.pi * 330 * (index * per_frame + i) / self.output_rate))
                for i in range(per_frame)
            ]
            pcm = struct.pack(f"<{per_frame}h", *samples)
            await transport.send_audio(turn, start_seq + index, AudioFrame(pcm, self.output_rate))


@dataclass
class RunningServer:
    """A live server on 127.0.0.1: its port and an SSL context that trusts its certificate."""

    port: int
    ssl_context: ssl.SSLContext
    cert_path: Path

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/ws"

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def running_server(
    run_session: Callable[[Transport], Any],
    tls_dir: Path,
    token: str | None = TOKEN,
    memory_store: Any | None = None,
    log_level: str = "warning",
    memory: Any | None = None,
    ping_s: float | None = None,
    **config: Any,
) -> AsyncIterator[RunningServer]:
    """Serves the app over TLS on a free port of 127.0.0.1 in this event loop until the block ends."""
    paths = ensure_certificate(tls_dir)
    app = create_app(run_session, BrowserAppConfig(token=token, **config), memory_store=memory_store, memory=memory)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    pings = {} if ping_s is None else {"ping_interval_s": ping_s, "ping_timeout_s": ping_s}  # shorter keepalive
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, paths, log_level, **pings))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        # Generous: the server warms every model up before it starts (Whisper, Piper, smart-turn: a few
        # seconds alone, several times that on 2 cores shared with Chromium and other tests).
        async with asyncio.timeout(60):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        context = ssl.create_default_context(cafile=str(paths.cert))
        yield RunningServer(port, context, paths.cert)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def hello(rate: int = 16000) -> str:
    return json.dumps({"type": "hello", "sample_rate": rate, "format": "pcm16"})
