"""Default models: where they live under data_dir/models, where they come from, and fetching them.

Providers only ask this module for paths (`default_gguf_path`, `whisper_model_dir`, ...); nothing
here runs at conversation time. `convers models pull` is the one caller of `pull`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from convers.private_files import private_dir

if TYPE_CHECKING:
    from convers.config import Settings

HF = "https://huggingface.co"
# The language model `convers models pull llm` fetches: small enough for a 2-core laptop, good
# enough to hold a conversation. Size and sha256 as published for this file on Hugging Face.
DEFAULT_GGUF = "qwen2.5-1.5b-instruct-q4_k_m.gguf"
DEFAULT_GGUF_URL = f"{HF}/Qwen/Qwen2.5-1.5B-Instruct-GGUF/resolve/main/{DEFAULT_GGUF}"
DEFAULT_GGUF_SIZE = 1_117_320_736
DEFAULT_GGUF_SHA256 = "6a1a2eb6d15622bf3c96857206351ba97e1af16c30d7a74ee38970e434e9407e"
MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_REPO = f"{HF}/sentence-transformers/all-MiniLM-L6-v2/resolve/main"
MINILM_FILES = ("config.json", "tokenizer.json", "model.safetensors")
MPNET_NAME = "all-mpnet-base-v2"
MPNET_REPO = f"{HF}/sentence-transformers/all-mpnet-base-v2/resolve/main"
MPNET_FILES = ("model.safetensors", "tokenizer.json", "config.json")
PIPER_VOICE = "en_US-lessac-medium"
PIPER_VOICE_URL = f"{HF}/rhasspy/piper-voices/resolve/v1.0.0/en/en_US/lessac/medium/{PIPER_VOICE}"
# smart-turn v3.2, int8 CPU build; size and sha256 of the file pipecat-ai 1.14.0 ships (the same upload).
SMART_TURN_NAME = "smart-turn-v3.2-cpu.onnx"
SMART_TURN_URL = f"{HF}/pipecat-ai/smart-turn-v3/resolve/main/{SMART_TURN_NAME}"
SMART_TURN_SIZE = 8_679_182
SMART_TURN_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
# What faster-whisper itself fetches for a model (faster_whisper.utils.download_model); which
# vocabulary file and whether preprocessor_config.json exist depends on the model.
WHISPER_REQUIRED = ("config.json", "model.bin", "tokenizer.json")
WHISPER_OPTIONAL = ("vocabulary.txt", "vocabulary.json", "preprocessor_config.json")
# The SHA-256 of every file `pull` wrote, so that providers can check a pulled file before loading it.
PULLED_RECORD = "pulled.json"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A model file could not be fetched or failed its check; the message says what to do instead."""


# -- where models live --------------------------------------------------------------------------


def models_dir(settings: Settings) -> Path:
    """data_dir/models: every downloaded model lives under it."""
    return settings.data_path / "models"


def default_gguf_path(settings: Settings) -> Path:
    """The GGUF the llama-cpp provider uses when llm.model_path is unset."""
    return models_dir(settings) / DEFAULT_GGUF


def whisper_model_dir(settings: Settings, name: str | None = None) -> Path:
    """Folder of a faster-whisper model (default: stt.whisper_model), ready for WhisperModel(path)."""
    return models_dir(settings) / "whisper" / (name or settings.stt.whisper_model)


def mpnet_dir(settings: Settings) -> Path:
    """Where `convers models pull embedder` puts all-mpnet-base-v2 (providers/embedder/mpnet.py reads it)."""
    return models_dir(settings) / MPNET_NAME


def minilm_dir(settings: Settings) -> Path:
    """Where `convers models pull embedder` puts all-MiniLM-L6-v2 (config, tokenizer, safetensors)."""
    return models_dir(settings) / MINILM_NAME


def piper_voice_path(settings: Settings) -> Path:
    """The Piper voice .onnx in use: tts.piper_voice, else the pulled default (its .onnx.json beside it)."""
    if settings.tts.piper_voice is not None:
        return settings.tts.piper_voice.expanduser()
    return models_dir(settings) / "piper" / f"{PIPER_VOICE}.onnx"


def smart_turn_path(settings: Settings) -> Path:
    """Where `convers models pull turn` puts the smart-turn model."""
    return models_dir(settings) / "turn" / SMART_TURN_NAME


def pulled_checksums(settings: Settings, paths: list[Path]) -> dict[Path, str]:
    """The SHA-256 `convers models pull` recorded for each of `paths` (files it did not write are left out)."""
    record = _read_pulled(models_dir(settings) / PULLED_RECORD)
    return {path: record[str(path)] for path in paths if str(path) in record}


