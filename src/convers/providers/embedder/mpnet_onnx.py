"""all-mpnet-base-v2 as an int8 ONNX graph, built once from the safetensors weights (onnx_graph.py).

MPNet is BERT-shaped (12 layers, 768 wide) with two differences that matter here: positions start at
2 (its padding index, 1, plus one), and each attention score gets a learnt bias for how far apart
the two tokens are (32 buckets: exact up to 8 tokens either way, logarithmic to 128), shared by all
layers. The bias depends on the text's length only, so it is computed outside the graph
(`position_bias`) and given to it; one text runs at a time, with no padding and so no mask.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from convers.providers.embedder.onnx_graph import GraphBuilder, LayerNames, write_int8

# Bump when the graph or the quantization settings change: the cache name carries it.
GRAPH_VERSION = 1
# MPNet's padding index; positions are numbered from the one after it.
PADDING_INDEX = 1
BUCKETS = 32
MAX_DISTANCE = 128


def cached_graph_path(cache_dir: Path, digest: str) -> Path:
    return cache_dir / f"all-mpnet-base-v2-int8-v{GRAPH_VERSION}-{digest}.onnx"


@lru_cache(maxsize=64)
def relative_buckets(length: int) -> np.ndarray:
    """(length, length) bucket of each query token (row) and key token (column), as MPNet numbers them:
    half the buckets for keys before the query, half after; within each, exact distances below a
    quarter of all buckets and logarithmic ones up to MAX_DISTANCE beyond."""
    offset = np.arange(length)[None, :] - np.arange(length)[:, None]  # key - query
    distance = -offset
    half = BUCKETS // 2
    bucket = (distance < 0).astype(np.int64) * half
    distance = np.abs(distance)
    exact = half // 2
    far = exact + (np.log(np.maximum(distance, 1) / exact) / math.log(MAX_DISTANCE / exact) * (half - exact)).astype(np.int64)
    far = np.minimum(far, half - 1)
    return bucket + np.where(distance < exact, distance, far)


def position_bias(table: np.ndarray, length: int) -> np.ndarray:
    """The attention bias for a text of `length` tokens: (1, heads, length, length) float32, from the
    learnt (buckets, heads) table."""
    return np.ascontiguousarray(table[relative_buckets(length)].transpose(2, 0, 1)[None], dtype=np.float32)


def build_fp32_graph(weights: dict[str, np.ndarray], config: dict[str, Any]) -> Any:
    """The MPNet encoder as an ONNX ModelProto: ids int64 (1, tokens) and the position bias
    (1, heads, tokens, tokens) -> states float32 (1, tokens, hidden)."""
    from onnx import TensorProto, helper

    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    eps = float(config.get("layer_norm_eps", 1e-5))
    layers = int(config["num_hidden_layers"])
    head = hidden // heads
    w = {k.removeprefix("mpnet."): v.astype(np.float32) for k, v in weights.items() if v.dtype != np.int64}
    g = GraphBuilder()

    # Embeddings: word + position (rows 2..tokens+1), no token types.
    length = g.node("Shape", ["ids"], "length", start=1, end=2)
    first = g.const("first_position", np.array([PADDING_INDEX + 1], dtype=np.int64))
    end = g.node("Add", [length, first], "position_end")
    word = g.node("Gather", [g.const("word", w["embeddings.word_embeddings.weight"]), "ids"], "word_e")
    pos = g.node("Slice", [g.const("position", w["embeddings.position_embeddings.weight"]), first, end,
                           g.const("axis0", np.array([0], dtype=np.int64))], "pos_e")
    x = g.norm(g.node("Add", [word, pos], "emb_sum"), w, "embeddings.LayerNorm", "emb", eps)

    names = LayerNames("attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o",
                       "attention.LayerNorm")
    for i in range(layers):
        x = g.encoder_layer(x, w, f"encoder.layer.{i}.", names, i, "bias", (heads, head), eps,
                            f"l{i}.out" if i < layers - 1 else "states")

    return g.model(
        "all-mpnet-base-v2",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "tokens"]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [1, heads, "tokens", "tokens"])],
        [helper.make_tensor_value_info("states", TensorProto.FLOAT, [1, "tokens", hidden])],
    )


def build_int8_graph(weights: dict[str, np.ndarray], config: dict[str, Any], target: Path) -> Path:
    """Writes the int8 graph to `target` (atomically). Needs `onnx`."""
    return write_int8(build_fp32_graph(weights, config), target)
