"""Model downloads against a local HTTP server on 127.0.0.1: progress, atomic rename, checks, errors."""

from __future__ import annotations

import hashlib
import socket
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from convers.cli import main
from convers.config import Settings
from convers.downloads import (
    DownloadError,
    ModelBundle,
    ProgressBar,
    RemoteFile,
    catalogue,
    default_gguf_path,
    download,
    minilm_dir,
    models_dir,
    mpnet_dir,
    piper_voice_path,
    pull,
    smart_turn_path,
    whisper_model_dir,
)
from convers.packaged_models import SMART_TURN, SMART_TURN_FILE

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: several chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Files(BaseHTTPRequestHandler):
    """Serves PAYLOAD at /model.bin, a Hugging Face-style redirect at /resolve/<sha>, and 404s."""

    def do_GET(self) -> None:
        if self.path == "/model.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            for start in range(0, len(PAYLOAD), 65536):
                self.wfile.write(PAYLOAD[start:start + 65536])
        elif self.path.startswith("/resolve/"):
            # Hugging Face answers resolve URLs with a redirect that names the stored file's sha256.
            self.send_response(302)
            self.send_header("Location", "/model.bin")
            self.send_header("X-Linked-Etag", f'"{self.path.rsplit("/", 1)[1]}"')
            self.send_header("X-Linked-Size", str(len(PAYLOAD)))
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(404)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"not found")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/model.bin"


class RecordingBar(ProgressBar):
    """Records progress, and checks at every step that only the .part file exists so far."""

    def __init__(self, target: Path, total: int | None) -> None:
        self.target = target
        self.total = total
        self.counted = 0
        self.closed = False
        self.final_seen_early = False

    def update(self, count: int) -> None:
        self.counted += count
        self.final_seen_early |= self.target.exists()

    def close(self) -> None:
        self.closed = True


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_download_streams_to_a_part_file_then_renames(server: str, tmp_path: Path):
    target = tmp_path / "models" / "model.bin"
    bars: list[RecordingBar] = []

    def progress(label: str, total: int | None) -> RecordingBar:
        bars.append(RecordingBar(target, total))
        return bars[-1]

    assert download(RemoteFile(f"{server}/model.bin", target, len(PAYLOAD), PAYLOAD_SHA), progress=progress)
    assert target.read_bytes() == PAYLOAD
    assert leftovers(target.parent) == ["model.bin"]
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700  # private, like the rest of the data directory
    [bar] = bars
    assert (bar.total, bar.counted, bar.closed) == (len(PAYLOAD), len(PAYLOAD), True)
    assert not bar.final_seen_early


def test_checksum_mismatch_keeps_nothing(server: str, tmp_path: Path):
    target = tmp_path / "model.bin"
    with pytest.raises(DownloadError, match="sha256 .* does not match the expected 0{64}"):
        download(RemoteFile(f"{server}/model.bin", target, sha256="0" * 64))
    assert leftovers(tmp_path) == []


def test_size_mismatch_keeps_nothing(server: str, tmp_path: Path):
    target = tmp_path / "model.bin"
    with pytest.raises(DownloadError, match=f"got {len(PAYLOAD)} bytes, expected 12"):
        download(RemoteFile(f"{server}/model.bin", target, size=12))
    assert leftovers(tmp_path) == []


def test_the_sha256_hugging_face_announces_is_checked(server: str, tmp_path: Path):
    good = tmp_path / "good.bin"
    assert download(RemoteFile(f"{server}/resolve/{PAYLOAD_SHA}", good))
    assert good.read_bytes() == PAYLOAD
    bad = tmp_path / "bad.bin"
    with pytest.raises(DownloadError, match="does not match"):
        download(RemoteFile(f"{server}/resolve/{'f' * 64}", bad))
    assert not bad.exists()


def test_optional_files_may_be_missing_but_required_ones_may_not(server: str, tmp_path: Path):
    assert download(RemoteFile(f"{server}/vocabulary.json", tmp_path / "v.json", optional=True)) is None
    with pytest.raises(DownloadError, match=r"HTTP 404.*copy it to .*v\.json"):
        download(RemoteFile(f"{server}/vocabulary.json", tmp_path / "v.json"))
    assert leftovers(tmp_path) == []


def test_a_refused_connection_says_to_copy_the_file_by_hand(tmp_path: Path):
    target = tmp_path / "model.bin"
    with pytest.raises(DownloadError) as caught:
        download(RemoteFile(refused_url(), target))
    message = str(caught.value)
    assert message.startswith("cannot reach 127.0.0.1: ")
    assert f"copy the file to {target} by hand" in message
    assert not target.exists()


def test_pull_skips_present_files_unless_forced(server: str, tmp_path: Path):
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(b"already here")
    bundle = ModelBundle("llm", "test", "", (RemoteFile(f"{server}/model.bin", first),
                                            RemoteFile(f"{server}/model.bin", second)), second)
    assert not bundle.present
    assert pull(bundle) == [second]
    assert bundle.present
    assert first.read_bytes() == b"already here"
    assert pull(bundle, force=True) == [first, second]
    assert first.read_bytes() == PAYLOAD


