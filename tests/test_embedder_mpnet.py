"""all-mpnet-base-v2 as an int8 ONNX graph: the graph against a numpy MPNet on a small random model, the
relative-position buckets, unpacking the split packages, `auto`'s choice, and the real model's sense."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from convers import registry
from convers.config import Settings
from convers.contracts.embedder import Embedder, EmbedderError
from convers.providers.embedder import mpnet_onnx
from convers.providers.embedder.mpnet import MpnetEmbedder, packaged_parts, unpack_parts

HIDDEN, HEADS, LAYERS, VOCAB, POSITIONS, INNER = 32, 4, 2, 40, 24, 64


def small_model(seed: int = 3) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Random weights in MPNet's layout and names, small enough to check every number."""
    rng = np.random.default_rng(seed)

    def r(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32) * 0.3

    w = {"embeddings.word_embeddings.weight": r(VOCAB, HIDDEN), "embeddings.position_embeddings.weight": r(POSITIONS, HIDDEN),
         "embeddings.LayerNorm.weight": 1 + r(HIDDEN), "embeddings.LayerNorm.bias": r(HIDDEN),
         "embeddings.position_ids": np.arange(POSITIONS, dtype=np.int64)[None],
         "encoder.relative_attention_bias.weight": r(mpnet_onnx.BUCKETS, HEADS)}
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for part in ("q", "k", "v", "o"):
            w[p + f"attention.attn.{part}.weight"], w[p + f"attention.attn.{part}.bias"] = r(HIDDEN, HIDDEN), r(HIDDEN)
        w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"] = r(INNER, HIDDEN), r(INNER)
        w[p + "output.dense.weight"], w[p + "output.dense.bias"] = r(HIDDEN, INNER), r(HIDDEN)
        for norm in ("attention.LayerNorm", "output.LayerNorm"):
            w[p + norm + ".weight"], w[p + norm + ".bias"] = 1 + r(HIDDEN), r(HIDDEN)
    config = {"hidden_size": HIDDEN, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "layer_norm_eps": 1e-5}
    return w, config


def numpy_mpnet(w: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """MPNet's forward pass as written in its definition (positions from 2, a relative bias per head)."""
    def norm(x: np.ndarray, p: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * w[p + ".weight"] + w[p + ".bias"]

    def linear(x: np.ndarray, p: str) -> np.ndarray:
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    erf = np.vectorize(math.erf)
    n, head = len(ids), HIDDEN // HEADS
    x = norm(w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][np.arange(n) + 2],
             "embeddings.LayerNorm")
    bias = w["encoder.relative_attention_bias.weight"][mpnet_onnx.relative_buckets(n)].transpose(2, 0, 1)
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        q, k, v = (linear(x, p + f"attention.attn.{part}").reshape(n, HEADS, head).transpose(1, 0, 2) for part in "qkv")
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(head) + bias
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(n, HIDDEN)
        x = norm(linear(context, p + "attention.attn.o") + x, p + "attention.LayerNorm")
        inner = linear(x, p + "intermediate.dense")
        x = norm(linear(0.5 * inner * (1 + erf(inner / math.sqrt(2))), p + "output.dense") + x, p + "output.LayerNorm")
    return x


def test_the_graph_computes_mpnet() -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    weights, config = small_model()
    model = mpnet_onnx.build_fp32_graph(weights, config)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    table = weights["encoder.relative_attention_bias.weight"]
    for ids in (np.array([0, 5, 9, 2]), np.arange(3, 3 + 20) % VOCAB):
        states = session.run(None, {"ids": ids[None].astype(np.int64), "bias": mpnet_onnx.position_bias(table, len(ids))})[0][0]
        np.testing.assert_allclose(states, numpy_mpnet(weights, ids), atol=2e-4)


def test_relative_buckets_are_exact_near_and_logarithmic_far() -> None:
    buckets = mpnet_onnx.relative_buckets(200)
    assert buckets[0, 0] == 0
    assert buckets[1, 0] == 1 and buckets[7, 0] == 7  # a key 1 or 7 tokens before the query
    assert buckets[0, 1] == 17 and buckets[0, 7] == 23  # after it: the other half
    assert buckets[8, 0] == 8 and buckets[0, 8] == 24  # logarithmic from 8 on
    assert buckets[127, 0] == 15 and buckets[199, 0] == 15  # and capped
    assert buckets[0, 199] == 31


def test_the_split_packages_are_unpacked_into_the_models_folder(tmp_path: Path) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("model.safetensors", "tokenizer.json", "config.json", "README.md"):
            z.writestr(f"all-mpnet-base-v2/{name}", f"{name} " * 5000)
    data = archive.getvalue()
    parts = []
    for n in range(5):  # five pieces, as the packages split it
        piece = tmp_path / f"all-mpnet-base-v2.zip.00{n + 1}"
        piece.write_bytes(data[n * len(data) // 5:(n + 1) * len(data) // 5])
        parts.append(piece)
    target = unpack_parts(parts, tmp_path / "models" / "all-mpnet-base-v2")
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert (target / "config.json").read_text() == "config.json " * 5000
    with pytest.raises(zipfile.BadZipFile):
        unpack_parts(parts[:4], tmp_path / "other")  # a piece missing is no zip
    # Files that are not the ones convers knows are refused, and none is kept.
    with pytest.raises(EmbedderError, match="SHA-256"):
        unpack_parts(parts, tmp_path / "checked", {"config.json": "0" * 64})
    assert not any((tmp_path / "checked").iterdir())


def test_auto_picks_mpnet_where_it_is_here_and_minilm_for_a_configured_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing unpacked yet
    settings = Settings(data_dir=tmp_path)
    monkeypatch.setattr("convers.providers.embedder.mpnet.packaged_parts", lambda: [tmp_path / "piece"])
    monkeypatch.setattr("convers.providers.embedder.mpnet._runtime_missing", lambda: "")
    assert registry.provider_name("embedder", settings) == "mpnet"
    folder = tmp_path / "minilm"
    folder.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        (folder / name).write_text("{}")
    configured = Settings(data_dir=tmp_path, embedder={"model_dir": folder})
    assert registry.provider_name("embedder", configured) == "minilm"
    monkeypatch.setattr("convers.providers.embedder.mpnet.packaged_parts", lambda: None)
    with pytest.raises(EmbedderError, match="pypi-part-001"):
        MpnetEmbedder.from_settings(settings)


@pytest.mark.slow
def test_the_real_model_embeds_meaning(tmp_path: Path) -> None:
    if packaged_parts() is None:
        pytest.skip("all-mpnet-base-v2 packages not installed (scripts/install.sh)")
    pytest.importorskip("onnx")
    embedder = MpnetEmbedder.from_settings(Settings(data_dir=tmp_path))
    assert isinstance(embedder, Embedder)
    texts = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium.",
             "I finally hauled my tent up to the ridge.", "would she enjoy a camping trip?"]
    vectors = embedder.embed_sync(texts)
    assert vectors.shape == (5, 768) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.4 > max(sims[0, 2], sims[1, 2])
    assert sims[3, 4] > max(sims[3, 0], sims[3, 2], sims[4, 0], sims[4, 2])
    # Each text alone: its vector does not depend on what else was embedded with it, nor on the
    # threads of the query path.
    np.testing.assert_allclose(embedder.embed_sync([texts[2]])[0], vectors[2], atol=1e-6)
    np.testing.assert_allclose(embedder.embed_query_sync(texts[4]), vectors[4], atol=1e-5)
    assert json.loads((embedder.folder / "config.json").read_text())["model_type"] == "mpnet"
