"""`convers talk`: a spoken conversation through this machine's microphone and speaker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import click

from convers.app import wiring
from convers.cli.context import settings_from
from convers.config import Settings
from convers.contracts.audio import AudioFrame
from convers.contracts.transport import InboundEvent, Transport
from convers.engine.session import SessionParts
from convers.registry import ProviderUnavailableError, UnknownProviderError


@click.command()
@click.option("--transport", "transport_name", help="Audio transport: local (sound card) or another installed one.")
@click.option("--input-device", help="Microphone name or index (local transport).")
@click.option("--output-device", help="Speaker name or index (local transport).")
@click.option("--memory/--no-memory", default=None, help="Remember this conversation (default: settings).")
@click.pass_context
def talk(
    ctx: click.Context,
    transport_name: str | None,
    input_device: str | None,
    output_device: str | None,
    memory: bool | None,
) -> None:
    """Talk to the agent out loud. Speak over it to interrupt; Ctrl-C leaves."""
    settings = settings_from(
        ctx,
        **{
            "transport.provider": transport_name,
            "transport.input_device": input_device,
            "transport.output_device": output_device,
            "memory.enabled": memory,
        },
    )
    try:
        asyncio.run(_talk(settings))
    except (UnknownProviderError, ProviderUnavailableError) as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        click.echo("\nbye")


class TranscriptPrinter:
    """Wraps a voice transport and prints both sides of the conversation as it happens."""

    def __init__(self, inner: Transport, agent_name: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.output_format = inner.output_format
        self.agent_name = agent_name
        self._open_turn: int | None = None

    def inbound(self) -> AsyncIterator[InboundEvent]:
        return self.inner.inbound()

    async def send_audio(self, turn: int, seq: int, frame: AudioFrame) -> None:
        await self.inner.send_audio(turn, seq, frame)

    async def send_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "transcript" and event.get("final"):
            self._end_line()
            click.echo(f"you: {event.get('text', '')}")
        elif kind == "reply" and event.get("delta"):
            if self._open_turn != event.get("turn"):
                self._end_line()
                self._open_turn = event.get("turn")
                click.echo(f"{self.agent_name}: ", nl=False)
            click.echo(str(event["delta"]), nl=False)
        elif kind in ("error", "notice"):
            self._end_line()
            click.echo(f"! {event.get('message')}", err=True)
        await self.inner.send_event(event)

    async def flush(self, turn: int) -> None:
        if self._open_turn == turn:
            click.echo(" [interrupted]", nl=False)
            self._end_line()
        await self.inner.flush(turn)

    async def pause(self, turn: int) -> None:
        await self.inner.pause(turn)

    async def resume(self, turn: int) -> None:
        await self.inner.resume(turn)

    async def close(self) -> None:
        self._end_line()
        await self.inner.close()

    def _end_line(self) -> None:
        if self._open_turn is not None:
            click.echo()
            self._open_turn = None


async def _talk(settings: Settings) -> None:
    llm = wiring.build("llm", settings)
    vad, stt, tts = wiring.build_voice(settings)
    transport = TranscriptPrinter(wiring.build("transport", settings), settings.agent.name)
    shared = wiring.SharedMemory(settings)
    session_id = uuid.uuid4().hex[:12]
    # Load the models before the microphone opens, so the first turn is heard and answered as fast as the next.
    click.echo("loading the models ...")
    await shared.aopen()
    memory = shared.for_session(llm, on_status=wiring.notice_sender(transport))
    turn_end = wiring.build_turn_end(settings)
    parts = SessionParts(llm=llm, tts=tts, stt=stt, vad=vad, memory=memory, turn_end=turn_end, idle=shared.idle)
    session = wiring.make_session(settings, transport, parts, session_id)
    await wiring.warm_up(llm, stt, tts, vad, shared.embedder, shared.store, turn_end)
    for notice in shared.notices():
        await transport.send_event(notice.to_wire())
    click.echo(f"listening (session {session_id}); speak, or Ctrl-C to leave")
    try:
        await session.run()
    finally:
        await transport.close()
        if memory is not None:
            await memory.aclose()
        await shared.aclose()
