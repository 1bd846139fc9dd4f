"""Builds concrete providers and sessions from settings: the one place that knows them all."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from convers import registry
from convers.app.shared_memory import SharedMemory, memory_notice
from convers.config import Settings
from convers.contracts.memory import MemoryStatus
from convers.contracts.transport import Transport
from convers.contracts.vad import SharedModelVad, Vad
from convers.engine.reply.prompt import PromptBuilder
from convers.engine.session import Session, SessionOptions, SessionParts
from convers.events import EventLog
from convers.native_memory import release_free_memory

log = logging.getLogger(__name__)


def provider_name(kind: str, settings: Settings) -> str:
    """The provider of `kind` that settings select, with `auto` resolved to one usable here."""
    return registry.provider_name(kind, settings)


def build(kind: str, settings: Settings, name: str | None = None) -> Any:
    """The provider of `kind` named in settings (or `name`), constructed from settings."""
    return registry.create(kind, name or provider_name(kind, settings), settings)


def build_memory(settings: Settings, llm: Any) -> Any:
    """A conversation memory with a store of its own, or None (with a warning) when memory cannot be opened.

    For one-off runs (the latency benchmark); servers and the CLI share one SharedMemory instead.
    Memory is optional to a conversation: a locked or corrupt database is reported, never fatal.
    """
    if not settings.memory.enabled:
        return None
    shared = SharedMemory(settings)
    shared.open()
    return shared.for_session(llm, close_store=True)


def build_turn_end(settings: Settings) -> Any:
    """The end-of-turn model, or None (the silence rule) with a warning when it cannot start.

    Optional like memory: a missing or corrupt model file never stops the conversation.
    """
    try:
        return build("turn_end", settings)
    except (registry.ProviderUnavailableError, ValueError) as error:
        log.warning("end-of-turn model is off, turns end by silence alone: %s", error)
        return None


def build_tools(settings: Settings, memory: Any) -> Any:
    """The session's Toolbox from `tools.enabled` (or the defaults); a tool that cannot run is left out.

    Tools are built per session: `recall` searches this session's memory. Each tool's
    `from_settings(settings, memory=...)` may raise to say it cannot run here (no SearXNG URL set).
    """
    from convers.engine.reply.tool_calls import Toolbox

    tools = []
    for name in settings.tools.names():
        try:
            tools.append(registry.create("tools", name, settings, memory=memory))
        except Exception as error:  # noqa: BLE001 - an optional tool never takes the conversation down
            log.warning("tool %s is off: %s", name, error)
    return Toolbox(tools, settings.tool_timing, settings.tools.max_result_chars)


def build_voice(settings: Settings) -> tuple[Any, Any, Any]:
    """VAD, STT and TTS from settings."""
    return build("vad", settings), build("stt", settings), build("tts", settings)


def session_vad(shared: Vad, settings: Settings) -> Vad:
    """A VAD for one more audio stream: its own state on the shared model when the provider can do
    that (SharedModelVad), else a new instance (the ones that cannot are cheap to build)."""
    if isinstance(shared, SharedModelVad):
        return shared.new_stream()
    return build("vad", settings)


def notice_sender(transport: Transport) -> Callable[[MemoryStatus], Awaitable[None]]:
    """Sends a memory status change to the client as a notice (the session's page shows it)."""

    async def send(status: MemoryStatus) -> None:
        await transport.send_event(memory_notice(status).to_wire())

    return send


class ServerSessions:
    """What `convers serve` runs for each connected client.

    One set of heavy providers per server process, shared by every connection: the LLM client, STT,
    TTS, the VAD model, the embedder and the memory store (each is safe to use from several sessions:
    the store and the models lock or are thread-safe). A connection gets only its own state: a VAD
    stream, a CompanionMemory view, the session itself.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # `auto` resolved once: the connections share this provider, and the page's notice asks about it.
        self.llm_name = provider_name("llm", settings)
        self.llm = build("llm", settings, self.llm_name)
        self.stt = build("stt", settings)
        self.tts = build("tts", settings)
        # Built here so a VAD that cannot run fails at start; sessions get their own stream of it.
        self.vad = build("vad", settings)
        self.memory = SharedMemory(settings)
        self.turn_end = build_turn_end(settings)

    async def warm_up(self) -> dict[str, float]:
        """Opens the memory (in a worker thread) and loads and exercises the shared models; the server
        awaits it before it accepts a connection.

        Warming up on the first connection instead made its session start listening seconds late
        (Whisper and Piper take 3-4 s to load here), and the microphone audio that queued up
        meanwhile then arrived as one burst, too fast to be heard as speech: the first question
        was lost.
        """
        await self.memory.aopen()
        return await warm_up(self.llm, self.stt, self.tts, self.vad, self.memory.embedder, self.memory.store, self.turn_end)

    def notices(self) -> list[dict[str, Any]]:
        """What the page of a new connection is told about memory (nothing while it works)."""
        return [notice.to_wire() for notice in self.memory.notices()]

    async def __call__(self, transport: Transport) -> None:
        settings = self.settings
        await self.memory.aopen()  # at once when the server's warm-up opened it
        memory = self.memory.for_session(self.llm, on_status=notice_sender(transport))
        parts = SessionParts(llm=self.llm, tts=self.tts, stt=self.stt, vad=session_vad(self.vad, settings),
                             memory=memory, turn_end=self.turn_end, idle=self.memory.idle)
        # Persona overlays the page asked for in its hello (transports without one have none).
        overlays = tuple(getattr(transport, "overlays", ()))
        session = make_session(settings, transport, parts, session_id=uuid.uuid4().hex[:12], overlays=overlays)
        try:
            await session.run()
        finally:
            if memory is not None:
                await memory.aclose()
            del session, memory, parts  # freed now (no cycles hold them), before the heap is trimmed
            await asyncio.to_thread(release_free_memory)

    async def aclose(self) -> None:
        """Closes what the sessions shared (the memory store); after the last session ended."""
        await self.memory.aclose()


def session_options(settings: Settings, greet: bool = True, finish_reply_on_input_end: bool = False) -> SessionOptions:
    return SessionOptions(
        agent_name=settings.agent.name,
        max_tokens=settings.llm.max_tokens,
        temperature=settings.llm.temperature,
        greet=greet,
        finish_reply_on_input_end=finish_reply_on_input_end,
        turns=settings.turns,
        barge_in=settings.barge_in,
        speculation=settings.speculation,
        live_transcription=settings.stt.streaming,
        read_ahead=settings.llm.read_ahead,
    )


def event_log(settings: Settings, session_id: str) -> EventLog:
    path: Path | None = None
    if settings.events.enabled:
        path = settings.data_path / "events" / f"{session_id}.jsonl"
    return EventLog(path)


def make_session(
    settings: Settings,
    transport: Transport,
    parts: SessionParts,
    session_id: str,
    greet: bool = True,
    finish_reply_on_input_end: bool = False,
    overlays: tuple[str, ...] = (),
) -> Session:
    """A Session from settings; `overlays` are persona overlays this connection asked for (the page's hello)."""
    if parts.tools is None:
        parts = replace(parts, tools=build_tools(settings, parts.memory))
    if settings.recorder.enabled and parts.recorder is None:
        from convers.recordings import TurnRecorder

        parts = replace(parts, recorder=TurnRecorder.in_data_dir(settings.data_path, session_id))
    prompt = PromptBuilder(persona=session_persona(settings, overlays, tools=parts.tools), rolling_chars=settings.memory.rolling_chars)
    return Session(
        transport,
        parts,
        prompt,
        event_log(settings, session_id),
        options=session_options(settings, greet=greet, finish_reply_on_input_end=finish_reply_on_input_end),
        session_id=session_id,
    )


def session_persona(settings: Settings, overlays: tuple[str, ...] = (), tools: Any = None) -> str:
    """The composed persona (engine/reply/persona.py): core, settings' overlays, the connection's, the journal.

    An overlay in settings that is missing is an error (the user's own setting); one a connection
    asks for that does not exist is left out with a warning, so a stale bookmark still connects.
    """
    from convers.engine.reply.persona import compose_persona, overlay_path
    from convers.engine.reply.prompt import PersonaError
    from convers.engine.reply.tool_calls import TOOL_RESULTS_NOTE

    chosen = list(settings.agent.overlays)
    for name in overlays:
        try:
            overlay_path(settings.data_path, name)
        except PersonaError as error:
            log.warning("persona overlay left out: %s", error)
            continue
        chosen.append(name)
    persona = compose_persona(
        settings.agent.persona_file, settings.agent.name, settings.data_path, chosen, journal=settings.memory.reflection
    )
    return f"{persona}\n\n{TOOL_RESULTS_NOTE}" if tools else persona


async def warm_up(*providers: Any) -> dict[str, float]:
    """Loads and exercises each provider once so the first turn is as fast as the tenth.

    A provider's own `async def warm_up()` runs first when it has one (model loading); then STT,
    TTS, VAD, embedder and memory (a conversation memory or a store) do one small real call each, which also pays for lazy
    allocations a load alone leaves for the first use. Returns seconds per provider; a failure
    is logged and skipped: a cold provider is slower, not broken.
    """
    import inspect
    import time

    from convers.contracts.audio import AudioFrame

    spent: dict[str, float] = {}
    for provider in providers:
        if provider is None:
            continue
        name = str(getattr(provider, "name", type(provider).__name__))
        started = time.perf_counter()
        try:
            if hasattr(provider, "warm_up"):
                # Model loading; a provider whose warm_up blocks (the memory store's) runs in a thread.
                if inspect.iscoroutinefunction(provider.warm_up):
                    await provider.warm_up()
                else:
                    await asyncio.to_thread(provider.warm_up)
            if hasattr(provider, "transcribe"):
                await provider.transcribe(AudioFrame(b"\x00\x00" * (provider.sample_rate // 2), provider.sample_rate))
            elif hasattr(provider, "synthesize"):
                async for _frame in provider.synthesize("Hello."):
                    pass
            elif hasattr(provider, "done_probability"):
                await provider.done_probability(AudioFrame(b"\x00\x00" * 16000, 16000))
            elif hasattr(provider, "speech_probability"):
                await asyncio.to_thread(provider.speech_probability, b"\x00\x00" * provider.frame_samples)
                provider.reset()
            elif hasattr(provider, "embed"):
                await provider.embed(["warming up"])
            elif hasattr(provider, "recall"):
                await provider.recall("warming up")
            elif hasattr(provider, "search"):
                # A memory store: loads its stored vectors now rather than at the first recall.
                await asyncio.to_thread(provider.search, "warming up", 1)
            elif hasattr(provider, "stream"):
                # One token: loads an in-process model, finds the server's model name, opens the
                # connection path; a llama-server also caches the prompt prefix it saw.
                from contextlib import aclosing

                from convers.contracts.llm import ChatMessage

                async with aclosing(provider.stream([ChatMessage("user", "Hello")], max_tokens=1)) as stream:
                    async for _delta in stream:
                        pass
        except Exception as error:  # a cold provider is slower, not broken
            log.warning("warm-up of %s failed: %s", name, error)
        spent[name] = time.perf_counter() - started
    return spent
