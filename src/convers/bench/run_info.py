"""What a benchmark ran on: the machine, and which providers and models (for the JSON artifact)."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    """Host, platform, Python, CPU, load average and thread settings of this run."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu or platform.processor(),
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }


def model_of(provider: Any) -> str | None:
    """The model a built provider runs, as the provider itself names it (not re-derived from settings)."""
    if provider is None:
        return None
    if getattr(provider, "name", None) == "pocketsphinx":
        return "bundled en-us"
    label = getattr(provider, "model_name", None)  # faster-whisper: "packaged Whisper tiny.en (...)" etc.
    if label:
        return str(label)
    path = getattr(provider, "model_path", None)  # Piper, Kokoro, llama.cpp: the model file
    if path:
        voice = getattr(provider, "voice", None)
        return f"{Path(path).name} ({voice})" if voice and getattr(provider, "name", None) == "kokoro" else Path(path).name
    for attribute in ("voice", "model"):  # espeak-ng: its voice; an OpenAI-compatible server: the model asked for
        value = getattr(provider, attribute, None)
        if value:
            return str(value)
    return None


def model_file_of(provider: Any) -> str | None:
    """Where the model a built provider runs lies (a folder or a file), if it has one: from the
    installed package (`site-packages/...`) or as given, without this machine's folders above it."""
    for attribute in ("model_dir", "model_path"):
        value = getattr(provider, attribute, None)
        if value:
            path = str(value)
            marker = "site-packages/"
            return path[path.index(marker):] if marker in path else Path(path).name
    return None


def describe_built(built: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """Name, model and model file of each built provider (kind -> provider object)."""
    return {
        kind: {"provider": getattr(provider, "name", None), "model": model_of(provider), "file": model_file_of(provider)}
        for kind, provider in built.items()
    }


def provider_info(
    settings: Any, reference: Any | None, built: dict[str, dict[str, str | None]] | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Which providers and models ran: (providers, models, model_files).

    `built` (from describe_built, in a loopback run) says what really ran; without it (a run over
    --url, where the server built them) the providers are what these settings select and the STT
    and TTS models are unknown (None).
    """
    from convers.app import wiring

    built = built or {}

    def name(kind: str) -> str:
        if kind in built and built[kind]["provider"]:
            return str(built[kind]["provider"])
        return wiring.provider_name(kind, settings)

    providers: dict[str, str | None] = {kind: name(kind) for kind in ("vad", "turn_end", "stt", "tts", "embedder")}
    providers["memory"] = settings.memory.provider if settings.memory.enabled else None
    providers["llm"] = "reference" if reference is not None else name("llm")
    models = {
        "stt": built.get("stt", {}).get("model"),
        "tts": built.get("tts", {}).get("model"),
        "llm": "convers-reference" if reference is not None
        else built.get("llm", {}).get("model") or settings.llm.model or str(settings.llm.model_path or ""),
        "embedder": {"minilm": "all-MiniLM-L6-v2", "mpnet": "all-mpnet-base-v2"}.get(
            str(providers["embedder"]), settings.embedder.ollama_model),
    }
    files: dict[str, str | None] = {kind: built[kind]["file"] for kind in ("stt", "tts", "turn_end") if kind in built}
    return providers, models, files
