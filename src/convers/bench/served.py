"""A real `convers serve` in a subprocess on 127.0.0.1, for benchmarks that kill, restart or soak it.

The server gets its own data directory and the reference LLM (`convers bench reference-llm`, also a
subprocess), so a run measures convers itself: its memory, its transport, its voice. Linux only
(the resident memory is read from /proc).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

# Model loading and warm-up (Whisper, Piper, MiniLM, Silero) on 2 busy cores.
READY_TIMEOUT_S = 180.0


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def convers_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "convers", *args]


@dataclass
class ReferenceLlmProcess:
    """`convers bench reference-llm` on a free port: a model of fixed, known speed."""

    ttft_ms: float = 150.0
    tokens_per_s: float = 30.0
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        self.process = subprocess.Popen(
            convers_command("bench", "reference-llm", "--port", str(self.port), "--ttft-ms", str(self.ttft_ms),
                            "--tokens-per-s", str(self.tokens_per_s)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the reference LLM exited with {self.process.returncode} on port {self.port}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the reference LLM did not listen on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class ServeProcess:
    """One `convers serve` on 127.0.0.1; `start` again after `kill9` is a restart on the same data."""

    data_dir: Path
    llm_url: str
    settings: Sequence[str] = ()  # extra KEY=VALUE for --set
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        sets = [arg for item in (f"llm.base_url={self.llm_url}", *self.settings) for arg in ("--set", item)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - held for the process's lifetime
        self.process = subprocess.Popen(
            convers_command("--data-dir", str(self.data_dir), *sets, "serve", "--host", "127.0.0.1", "--port", str(self.port)),
            stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env,
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        token = (self.data_dir / "access_token").read_text(encoding="utf-8").strip()
        return f"wss://127.0.0.1:{self.port}/ws?token={token}"

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts exactly this server's self-signed certificate."""
        context = ssl.create_default_context(cafile=str(self.data_dir / "tls" / "cert.pem"))
        context.check_hostname = False  # the certificate names the LAN address and localhost
        return context

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Seconds until a WebSocket hello is answered with `ready` (models loaded, warm-up done)."""
        import websockets

        started = time.monotonic()
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"convers serve exited with {self.process.returncode}; see {self.log_path}")
            try:
                async with asyncio.timeout(5):
                    async with websockets.connect(self.url, ssl=self.ssl_context()) as ws:
                        await ws.send(json.dumps({"type": "hello", "sample_rate": 16000, "format": "pcm16"}))
                        while json.loads(await ws.recv()).get("type") != "ready":
                            pass
                return time.monotonic() - started
            except (OSError, TimeoutError, FileNotFoundError, ValueError, websockets.exceptions.WebSocketException):
                await asyncio.sleep(0.25)
        raise RuntimeError(f"convers serve did not answer a hello within {timeout_s} s; see {self.log_path}")

    def rss_bytes(self) -> int | None:
        """Resident memory of the server process (VmRSS), or None when it is gone."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed but what the kernel already has."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._close_log()

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

