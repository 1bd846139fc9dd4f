"""What the in-process sentence encoders share: an ONNX graph written node by node from safetensors
weights (no torch, no model hub), quantized to int8 once and cached under a name that carries the
weights' digest, so changed weights or a changed graph build a new file.

Why int8: a short query through a float32 encoder spends nearly all its time reading the weights from
memory. Dynamic int8 quantization (onnxruntime's `quantize_dynamic`, weights int8 per channel,
activations quantized per call) reads a quarter of that and runs in onnxruntime's MLAS kernels,
which are built for small matrices. `onnx` is needed only to build a graph; with a cached file
present onnxruntime alone runs it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convers.model_checks import RECORD_NAME, VerifiedFiles, sha256_of
from convers.private_files import private_dir

OPSET = 17


def weights_digest(model_dir: Path, cache_dir: Path | None = None) -> str:
    """sha256 of model.safetensors (first 16 hex digits): names the cached graph made from it.

    With `cache_dir`, the digest is remembered there (model_checks' record, by the file's size and
    modification time), so a start does not hash the weights again: 440 MB for all-mpnet-base-v2
    took about 0.4 s of a core at every start, while the greeting is being spoken."""
    weights = model_dir / "model.safetensors"
    if cache_dir is None:
        return sha256_of(weights)[:16]
    return VerifiedFiles(cache_dir / RECORD_NAME).sha256(weights)[:16]


@dataclass(frozen=True)
class LayerNames:
    """Where a transformer layer's weights are, relative to its prefix ("encoder.layer.3.")."""

    query: str
    key: str
    value: str
    attention_out: str
    attention_norm: str
    inner: str = "intermediate.dense"
    out: str = "output.dense"
    out_norm: str = "output.LayerNorm"


