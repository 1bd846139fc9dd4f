"""Ollama embedder against a tiny local HTTP server, and a clear error when nothing listens."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from convers.config import Settings
from convers.contracts.embedder import EmbedderError
from convers.providers.embedder.ollama import OllamaEmbedder


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))  # type: ignore[attr-defined]
        if body["model"] == "missing":
            payload, status = {"error": "model 'missing' not found"}, 404
        else:
            payload, status = {"embeddings": [[3.0, 4.0, 0.0] for _ in body["input"]]}, 200
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        data = json.dumps({"models": [{"name": "nomic-embed-text:latest"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(httpd: HTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


async def test_embeds_and_normalises(server: HTTPServer) -> None:
    embedder = OllamaEmbedder(_url(server), "nomic-embed-text")
    vectors = await embedder.embed(["a", "b"])
    np.testing.assert_allclose(vectors, [[0.6, 0.8, 0.0]] * 2, atol=1e-6)
    assert embedder.dimension == 3
    assert server.requests[0] == ("/api/embed", {"model": "nomic-embed-text", "input": ["a", "b"]})  # type: ignore[attr-defined]
    np.testing.assert_allclose(embedder.embed_sync(["c"]), [[0.6, 0.8, 0.0]], atol=1e-6)
    settings = Settings(embedder={"ollama_url": _url(server)})
    assert OllamaEmbedder.availability(settings).usable


async def test_missing_model_names_the_pull_command(server: HTTPServer) -> None:
    with pytest.raises(EmbedderError, match="ollama pull missing"):
        await OllamaEmbedder(_url(server), "missing").embed(["a"])


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_unreachable_is_an_embedder_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    embedder = OllamaEmbedder(url, "nomic-embed-text", timeout_s=2)
    with pytest.raises(EmbedderError, match="not reachable"):
        await embedder.embed(["hello"])
    with pytest.raises(EmbedderError, match="ollama serve"):
        embedder.embed_sync(["hello"])
    assert not OllamaEmbedder.availability(Settings(embedder={"ollama_url": url})).usable
