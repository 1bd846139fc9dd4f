"""Embeddings from a local Ollama server (POST /api/embed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from convers.contracts.embedder import EmbedderError
from convers.contracts.provider import Availability

if TYPE_CHECKING:
    from convers.config import Settings


class OllamaEmbedder:
    """Calls Ollama's embedding endpoint; vectors are L2-normalised here whatever the model returns."""

    name = "ollama"

    def __init__(self, url: str, model: str, timeout_s: float = 10.0, dimension: int = 768) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        # nomic-embed-text is 768 wide; the first answer replaces this with the real width.
        self.dimension = dimension

    @classmethod
    def from_settings(cls, settings: Settings) -> OllamaEmbedder:
        section = settings.embedder
        return cls(section.ollama_url, section.ollama_model, section.timeout_s)

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        url = settings.embedder.ollama_url.rstrip("/")
        try:
            response = httpx.get(f"{url}/api/tags", timeout=1.0)
            response.raise_for_status()
        except httpx.HTTPError as error:
            return Availability(False, f"Ollama not reachable at {url} ({error}): start it with `ollama serve`")
        names = {m.get("name", "").split(":")[0] for m in response.json().get("models", [])}
        model = settings.embedder.ollama_model
        if model.split(":")[0] not in names:
            return Availability(False, f"Ollama at {url} has no model {model}: run `ollama pull {model}`")
        return Availability(True, f"Ollama {model} at {url}")

    def _request(self, texts: Sequence[str]) -> dict[str, Any]:
        return {"model": self.model, "input": list(texts)}

    def _vectors(self, response: httpx.Response, count: int) -> np.ndarray:
        if response.status_code != 200:
            raise EmbedderError(
                f"Ollama embed at {self.url} answered {response.status_code}: {response.text[:200]}; "
                f"is model {self.model} pulled (`ollama pull {self.model}`)?"
            )
        try:
            vectors = np.asarray(response.json()["embeddings"], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as error:
            raise EmbedderError(f"Ollama embed at {self.url} sent an unusable answer: {error}") from error
        if vectors.ndim != 2 or vectors.shape[0] != count:
            raise EmbedderError(f"Ollama embed at {self.url} returned shape {vectors.shape} for {count} texts")
        self.dimension = int(vectors.shape[1])
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.clip(norms, 1e-12, None)

    def _unreachable(self, error: httpx.HTTPError) -> EmbedderError:
        return EmbedderError(
            f"Ollama not reachable at {self.url} ({type(error).__name__}: {error}): "
            "start it with `ollama serve` or set embedder.ollama_url"
        )

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.post(f"{self.url}/api/embed", json=self._request(texts))
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error
        return self._vectors(response, len(texts))

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Blocking variant for worker threads (the store embeds at write time from a thread)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        try:
            response = httpx.post(f"{self.url}/api/embed", json=self._request(texts), timeout=self.timeout_s)
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error
        return self._vectors(response, len(texts))
