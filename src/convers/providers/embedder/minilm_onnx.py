"""all-MiniLM-L6-v2 as an int8 ONNX graph: built once from the safetensors weights, cached, run by onnxruntime.

Why: a short query through the numpy encoder costs ~17 ms on one core, nearly all of it reading the
42 MB of float32 weights from memory for 10-20 tokens. Dynamic int8 quantization (onnxruntime's
`quantize_dynamic`, weights int8 per channel, activations quantized per call) reads a quarter of that
and runs in onnxruntime's MLAS kernels, which are built for small matrices.

The graph is written with `onnx.helper` from the same weights the numpy encoder uses (no torch, no
model hub). `onnx` is needed only to build the cached file; with a cached file present onnxruntime
alone runs it. The cache file name carries the sha256 of model.safetensors and a graph version, so a
changed model or a changed graph builds a new file and an old one is never used for the wrong weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from convers.private_files import private_dir

log = logging.getLogger(__name__)

# Bump when the graph or the quantization settings change: the cache name carries it.
GRAPH_VERSION = 1
OPSET = 17


def weights_digest(model_dir: Path) -> str:
    """sha256 of model.safetensors (first 16 hex digits): names the cached graph made from it."""
    digest = hashlib.sha256()
    with (model_dir / "model.safetensors").open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def cached_graph_path(cache_dir: Path, digest: str) -> Path:
    return cache_dir / f"all-MiniLM-L6-v2-int8-v{GRAPH_VERSION}-{digest}.onnx"


def build_fp32_graph(weights: dict[str, np.ndarray], config: dict[str, Any]) -> Any:
    """The BERT encoder as an ONNX ModelProto: (ids, mask) int64 (batch, tokens) -> states float32."""
    from onnx import TensorProto, helper, numpy_helper

    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    layers = int(config["num_hidden_layers"])
    head = hidden // heads
    w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in weights.items()}
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def norm(x: str, prefix: str, out: str) -> str:
        return node("LayerNormalization", [x, const(prefix + ".w", w[prefix + ".weight"]),
                                            const(prefix + ".b", w[prefix + ".bias"])], out, axis=-1, epsilon=eps)

    def linear(x: str, prefix: str, out: str) -> str:
        # torch Linear stores (out, in); the graph multiplies x @ W, so W is stored transposed.
        product = node("MatMul", [x, const(prefix + ".wT", w[prefix + ".weight"].T)], out + ".mm")
        return node("Add", [product, const(prefix + ".b", w[prefix + ".bias"])], out)

    # Embeddings: word + position (0..tokens-1) + token type 0.
    # Position rows 0..tokens-1 as one Slice of the table (Shape's start/end attributes: opset 15+).
    length = node("Shape", ["ids"], "length", start=1, end=2)
    word = node("Gather", [const("word", w["embeddings.word_embeddings.weight"]), "ids"], "word_e")
    pos = node("Slice", [const("position", w["embeddings.position_embeddings.weight"]),
                         const("zero_1d", np.array([0], dtype=np.int64)), length,
                         const("axis0", np.array([0], dtype=np.int64))], "pos_e")
    summed = node("Add", [word, pos], "emb_sum")
    summed = node("Add", [summed, const("type0", w["embeddings.token_type_embeddings.weight"][0])], "emb_sum2")
    x = norm(summed, "embeddings.LayerNorm", "emb")

    # Padding keys get -1e9 before the softmax, as in the numpy encoder.
    mask_f = node("Cast", ["mask"], "mask_f", to=TensorProto.FLOAT)
    inverted = node("Sub", [const("one_f", np.array(1.0, dtype=np.float32)), mask_f], "mask_inv")
    key_bias = node("Mul", [inverted, const("neg", np.array(-1e9, dtype=np.float32))], "key_bias0")
    key_bias = node("Unsqueeze", [key_bias, const("axes12", np.array([1, 2], dtype=np.int64))], "key_bias")

    split_shape = const("split_shape", np.array([0, 0, heads, head], dtype=np.int64))
    merge_shape = const("merge_shape", np.array([0, 0, hidden], dtype=np.int64))
    scale = const("scale", np.array(1.0 / np.sqrt(head), dtype=np.float32))
    half = const("half", np.array(0.5, dtype=np.float32))
    one = const("one_g", np.array(1.0, dtype=np.float32))
    root2 = const("root2", np.array(np.sqrt(2.0), dtype=np.float32))
    for i in range(layers):
        p = f"encoder.layer.{i}."
        per_head = {}
        for part in ("query", "key", "value"):
            projected = linear(x, p + f"attention.self.{part}", f"l{i}.{part}")
            split = node("Reshape", [projected, split_shape], f"l{i}.{part}.split")
            # query/value: (batch, heads, tokens, head); key: (batch, heads, head, tokens).
            perm = [0, 2, 3, 1] if part == "key" else [0, 2, 1, 3]
            per_head[part] = node("Transpose", [split], f"l{i}.{part}.heads", perm=perm)
        scores = node("MatMul", [per_head["query"], per_head["key"]], f"l{i}.scores0")
        scores = node("Mul", [scores, scale], f"l{i}.scores1")
        scores = node("Add", [scores, key_bias], f"l{i}.scores")
        probs = node("Softmax", [scores], f"l{i}.probs", axis=-1)
        context = node("MatMul", [probs, per_head["value"]], f"l{i}.context0")
        context = node("Transpose", [context], f"l{i}.context1", perm=[0, 2, 1, 3])
        context = node("Reshape", [context, merge_shape], f"l{i}.context")
        attended = linear(context, p + "attention.output.dense", f"l{i}.attn_out")
        attended = node("Add", [attended, x], f"l{i}.attn_res")
        x = norm(attended, p + "attention.output.LayerNorm", f"l{i}.attn_norm")
        inner = linear(x, p + "intermediate.dense", f"l{i}.ff_in")
        # Exact (erf) GELU, as BERT defines it; onnxruntime fuses this pattern into one kernel.
        erf = node("Erf", [node("Div", [inner, root2], f"l{i}.gelu_div")], f"l{i}.gelu_erf")
        gelu = node("Mul", [node("Mul", [inner, half], f"l{i}.gelu_half"),
                            node("Add", [erf, one], f"l{i}.gelu_add")], f"l{i}.gelu")
        out = linear(gelu, p + "output.dense", f"l{i}.ff_out")
        out = node("Add", [out, x], f"l{i}.ff_res")
        x = norm(out, p + "output.LayerNorm", f"l{i}.out" if i < layers - 1 else "states")

    graph = helper.make_graph(
        nodes, "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("states", TensorProto.FLOAT, ["batch", "tokens", hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


class _DropMessage(logging.Filter):
    """Drops log records whose message contains `text`."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def build_int8_graph(weights: dict[str, np.ndarray], config: dict[str, Any], target: Path) -> Path:
    """Writes the int8 graph to `target` (atomically: a half-written file is never found). Needs `onnx`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    private_dir(target.parent)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        int8 = Path(scratch) / "int8.onnx"
        onnx.save(build_fp32_graph(weights, config), str(fp32))
        # Only the weight MatMuls (constant right side) are quantized; attention stays float32.
        # onnxruntime advises "pre-processing" (shape inference, graph fusions) on the root logger for
        # any graph without its marker; this graph is built here with every shape known and only its
        # constant MatMuls quantized, so the advice is not for the person running convers.
        advice = _DropMessage("pre-processing before quantization")
        logging.getLogger().addFilter(advice)
        try:
            quantize_dynamic(str(fp32), str(int8), op_types_to_quantize=["MatMul"], per_channel=True,
                             weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().removeFilter(advice)
        os.replace(int8, target)
    return target