def test_model_paths_live_under_the_data_directory(tmp_path: Path):
    settings = Settings.model_validate({"data_dir": str(tmp_path), "stt": {"whisper_model": "small"}})
    assert models_dir(settings) == tmp_path / "models"
    assert default_gguf_path(settings) == tmp_path / "models" / "qwen2.5-1.5b-instruct-q4_k_m.gguf"
    assert whisper_model_dir(settings) == tmp_path / "models" / "whisper" / "small"
    assert whisper_model_dir(settings, "base.en") == tmp_path / "models" / "whisper" / "base.en"
    assert minilm_dir(settings) == tmp_path / "models" / "all-MiniLM-L6-v2"
    assert piper_voice_path(settings) == tmp_path / "models" / "piper" / "en_US-lessac-medium.onnx"
    chosen = Settings.model_validate({"data_dir": str(tmp_path), "tts": {"piper_voice": "/voices/x.onnx"}})
    assert piper_voice_path(chosen) == Path("/voices/x.onnx")


def test_catalogue_targets_match_the_path_helpers(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    bundles = catalogue(settings)
    assert set(bundles) == {"llm", "stt", "embedder", "tts", "turn"}
    assert bundles["turn"].marker == smart_turn_path(settings) == tmp_path / "models" / "turn" / "smart-turn-v3.2-cpu.onnx"
    # The pull checks the file against the checksum of the copy pipecat-ai ships (packaged_models.py).
    assert bundles["turn"].files[0].sha256 == SMART_TURN.files[SMART_TURN_FILE]
    assert bundles["turn"].files[0].url.startswith("https://huggingface.co/pipecat-ai/smart-turn-v3/")
    assert bundles["llm"].marker == default_gguf_path(settings)
    assert bundles["llm"].files[0].sha256 and bundles["llm"].files[0].size
    # The embedder `auto` picks first (all-mpnet-base-v2); MiniLM's when it is configured by name.
    assert bundles["embedder"].marker.parent == mpnet_dir(settings)
    assert {f.path.name for f in bundles["embedder"].files} == {"config.json", "tokenizer.json", "model.safetensors"}
    minilm = catalogue(settings.model_copy(update={"embedder": settings.embedder.model_copy(update={"provider": "minilm"})}))
    assert minilm["embedder"].marker.parent == minilm_dir(settings)
    assert bundles["tts"].marker == piper_voice_path(settings)
    assert {f.path.name for f in bundles["tts"].files} == {"en_US-lessac-medium.onnx", "en_US-lessac-medium.onnx.json"}
    stt = bundles["stt"]
    assert stt.marker.parent == whisper_model_dir(settings)
    assert all("huggingface.co/Systran/faster-whisper-base.en/resolve/" in f.url for f in stt.files)
    required = {f.path.name for f in stt.files if not f.optional}
    assert required == {"config.json", "model.bin", "tokenizer.json"}


def test_cli_pull_without_network_fails_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def offline(settings: Settings) -> dict[str, ModelBundle]:
        target = default_gguf_path(settings)
        return {"llm": ModelBundle("llm", "test model", "", (RemoteFile(refused_url(), target),), target)}

    monkeypatch.setattr("convers.cli.models.catalogue", offline)
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "models", "pull", "llm"])
    assert result.exit_code == 1
    assert "cannot reach 127.0.0.1" in result.output
    assert "by hand" in result.output
    assert "Traceback" not in result.output


def test_cli_pull_and_list(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def local(settings: Settings) -> dict[str, ModelBundle]:
        target = default_gguf_path(settings)
        return {"llm": ModelBundle("llm", "test model", "a test", (RemoteFile(f"{server}/model.bin", target),), target)}

    monkeypatch.setattr("convers.cli.models.catalogue", local)
    runner = CliRunner()
    before = runner.invoke(main, ["--data-dir", str(tmp_path), "models", "list"])
    assert before.exit_code == 0 and "missing" in before.output and "convers models pull llm" in before.output
    pulled = runner.invoke(main, ["--data-dir", str(tmp_path), "models", "pull", "all"])
    assert pulled.exit_code == 0, pulled.output
    assert default_gguf_path(Settings(data_dir=tmp_path)).read_bytes() == PAYLOAD
    again = runner.invoke(main, ["--data-dir", str(tmp_path), "models", "pull", "llm"])
    assert "already there" in again.output
    after = runner.invoke(main, ["--data-dir", str(tmp_path), "models", "list"])
    assert "present" in after.output


def test_cli_pull_rejects_an_unknown_kind(tmp_path: Path):
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "models", "pull", "vad"])
    assert result.exit_code == 2
    assert "llm" in result.output and "embedder" in result.output
