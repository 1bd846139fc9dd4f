"""`convers talk`: a spoken conversation through this machine's microphone and speaker."""

from __future__ import annotations

import asyncio
import uuid

import click

from convers.cli import wiring
from convers.cli.context import settings_from
from convers.config import Settings
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


async def _talk(settings: Settings) -> None:
    llm = wiring.build("llm", settings)
    vad, stt, tts = wiring.build_voice(settings)
    transport = wiring.build("transport", settings)
    memory = wiring.build_memory(settings, llm) if settings.memory.enabled else None
    session_id = uuid.uuid4().hex[:12]
    parts = SessionParts(llm=llm, tts=tts, stt=stt, vad=vad, memory=memory)
    session = wiring.make_session(settings, transport, parts, session_id)
    click.echo(f"listening (session {session_id}); speak, or Ctrl-C to leave")
    try:
        await session.run()
    finally:
        await transport.close()
        if memory is not None:
            await memory.aclose()
