"""`convers chat`: a streaming text conversation in the terminal."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid

import click

from convers.app import wiring
from convers.cli.context import settings_from
from convers.config import Settings
from convers.engine.session import SessionParts
from convers.registry import ProviderUnavailableError, UnknownProviderError
from convers.transports.terminal import TerminalTransport


@click.command()
@click.option("--llm", "llm_provider", help="LLM provider name (auto, openai, llama-cpp, ...).")
@click.option("--url", "base_url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1.")
@click.option("--model", help="Model name (openai) or GGUF path (llama-cpp).")
@click.option("--memory/--no-memory", default=None, help="Remember this conversation (default: settings).")
@click.pass_context
def chat(ctx: click.Context, llm_provider: str | None, base_url: str | None, model: str | None, memory: bool | None) -> None:
    """Talk to the agent by typing. Ctrl-C stops the reply, Ctrl-D or /quit leaves."""
    flags: dict[str, object] = {"llm.provider": llm_provider, "llm.base_url": base_url, "memory.enabled": memory}
    if model is not None:
        flags["llm.model_path" if (llm_provider or "") == "llama-cpp" else "llm.model"] = model
    settings = settings_from(ctx, **flags)
    try:
        asyncio.run(_chat(settings))
    except (UnknownProviderError, ProviderUnavailableError) as error:
        raise click.ClickException(str(error)) from None


async def _chat(settings: Settings) -> None:
    llm = wiring.build("llm", settings)
    transport = TerminalTransport(settings.agent.name)
    shared = wiring.SharedMemory(settings)
    await shared.aopen()
    memory = shared.for_session(llm, on_status=wiring.notice_sender(transport))
    for notice in shared.notices():
        await transport.send_event(notice.to_wire())
    session_id = uuid.uuid4().hex[:12]
    session = wiring.make_session(
        settings, transport, SessionParts(llm=llm, memory=memory, idle=shared.idle), session_id, finish_reply_on_input_end=True
    )
    loop = asyncio.get_running_loop()
    interrupting: set[asyncio.Task[None]] = set()  # held until done: the loop keeps only weak references

    def on_interrupt() -> None:
        # Ctrl-C stops the agent mid-reply; the conversation itself goes on.
        if session.current is not None and not session.current.settled:
            task = loop.create_task(session.interrupt())
            interrupting.add(task)
            task.add_done_callback(interrupting.discard)
        else:
            sys.stdout.write("\n(Ctrl-D or /quit to leave)\nyou> ")
            sys.stdout.flush()

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        await session.run()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if memory is not None:
            await memory.aclose()
        await shared.aclose()
