"""The Transport contract over one browser WebSocket (wire format in docs/protocol.md)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketState

from convers.contracts.audio import AudioFormat, AudioFrame
from convers.contracts.echo import EchoCanceller
from convers.contracts.events import FlushMessage, PauseMessage, ResumeMessage
from convers.contracts.transport import InboundAudio, InboundEvent, InboundPlayed
from convers.echo_cancelling import EchoCancelling
from convers.transports.browser.echo_rooms import EchoRooms
from convers.transports.browser.error_replies import ErrorReplies
from convers.transports.browser.outbound import SendQueue
from convers.transports.browser.protocol import (
    Hello,
    ProtocolError,
    encode_audio,
    parse_audio,
    parse_text,
    ready_event,
)
from convers.transports.echo_side import EchoSide
from convers.transports.played_audio import PlayedAudio

log = logging.getLogger(__name__)

# Close codes the page understands (4000-4999 are the application's own).
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
CLOSE_CLIENT_STALLED = 4408
CLOSE_NO_HELLO = 4400


class WebSocketTransport(EchoSide):
    """One connected page. Inbound messages become InboundEvents; outbound ones go through a bounded queue.

    `send_*`, `flush`, `pause` and `resume` only enqueue, so the engine never waits on the network.
    Malformed inbound messages are answered with an `error` event and otherwise ignored.
    A client whose hello says `"aec": false` has its microphone cleaned of the agent's echo here,
    when `echo_canceller` is given: with the second channel of its audio messages as the reference
    (`"echo_reference": true`), else with what its `played` reports say it played (`PlayedAudio`).
    With `echo_rooms`, a hello's `echo_room` takes the canceller that page's last connection learnt,
    and the canceller goes back there when this connection stops using it.
    """

    name = "browser"

    def __init__(
        self,
        websocket: WebSocket,
        output_sample_rate: int,
        queue: SendQueue | None = None,
        echo_canceller: Callable[[], EchoCanceller] | None = None,
        echo_rooms: EchoRooms | None = None,
    ) -> None:
        self.websocket = websocket
        self.output_format = AudioFormat(sample_rate=output_sample_rate)
        self.input_sample_rate: int | None = None
        # Persona overlays the first hello asked for; the session is built with them (app/wiring.py).
        self.overlays: tuple[str, ...] = ()
        self.queue = queue or SendQueue()
        self.protocol_errors = 0
        self._early: list[InboundEvent] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._disconnected = False
        # Turns flushed so far: their late frames are dropped here, not sent.
        self._flushed_through = 0
        self._errors = ErrorReplies()
        self._error_summary: asyncio.TimerHandle | None = None
        self._make_canceller = echo_canceller
        self.echo: EchoCancelling | None = None
        self._echo_rooms = echo_rooms
        # The page's id under which `echo` goes back to `echo_rooms` (the latest hello's).
        self._echo_room: str | None = None
        self._played_audio: PlayedAudio | None = None
        # Reference samples owed to the canceller: a microphone frame rarely lasts whole samples at 16 kHz.
        self._owed_samples = 0.0
        # The client sends what it played as a second channel of its microphone messages.
        self._reference_channel = False

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        """Starts the task that drains the send queue into the socket."""
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="ws-writer")

    async def handshake(self, timeout_s: float) -> bool:
        """Waits for the client's hello and answers `ready`; False if it never comes or the client left.

        Text and played messages that arrive first are kept for `inbound()`; bad ones get an error.
        """
        try:
            async with asyncio.timeout(timeout_s):
                while self.input_sample_rate is None:
                    parsed = await self._receive()
                    if parsed is _GONE:
                        return False
                    if isinstance(parsed, (Hello, ProtocolError)) or parsed is None:
                        self._handle_control(parsed)
                    else:
                        self._early.append(parsed)
        except TimeoutError:
            return False
        return True

    async def inbound(self) -> AsyncIterator[InboundEvent]:
        early, self._early = self._early, []
        try:
            for event in early:
                yield event
            while not self._closed:
                parsed = await self._receive()
                if parsed is _GONE:
                    return
                if isinstance(parsed, (Hello, ProtocolError)) or parsed is None:
                    self._handle_control(parsed)
                elif self.echo is not None or self._reference_channel:
                    cleaned = self._without_echo(parsed)
                    if cleaned is not None:
                        yield cleaned
                else:
                    yield parsed
        finally:
            # The microphone stopped here: the canceller is free for the page's next connection now,
            # not once the session has finished storing its turns (which may outlast a quick reconnect).
            self._release_echo()

    def _without_echo(self, event: InboundEvent) -> InboundEvent | None:
        """A microphone frame cleaned of the agent's echo (None while a block is incomplete); a played
        report also moves the reference's playhead."""
        if isinstance(event, InboundPlayed) and self._played_audio is not None:
            self._played_audio.report(event.turn, event.ms)
            return event
        if not isinstance(event, InboundAudio):
            return event
        frame = event.frame
        if self._reference_channel:
            # Interleaved (microphone, played): the reference is exact, sample for sample.
            samples = np.frombuffer(frame.pcm, dtype="<i2")
            samples = samples[: len(samples) // 2 * 2]
            microphone = AudioFrame(samples[0::2].tobytes(), frame.sample_rate)
            if self.echo is None:  # asked for, but no canceller here: the microphone alone
                return InboundAudio(microphone)
            self.echo.played(AudioFrame(samples[1::2].tobytes(), frame.sample_rate))
            cleaned = self.echo.cleaned(microphone)
            return InboundAudio(cleaned) if cleaned.pcm else None
        assert self.echo is not None and self._played_audio is not None
        self._owed_samples += frame.samples * self._played_audio.rate / frame.sample_rate
        whole = int(self._owed_samples)
        self._owed_samples -= whole
        self.echo.played(self._played_audio.next(whole))
        cleaned = self.echo.cleaned(frame)
        return InboundAudio(cleaned) if cleaned.pcm else None

    async def _receive(self) -> Any:
        # A buffered socket answers receive() without suspending: a flood of messages was handled
        # without ever letting the writer run, and its answers piled up until the 4408 close.
        await asyncio.sleep(0)
        if self._disconnected:
            return _GONE
        try:
            message = await self.websocket.receive()
        except Exception:  # the socket went away underneath us
            self._disconnected = True
            return _GONE
        if message["type"] == "websocket.disconnect":
            self._disconnected = True
            return _GONE
        try:
            data = message.get("bytes")
            if data is not None:
                return parse_audio(data, self.input_sample_rate)
            text = message.get("text")
            if text is not None:
                return parse_text(text)
        except Exception:  # a parser bug costs the client one message, never the session
            log.exception("browser message could not be parsed")
            return ProtocolError("bad_message", "the server could not read this message; it was dropped")
        return None

    def _handle_control(self, parsed: Hello | ProtocolError | None) -> None:
        if isinstance(parsed, Hello):
            # A repeated hello may change the rate (a new AudioContext after a device switch).
            if self.input_sample_rate is None:
                self.overlays = parsed.overlays  # a later hello only changes the rate: the session is built
            self.input_sample_rate = parsed.sample_rate
            aec, room = self._set_echo(parsed.aec, parsed.echo_reference, parsed.echo_room)
            # Two channels come whatever the answer: the page sends them once it asked.
            self._reference_channel = parsed.echo_reference
            self._enqueue_event(ready_event(self.output_format.sample_rate, aec, room))
        elif isinstance(parsed, ProtocolError):
            self.protocol_errors += 1
            if self.protocol_errors <= self._errors.burst:
                log.info("browser client sent a bad message: %s", parsed.message)
            loop = asyncio.get_running_loop()
            for event in self._errors.offer(parsed, loop.time()):
                self._enqueue_event(event)
            if self._errors.held_back and self._error_summary is None:
                self._error_summary = loop.call_later(self._errors.wait_s(), self._send_error_summary)

    def _set_echo(self, client_cancels: bool, sends_reference: bool, room: str | None) -> tuple[str | None, str | None]:
        """Echo cancellation here for a client that does none; what `ready` tells it in `aec` and
        `echo_room` (None: nothing). A canceller runs on: "kept" unless one was made for this hello.
        The sent audio is kept and played out by the reports only for a client that sends no reference."""
        if client_cancels:
            self._release_echo()
            return None, None
        kept = "kept"
        if self.echo is None:
            if self._make_canceller is None:
                return "unavailable", None
            self.echo = self._echo_rooms.take(room) if self._echo_rooms is not None and room is not None else None
            if self.echo is None:
                kept = "new"
                try:
                    self.echo = EchoCancelling(self._make_canceller())
                except Exception as error:  # noqa: BLE001 - optional: the conversation goes on without it
                    log.warning("echo cancellation for a browser client could not start: %s", error)
                    return "unavailable", None
        self._echo_room = room
        if sends_reference:
            self._played_audio = None
        elif self._played_audio is None:
            self._played_audio = PlayedAudio(self.echo.rate)
        return "server", kept if room is not None and self._echo_rooms is not None else None

    def _release_echo(self) -> None:
        """This connection no longer cancels echo (it ended, or its page now cancels its own): the
        canceller goes back to `echo_rooms` under the page's id, if it has one."""
        echo, self.echo, self._played_audio = self.echo, None, None
        if echo is not None and self._echo_room is not None and self._echo_rooms is not None:
            self._echo_rooms.keep(self._echo_room, echo)

    def _send_error_summary(self) -> None:
        """The count of held-back errors goes out even if no further bad message comes."""
        self._error_summary = None
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        event = self._errors.summary(loop.time())
        if event is not None:
            self._enqueue_event(event)
        elif self._errors.held_back:
            self._error_summary = loop.call_later(self._errors.wait_s(), self._send_error_summary)

    # ----------------------------------------------------------------- outbound (never blocks)

    async def send_audio(self, turn: int, seq: int, frame: AudioFrame) -> None:
        if self._closed:
            return
        if frame.sample_rate != self.output_format.sample_rate:
            raise ValueError(
                f"audio frame at {frame.sample_rate} Hz sent to a browser transport declared at "
                f"{self.output_format.sample_rate} Hz: resample to output_format first"
            )
        if turn <= self._flushed_through:
            return  # a late frame of a flushed turn: the page would drop it, so do not send it
        if self._played_audio is not None:
            self._played_audio.sent(turn, frame)
        if not self.queue.put_audio(turn, encode_audio(turn, seq, frame.pcm)):
            if self.queue.dropped_audio_frames == 1:
                log.warning("browser client is not keeping up: dropping audio frames (turn %d)", turn)

    async def send_event(self, event: dict[str, Any]) -> None:
        self._enqueue_event(event)

    async def flush(self, turn: int) -> None:
        self._flushed_through = max(self._flushed_through, turn)
        self.queue.drop_turns_up_to(turn)
        if self._played_audio is not None:
            self._played_audio.flushed(turn)
        self._enqueue_event(FlushMessage(turn).to_wire())

    async def pause(self, turn: int) -> None:
        if self._played_audio is not None:
            self._played_audio.paused(turn)
        self._enqueue_event(PauseMessage(turn).to_wire())

    async def resume(self, turn: int) -> None:
        if self._played_audio is not None:
            self._played_audio.resumed(turn)
        self._enqueue_event(ResumeMessage(turn).to_wire())

    def _enqueue_event(self, event: dict[str, Any]) -> None:
        if self._closed:
            return
        if not self.queue.put_event(json.dumps(event, separators=(",", ":"), default=str)):
            log.warning("browser client stopped reading (%d messages unsent): closing it", len(self.queue))
            asyncio.get_running_loop().create_task(self.close(CLOSE_CLIENT_STALLED, "client stopped reading"))

    async def _write_loop(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                if isinstance(item.data, bytes):
                    await self.websocket.send_bytes(item.data)
                else:
                    await self.websocket.send_text(item.data)
            except Exception as error:  # the client went away; sends after this are dropped
                log.debug("browser send failed: %r", error)
                self._closed = True
                return

    async def drain(self, timeout_s: float = 1.0) -> None:
        """Gives queued messages up to `timeout_s` to go out (a last error before closing)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(self.queue) and not self._closed and loop.time() < deadline:
            await asyncio.sleep(0.01)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed and self._writer is None:
            return
        self._closed = True
        self._release_echo()
        if self._error_summary is not None:
            self._error_summary.cancel()
            self._error_summary = None
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        if self.websocket.application_state == WebSocketState.CONNECTED and not self._disconnected:
            try:
                await self.websocket.close(code, reason)
            except Exception:  # already gone
                pass


_GONE = object()
