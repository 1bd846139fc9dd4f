"""A text-only transport for `convers chat`: lines from stdin in, streamed reply text out."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any, TextIO

from convers.contracts.audio import AudioFormat, AudioFrame
from convers.contracts.transport import InboundEvent, InboundText

QUIT_COMMANDS = frozenset({"/quit", "/exit", "/bye"})


class TerminalTransport:
    """Reads typed lines and prints the agent's reply as it streams. Audio is not carried."""

    name = "terminal"
    output_format = AudioFormat(sample_rate=16000)

    def __init__(self, agent_name: str, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.agent_name = agent_name
        self._stdin = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._open_turn: int | None = None

    async def inbound(self) -> AsyncIterator[InboundEvent]:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        pipe_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), self._stdin
        )
        try:
            self._prompt()
            while True:
                raw = await reader.readline()
                if not raw:
                    self._write("\n")
                    return  # end of input (Ctrl-D)
                line = raw.decode("utf-8", errors="replace").strip()
                if line.lower() in QUIT_COMMANDS:
                    return
                if line:
                    yield InboundText(line)
                else:
                    self._prompt()
        finally:
            pipe_transport.close()

    async def send_audio(self, turn: int, seq: int, frame: AudioFrame) -> None:
        return None  # a terminal has no speaker; `convers talk` is the voice path

    async def send_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "reply" and event.get("delta"):
            if self._open_turn != event["turn"]:
                self._end_line()
                self._open_turn = event["turn"]
                self._write(f"{self.agent_name}> ")
            self._write(str(event["delta"]))
        elif kind == "state" and event.get("state") == "listening":
            self._end_line()
            self._prompt()
        elif kind in ("error", "notice"):
            self._end_line()
            self._write(f"! {event.get('message')}\n")

    async def flush(self, turn: int) -> None:
        if self._open_turn == turn:
            self._write(" [interrupted]")
            self._end_line()

    async def pause(self, turn: int) -> None:
        return None

    async def resume(self, turn: int) -> None:
        return None

    async def close(self) -> None:
        self._end_line()

    def _end_line(self) -> None:
        if self._open_turn is not None:
            self._write("\n")
            self._open_turn = None

    def _prompt(self) -> None:
        self._write("you> ")

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()
