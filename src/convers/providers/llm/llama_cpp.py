"""llama.cpp in process (llama-cpp-python) for a GGUF file: no server to start."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convers.contracts.llm import ChatMessage, LlmError
from convers.contracts.provider import RANK_USER_MODEL, AutoChoice, Availability
from convers.downloads import default_gguf_path

if TYPE_CHECKING:
    from convers.config import Settings

INSTALL_HINT = (
    "llama-cpp-python is not installed: pip install 'convers[llama]' (it compiles llama.cpp, "
    "about 12 minutes on 2 cores; for a portable CPU build set "
    "CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON\" first, as scripts/install.sh does)"
)


@dataclass
class Generation:
    """What one stream's worker did: tokens it produced and whether it was told to stop early.

    `finished` is set when the worker thread has let go of the model.
    """

    tokens: int = 0
    stopped_early: bool = False
    finished: threading.Event = field(default_factory=threading.Event)


class LlamaCppLlm:
    """Generates with llama.cpp in a worker thread; closing the stream stops it at the next token.

    The model loads on first use (not in `from_settings`), so building the provider is cheap.
    One generation runs at a time: a llama.cpp context is not safe to share between threads.
    """

    name = "llama-cpp"
    # No tools: llama-cpp-python 0.3 streams no tool calls with automatic tool choice
    # ("Automatic streaming tool choice is not supported"), and its template-only chat formats hand
    # tools to the template but return the call as plain text, which would be spoken.
    supports_tools = False

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int = 1,
        context_tokens: int = 4096,
        temperature: float = 0.7,
        max_tokens: int = 400,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.model_path = Path(model_path).expanduser()
        self.threads = threads
        self.context_tokens = context_tokens
        self.temperature = temperature
        self.max_tokens = max_tokens
        # Extra create_chat_completion arguments (top_p, repeat_penalty, stop, seed, logit_bias, ...).
        self.options = dict(options or {})
        self.last_generation: Generation | None = None
        self._llama: Any = None
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> LlamaCppLlm:
        llm = settings.llm
        return cls(
            llm.model_path or default_gguf_path(settings),
            threads=llm.threads,
            context_tokens=llm.context_tokens,
            temperature=llm.temperature,
            max_tokens=llm.max_tokens,
            options=llm.options,
        )

    @classmethod
    def auto_choice(cls, settings: Settings) -> AutoChoice:
        """A downloaded GGUF run in process: below a running server, which is the stronger sign of intent."""
        available = cls.availability(settings)
        return AutoChoice(RANK_USER_MODEL, available.usable, f"in process: {available.detail}")

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        # find_spec does not import the native library, so this stays cheap.
        if importlib.util.find_spec("llama_cpp") is None:
            return Availability(False, INSTALL_HINT)
        path = (settings.llm.model_path or default_gguf_path(settings)).expanduser()
        problem = _missing_model(path, settings.llm.model_path is None)
        if problem:
            return Availability(False, problem)
        return Availability(True, f"{path} ({path.stat().st_size / 1e6:.0f} MB), {settings.llm.threads} thread(s)")

    def load(self) -> Any:
        """The llama_cpp.Llama, loaded once (blocking: call it from a worker thread)."""
        with self._load_lock:
            if self._llama is None:
                try:
                    import llama_cpp
                except ImportError:
                    raise LlmError(INSTALL_HINT) from None
                problem = _missing_model(self.model_path, False)
                if problem:
                    raise LlmError(problem)
                try:
                    self._llama = llama_cpp.Llama(
                        model_path=str(self.model_path),
                        n_ctx=self.context_tokens,
                        n_threads=self.threads,
                        n_threads_batch=self.threads,
                        verbose=False,
                    )
                except (ValueError, RuntimeError) as error:
                    raise LlmError(
                        f"llama.cpp cannot load {self.model_path}: {error}; is it a complete GGUF file?"
                    ) from None
            return self._llama

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]:
        """Yields text deltas from a worker thread through a queue. Closing the generator (or
        cancelling its consumer) sets a stop flag the worker checks before each next token."""
        llama = await asyncio.to_thread(self.load)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        generation = Generation()
        self.last_generation = generation
        arguments = {
            **self.options,
            "messages": [m.as_dict() for m in messages],
            "max_tokens": max_tokens if max_tokens is not None else self.max_tokens,
            "temperature": temperature if temperature is not None else self.temperature,
            "stream": True,
        }

        def send(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:
                pass  # the loop is gone: nobody is listening any more

        def generate() -> None:
            try:
                with self._generate_lock:
                    if stop.is_set():
                        return
                    chunks = llama.create_chat_completion(**arguments)
                    try:
                        for chunk in chunks:
                            if stop.is_set():
                                generation.stopped_early = True
                                break
                            delta = chunk["choices"][0].get("delta", {})
                            text = delta.get("content")
                            if text:
                                generation.tokens += 1
                                send("text", text)
                    finally:
                        close = getattr(chunks, "close", None)
                        if close is not None:
                            close()  # frees llama.cpp's generator state at once
                send("end", None)
            except Exception as error:  # reported to the consumer, who raises it as LlmError
                send("error", error)
            finally:
                generation.finished.set()

        loop.run_in_executor(None, generate)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    yield value
                elif kind == "end":
                    return
                else:
                    raise LlmError(f"llama.cpp failed while generating from {self.model_path.name}: {value}")
        finally:
            # Not awaited: the worker notices within one token, and a barge-in must not wait for it.
            stop.set()


def _missing_model(path: Path, is_default: bool) -> str:
    if path.is_file():
        return ""
    if is_default:
        return f"GGUF model {path} is not downloaded: run `convers models pull llm`, or set llm.model_path"
    return f"GGUF model {path} does not exist: fix llm.model_path, or run `convers models pull llm` and unset it"