def _read_pulled(record_path: Path) -> dict[str, str]:
    try:
        data = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _remember_pulled(record_path: Path, path: Path, sha256: str) -> None:
    from convers.private_files import write_json_atomically

    record = _read_pulled(record_path)
    record[str(path)] = sha256
    write_json_atomically(record_path, record)


# -- what to fetch ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch. Optional files may be missing upstream (HTTP 404) without failing the pull."""

    url: str
    path: Path
    size: int | None = None
    sha256: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class ModelBundle:
    """What `convers models pull KIND` fetches, and which file proves it is there."""

    kind: str
    name: str
    description: str
    files: tuple[RemoteFile, ...]
    marker: Path
    # Where `pull` records the SHA-256 of each file it wrote (None: nowhere).
    record: Path | None = None

    @property
    def present(self) -> bool:
        return self.marker.is_file()


KINDS = ("llm", "stt", "embedder", "tts", "turn")


def catalogue(settings: Settings) -> dict[str, ModelBundle]:
    """The default model of each kind, with target paths under this settings' data directory."""
    gguf = default_gguf_path(settings)
    whisper_name = settings.stt.whisper_model
    whisper = whisper_model_dir(settings, whisper_name)
    whisper_repo = f"{HF}/{_whisper_repo(whisper_name)}/resolve/main"
    minilm = minilm_dir(settings)
    mpnet = mpnet_dir(settings)
    voice = models_dir(settings) / "piper" / f"{PIPER_VOICE}.onnx"
    turn = smart_turn_path(settings)
    record = models_dir(settings) / PULLED_RECORD
    return {
        "llm": ModelBundle(
            "llm", "Qwen2.5-1.5B-Instruct Q4_K_M", "language model for `llm.provider = \"llama-cpp\"` (1.1 GB)",
            (RemoteFile(DEFAULT_GGUF_URL, gguf, DEFAULT_GGUF_SIZE, DEFAULT_GGUF_SHA256),),
            gguf,
            record,
        ),
        "stt": ModelBundle(
            "stt", f"faster-whisper {whisper_name}", "speech recognition, picked by `stt.provider = \"auto\"` before the packaged tiny.en",
            tuple(RemoteFile(f"{whisper_repo}/{n}", whisper / n) for n in WHISPER_REQUIRED)
            + tuple(RemoteFile(f"{whisper_repo}/{n}", whisper / n, optional=True) for n in WHISPER_OPTIONAL),
            whisper / "model.bin",
            record,
        ),
        # The embedder `auto` picks first; MiniLM when it is configured by name.
        "embedder": ModelBundle(
            "embedder", MINILM_NAME, "sentence embeddings for recall (90 MB)",
            tuple(RemoteFile(f"{MINILM_REPO}/{n}", minilm / n) for n in MINILM_FILES),
            minilm / "model.safetensors",
            record,
        ) if settings.embedder.provider == "minilm" else ModelBundle(
            "embedder", MPNET_NAME, "sentence embeddings for recall (440 MB)",
            tuple(RemoteFile(f"{MPNET_REPO}/{n}", mpnet / n) for n in MPNET_FILES),
            mpnet / "model.safetensors",
            record,
        ),
        "tts": ModelBundle(
            "tts", f"Piper {PIPER_VOICE}", "Piper voice, picked by `tts.provider = \"auto\"` before the packaged one (63 MB)",
            (
                RemoteFile(f"{PIPER_VOICE_URL}.onnx", voice),
                RemoteFile(f"{PIPER_VOICE_URL}.onnx.json", voice.with_name(voice.name + ".json")),
            ),
            voice,
            record,
        ),
        "turn": ModelBundle(
            "turn", "smart-turn v3.2", "end-of-turn model, picked by `turn_end.provider = \"auto\"` before the packaged one (9 MB)",
            (RemoteFile(SMART_TURN_URL, turn, SMART_TURN_SIZE, SMART_TURN_SHA256),),
            turn,
            record,
        ),
    }


def _whisper_repo(name: str) -> str:
    """Hugging Face repo of a faster-whisper model name, as faster-whisper resolves it."""
    if "/" in name:
        return name
    try:
        from faster_whisper.utils import (
            _MODELS as known,  # the library's own name table
        )
    except ImportError:
        known = {}
    return known.get(name, f"Systran/faster-whisper-{name}")


# -- fetching -----------------------------------------------------------------------------------

