"""all-MiniLM-L6-v2 as an int8 ONNX graph: built once from the safetensors weights, cached, run by
onnxruntime (onnx_graph.py says why and how).

A short query through the numpy encoder costs ~17 ms on one core, nearly all of it reading the 42 MB
of float32 weights from memory for 10-20 tokens; through this graph about 1-5 ms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convers.providers.embedder.onnx_graph import GraphBuilder, LayerNames, weights_digest, write_int8

__all__ = ["GRAPH_VERSION", "build_fp32_graph", "build_int8_graph", "cached_graph_path", "weights_digest"]

# Bump when the graph or the quantization settings change: the cache name carries it.
GRAPH_VERSION = 1


def cached_graph_path(cache_dir: Path, digest: str) -> Path:
    return cache_dir / f"all-MiniLM-L6-v2-int8-v{GRAPH_VERSION}-{digest}.onnx"


def build_fp32_graph(weights: dict[str, np.ndarray], config: dict[str, Any]) -> Any:
    """The BERT encoder as an ONNX ModelProto: (ids, mask) int64 (batch, tokens) -> states float32."""
    from onnx import TensorProto, helper

    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    layers = int(config["num_hidden_layers"])
    head = hidden // heads
    w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in weights.items()}
    g = GraphBuilder()

    # Embeddings: word + position (0..tokens-1) + token type 0.
    # Position rows 0..tokens-1 as one Slice of the table (Shape's start/end attributes: opset 15+).
    length = g.node("Shape", ["ids"], "length", start=1, end=2)
    word = g.node("Gather", [g.const("word", w["embeddings.word_embeddings.weight"]), "ids"], "word_e")
    pos = g.node("Slice", [g.const("position", w["embeddings.position_embeddings.weight"]),
                           g.const("zero_1d", np.array([0], dtype=np.int64)), length,
                           g.const("axis0", np.array([0], dtype=np.int64))], "pos_e")
    summed = g.node("Add", [word, pos], "emb_sum")
    summed = g.node("Add", [summed, g.const("type0", w["embeddings.token_type_embeddings.weight"][0])], "emb_sum2")
    x = g.norm(summed, w, "embeddings.LayerNorm", "emb", eps)

    # Padding keys get -1e9 before the softmax, as in the numpy encoder.
    mask_f = g.node("Cast", ["mask"], "mask_f", to=TensorProto.FLOAT)
    inverted = g.node("Sub", [g.const("one_f", np.array(1.0, dtype=np.float32)), mask_f], "mask_inv")
    key_bias = g.node("Mul", [inverted, g.const("neg", np.array(-1e9, dtype=np.float32))], "key_bias0")
    key_bias = g.node("Unsqueeze", [key_bias, g.const("axes12", np.array([1, 2], dtype=np.int64))], "key_bias")

    names = LayerNames("attention.self.query", "attention.self.key", "attention.self.value",
                       "attention.output.dense", "attention.output.LayerNorm")
    for i in range(layers):
        x = g.encoder_layer(x, w, f"encoder.layer.{i}.", names, i, key_bias, (heads, head), eps,
                            f"l{i}.out" if i < layers - 1 else "states")

    return g.model(
        "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("states", TensorProto.FLOAT, ["batch", "tokens", hidden])],
    )


def build_int8_graph(weights: dict[str, np.ndarray], config: dict[str, Any], target: Path) -> Path:
    """Writes the int8 graph to `target` (atomically). Needs `onnx`."""
    return write_int8(build_fp32_graph(weights, config), target)
