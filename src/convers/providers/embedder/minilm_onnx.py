"""all-MiniLM-L6-v2 as an int8 ONNX graph: built once from the safetensors weights, cached, run by
onnxruntime (onnx_graph.py says why and how).

A short query through the numpy encoder costs ~17 ms on one core, nearly all of it reading the 42 MB
of float32 weights from memory for 10-20 tokens; through this graph about 1-5 ms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convers.providers.embedder.onnx_graph import GraphBuilder, weights_digest, write_int8

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

    split_shape = g.const("split_shape", np.array([0, 0, heads, head], dtype=np.int64))
    merge_shape = g.const("merge_shape", np.array([0, 0, hidden], dtype=np.int64))
    scale = g.const("scale", np.array(1.0 / np.sqrt(head), dtype=np.float32))
    for i in range(layers):
        p = f"encoder.layer.{i}."
        per_head = {}
        for part in ("query", "key", "value"):
            projected = g.linear(x, w, p + f"attention.self.{part}", f"l{i}.{part}")
            split = g.node("Reshape", [projected, split_shape], f"l{i}.{part}.split")
            # query/value: (batch, heads, tokens, head); key: (batch, heads, head, tokens).
            perm = [0, 2, 3, 1] if part == "key" else [0, 2, 1, 3]
            per_head[part] = g.node("Transpose", [split], f"l{i}.{part}.heads", perm=perm)
        scores = g.node("MatMul", [per_head["query"], per_head["key"]], f"l{i}.scores0")
        scores = g.node("Mul", [scores, scale], f"l{i}.scores1")
        scores = g.node("Add", [scores, key_bias], f"l{i}.scores")
        probs = g.node("Softmax", [scores], f"l{i}.probs", axis=-1)
        context = g.node("MatMul", [probs, per_head["value"]], f"l{i}.context0")
        context = g.node("Transpose", [context], f"l{i}.context1", perm=[0, 2, 1, 3])
        context = g.node("Reshape", [context, merge_shape], f"l{i}.context")
        attended = g.linear(context, w, p + "attention.output.dense", f"l{i}.attn_out")
        attended = g.node("Add", [attended, x], f"l{i}.attn_res")
        x = g.norm(attended, w, p + "attention.output.LayerNorm", f"l{i}.attn_norm", eps)
        gelu = g.gelu(g.linear(x, w, p + "intermediate.dense", f"l{i}.ff_in"), f"l{i}")
        out = g.linear(gelu, w, p + "output.dense", f"l{i}.ff_out")
        out = g.node("Add", [out, x], f"l{i}.ff_res")
        x = g.norm(out, w, p + "output.LayerNorm", f"l{i}.out" if i < layers - 1 else "states", eps)

    return g.model(
        "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("states", TensorProto.FLOAT, ["batch", "tokens", hidden])],
    )


def build_int8_graph(weights: dict[str, np.ndarray], config: dict[str, Any], target: Path) -> Path:
    """Writes the int8 graph to `target` (atomically). Needs `onnx`."""
    return write_int8(build_fp32_graph(weights, config), target)