class GraphBuilder:
    """Collects an ONNX graph's nodes and constant tensors; every node is named by its one output."""

    def __init__(self) -> None:
        self.inits: list[Any] = []
        self.nodes: list[Any] = []
        self._shared: set[str] = set()

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def shared(self, name: str, value: np.ndarray) -> str:
        """A constant every layer reads: made at its first use, the same tensor after."""
        if name not in self._shared:
            self._shared.add(self.const(name, value))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def norm(self, x: str, weights: dict[str, np.ndarray], prefix: str, out: str, eps: float) -> str:
        """LayerNorm with the weights `prefix`.weight and `prefix`.bias."""
        return self.node("LayerNormalization", [x, self.const(prefix + ".w", weights[prefix + ".weight"]),
                                                 self.const(prefix + ".b", weights[prefix + ".bias"])],
                         out, axis=-1, epsilon=eps)

    def linear(self, x: str, weights: dict[str, np.ndarray], prefix: str, out: str) -> str:
        """A torch Linear: it stores (out, in), the graph multiplies x @ W, so W is stored transposed."""
        product = self.node("MatMul", [x, self.const(prefix + ".wT", weights[prefix + ".weight"].T)], out + ".mm")
        return self.node("Add", [product, self.const(prefix + ".b", weights[prefix + ".bias"])], out)

    def gelu(self, x: str, prefix: str) -> str:
        """Exact (erf) GELU, as BERT and MPNet define it; onnxruntime fuses this pattern into one kernel."""
        half = self.shared("half", np.array(0.5, dtype=np.float32))
        one = self.shared("one_g", np.array(1.0, dtype=np.float32))
        root2 = self.shared("root2", np.array(np.sqrt(2.0), dtype=np.float32))
        erf = self.node("Erf", [self.node("Div", [x, root2], f"{prefix}.gelu_div")], f"{prefix}.gelu_erf")
        return self.node("Mul", [self.node("Mul", [x, half], f"{prefix}.gelu_half"),
                                 self.node("Add", [erf, one], f"{prefix}.gelu_add")], f"{prefix}.gelu")

    def encoder_layer(self, x: str, weights: dict[str, np.ndarray], prefix: str, names: LayerNames, i: int,
                      score_bias: str, shape: tuple[int, int], eps: float, out: str) -> str:
        """One post-norm transformer layer: self-attention with `score_bias` added to the scaled
        scores (a padding mask, a position bias), then the GELU feed-forward, each with its residual
        and LayerNorm. `shape`: (heads, head width)."""
        heads, head = shape
        split_shape = self.shared("split_shape", np.array([0, 0, heads, head], dtype=np.int64))
        merge_shape = self.shared("merge_shape", np.array([0, 0, heads * head], dtype=np.int64))
        per_head = {}
        for part, key in (("query", names.query), ("key", names.key), ("value", names.value)):
            projected = self.linear(x, weights, prefix + key, f"l{i}.{part}")
            split = self.node("Reshape", [projected, split_shape], f"l{i}.{part}.split")
            # query/value: (batch, heads, tokens, head); key: (batch, heads, head, tokens).
            perm = [0, 2, 3, 1] if part == "key" else [0, 2, 1, 3]
            per_head[part] = self.node("Transpose", [split], f"l{i}.{part}.heads", perm=perm)
        scale = self.shared("scale", np.array(1.0 / np.sqrt(head), dtype=np.float32))
        scores = self.node("MatMul", [per_head["query"], per_head["key"]], f"l{i}.scores0")
        scores = self.node("Mul", [scores, scale], f"l{i}.scores1")
        scores = self.node("Add", [scores, score_bias], f"l{i}.scores")
        probs = self.node("Softmax", [scores], f"l{i}.probs", axis=-1)
        context = self.node("MatMul", [probs, per_head["value"]], f"l{i}.context0")
        context = self.node("Transpose", [context], f"l{i}.context1", perm=[0, 2, 1, 3])
        context = self.node("Reshape", [context, merge_shape], f"l{i}.context")
        attended = self.linear(context, weights, prefix + names.attention_out, f"l{i}.attn_out")
        attended = self.node("Add", [attended, x], f"l{i}.attn_res")
        x = self.norm(attended, weights, prefix + names.attention_norm, f"l{i}.attn_norm", eps)
        gelu = self.gelu(self.linear(x, weights, prefix + names.inner, f"l{i}.ff_in"), f"l{i}")
        fed = self.node("Add", [self.linear(gelu, weights, prefix + names.out, f"l{i}.ff_out"), x], f"l{i}.ff_res")
        return self.norm(fed, weights, prefix + names.out_norm, out, eps)

    def model(self, name: str, inputs: list[Any], outputs: list[Any]) -> Any:
        from onnx import helper

        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
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


def write_int8(model: Any, target: Path) -> Path:
    """Quantizes the float32 `model` (a ModelProto) and writes it to `target`, atomically: a
    half-written file is never found. Needs `onnx`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    private_dir(target.parent)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        int8 = Path(scratch) / "int8.onnx"
        onnx.save(model, str(fp32))
        # Only the weight MatMuls (constant right side) are quantized; attention stays float32.
        # onnxruntime advises "pre-processing" (shape inference, graph fusions) on the root logger for
        # any graph without its marker; these graphs are built here with every shape known and only their
        # MatMuls quantized, so the advice is not for the person running convers.
        advice = _DropMessage("pre-processing before quantization")
        logging.getLogger().addFilter(advice)
        try:
            quantize_dynamic(str(fp32), str(int8), op_types_to_quantize=["MatMul"], per_channel=True,
                             weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().removeFilter(advice)
        os.replace(int8, target)
    return target


def open_session(path: Path, threads: int) -> Any:
    """An onnxruntime session of a cached graph on `threads` threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # shape-merge warnings from the quantized graph are noise
    # onnxruntime's worker threads spin after each run, waiting for the next: a core taken from the
    # language model and the voice between two embeddings. They sleep instead. (Spinning within a
    # run only, `session.force_spinning_stop`, embedded a lone question faster, 10.4-10.9 against
    # 12.6-12.8 ms p50, but slower in a store's searches, 13.4-15.2 against 11.0-11.2 ms.)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