Progress = Callable[[str, int | None], "ProgressBar"]


class ProgressBar:
    """Receives byte counts; the default does nothing (the CLI passes a tqdm bar)."""

    def update(self, count: int) -> None: ...

    def close(self) -> None: ...


def _no_progress(_label: str, _total: int | None) -> ProgressBar:
    return ProgressBar()


def pull(bundle: ModelBundle, *, force: bool = False, progress: Progress = _no_progress,
         client: httpx.Client | None = None) -> list[Path]:
    """Fetches the files of `bundle` that are not there yet; returns the paths it wrote.

    The SHA-256 of each written file goes into models/pulled.json beside the bundle's marker's
    tree (`bundle.record`), and the provider checks the file against it before loading it.
    """
    record = bundle.record
    written: list[Path] = []
    own = client is None
    http = client or _client()
    try:
        for remote in bundle.files:
            if remote.path.is_file() and not force:
                continue
            sha256 = download(remote, progress=progress, client=http)
            if sha256 is not None:
                written.append(remote.path)
                if record is None:
                    continue
                try:
                    _remember_pulled(record, remote.path, sha256)
                except OSError as error:
                    raise DownloadError(f"cannot write {record}: {error.strerror or error}; free some space or fix the permissions") from None
    finally:
        if own:
            http.close()
    return written


def download(remote: RemoteFile, *, progress: Progress = _no_progress, client: httpx.Client | None = None) -> str | None:
    """Streams `remote.url` to `remote.path` through a .part file, checks it, renames it into place.

    Returns the file's SHA-256, or None for an optional file the server does not have. The final path only ever holds a
    complete, checked file: a failed or interrupted download leaves at most the .part behind.
    """
    own = client is None
    http = client or _client()
    part = remote.path.with_name(remote.path.name + ".part")
    try:
        private_dir(remote.path.parent)  # DATA_DIR/models, private like the rest of the data directory
        with http.stream("GET", remote.url) as response:
            if response.status_code == 404 and remote.optional:
                return None
            if response.status_code >= 400:
                raise DownloadError(
                    f"{remote.url} answered HTTP {response.status_code}; "
                    f"download it another way and copy it to {remote.path}"
                )
            size, sha256 = _expected(remote, response)
            digest = hashlib.sha256()
            received = 0
            bar = progress(remote.path.name, size)
            try:
                with part.open("wb") as out:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                bar.close()
        if size is not None and received != size:
            raise DownloadError(f"{remote.url}: got {received} bytes, expected {size}; run the pull again")
        if sha256 is not None and digest.hexdigest() != sha256:
            raise DownloadError(
                f"{remote.url}: sha256 {digest.hexdigest()} does not match the expected {sha256}; "
                "the file is corrupt or changed upstream, nothing was kept"
            )
        os.replace(part, remote.path)  # atomic on one filesystem: readers see no file or a whole one
        return digest.hexdigest()
    except OSError as error:
        raise DownloadError(f"cannot write {part}: {error.strerror or error}; free some space or fix the permissions") from None
    except httpx.HTTPError as error:
        host = urlsplit(remote.url).hostname or remote.url
        raise DownloadError(
            f"cannot reach {host}: {_reason(error)}; copy the file to {remote.path} by hand"
        ) from None
    finally:
        part.unlink(missing_ok=True)
        if own:
            http.close()


def _expected(remote: RemoteFile, response: httpx.Response) -> tuple[int | None, str | None]:
    """Size and sha256 to check: the catalogue's, else what Hugging Face says about its LFS file.

    Hugging Face answers a resolve URL with a redirect carrying X-Linked-Size and X-Linked-Etag
    (the sha256 of the stored file), so even files we pin no hash for get checked.
    """
    size, sha256 = remote.size, remote.sha256
    for hop in [*response.history, response]:
        linked_etag = hop.headers.get("x-linked-etag", "").strip('"').removeprefix("W/").strip('"')
        if sha256 is None and re.fullmatch(r"[0-9a-f]{64}", linked_etag):
            sha256 = linked_etag
        linked_size = hop.headers.get("x-linked-size", "")
        if size is None and linked_size.isdigit():
            size = int(linked_size)
    if size is None and "content-encoding" not in response.headers:
        length = response.headers.get("content-length", "")
        size = int(length) if length.isdigit() else None
    return size, sha256


def _client() -> httpx.Client:
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    return httpx.Client(timeout=timeout, follow_redirects=True, headers={"User-Agent": "convers"})


def _reason(error: httpx.HTTPError) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0]
