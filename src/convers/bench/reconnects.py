"""Memory use of `convers serve` across reconnects and concurrent sessions (a benchmark, not a test).

Starts a real `convers serve` (default providers: Whisper tiny.en, Piper, Silero, MiniLM, SQLite
memory) in a child process against the reference LLM server, and drives it as the page would:
connect, hello, one spoken question in real time (espeak-ng), wait for the whole reply, close.
RSS is the server process's own (/proc/PID/status VmRSS), read after each cycle without forcing a
garbage collection, so what a session leaves behind until a full collection shows.

Goals (issue 14): RSS after 30 cycles within 60 MB of RSS after the first; 8 concurrent sessions
(each with a spoken turn) under 900 MB.

    python -m convers.bench.reconnects --cycles 30 --concurrent 8 --out bench/results/reconnects.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from convers.bench.latency import Utterance, machine_info, speak
from convers.bench.reference_llm import ReferenceLlmServer, ReferenceTiming
from convers.bench.results import write_json_result

FRAME_S = 0.02
MIC_RATE = 16000
QUESTION = "What should I cook for dinner tonight?"
GOAL_GROWTH_MB = 60.0
GOAL_CONCURRENT_MB = 900.0
START_TIMEOUT_S = 180.0
TURN_TIMEOUT_S = 90.0


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for process {pid}")


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MB (Linux)."""
    return _status(pid, "VmRSS") / 1024


def thread_count(pid: int) -> int:
    return _status(pid, "Threads")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def running_serve(data_dir: Path, llm_url: str, port: int, extra: list[str]) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`convers serve` on 127.0.0.1:port without a token, until the block ends; waits until it listens."""
    command = [
        sys.executable, "-m", "convers", "--data-dir", str(data_dir), "--set", f"llm.base_url={llm_url}",
        "--set", "events.enabled=false", *extra, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-auth",
    ]
    # Blocking, but once, before anything is measured.
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115, ASYNC230 - closed below, after the process
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"convers serve exited with {process.returncode}: see {data_dir / 'serve.log'}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"convers serve did not listen within {START_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.25)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _insecure_context() -> ssl.SSLContext:
    # The server's own self-signed certificate on 127.0.0.1: nothing to verify it against here.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def spoken_turn(
    url: str, question: Utterance, replied: asyncio.Event | None = None, hold: asyncio.Event | None = None
) -> dict[str, Any]:
    """One connection: hello, the question in real time, the whole reply (sets `replied`); then, once
    `hold` is set, close."""
    import websockets

    pcm = question.frame.pcm
    step = int(MIC_RATE * FRAME_S) * 2
    silence = b"\x00\x00" * int(MIC_RATE * FRAME_S)
    lead = [silence] * 15
    tail = [silence] * 60  # 1.2 s: past the end-of-turn silence
    frames = lead + [pcm[i : i + step].ljust(step, b"\x00") for i in range(0, len(pcm), step)] + tail
    heard = ""
    audio_bytes = 0
    out_rate = 24000
    async with websockets.connect(url, ssl=_insecure_context(), max_size=None, max_queue=None) as ws:
        await ws.send(json.dumps({"type": "hello", "sample_rate": MIC_RATE, "format": "pcm16"}))
        done = asyncio.Event()
        errors: list[str] = []

        async def receive() -> None:
            nonlocal heard, audio_bytes, out_rate
            async for message in ws:
                if isinstance(message, bytes):
                    audio_bytes += len(message) - 8
                    continue
                event = json.loads(message)
                if event.get("type") == "ready":
                    out_rate = int(event["audio_out"]["sample_rate"])
                elif event.get("type") == "transcript" and event.get("final"):
                    heard = event.get("text", "")
                elif event.get("type") == "metrics" and event.get("turn", 0) >= 1:
                    done.set()  # the reply is fully generated and synthesised
                elif event.get("type") == "error":
                    errors.append(f"{event.get('code')}: {event.get('message')}")

        receiver = asyncio.create_task(receive())
        started = time.monotonic()
        for index, frame in enumerate(frames):
            await ws.send(frame)
            # Real time: the VAD and the end-of-turn rule judge audio by when it arrives.
            await asyncio.sleep(max(0.0, started + (index + 1) * FRAME_S - time.monotonic()))
        # Keep the microphone open (silence) until the reply is done, as a page does.
        async with asyncio.timeout(TURN_TIMEOUT_S):
            while not done.is_set():
                await ws.send(silence)
                await asyncio.sleep(FRAME_S)
        if replied is not None:
            replied.set()
        while hold is not None and not hold.is_set():
            await ws.send(silence)  # an open page's microphone, while the others finish
            await asyncio.sleep(FRAME_S)
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
    return {"heard": heard, "audio_s": round(audio_bytes / 2 / out_rate, 2), "errors": errors}


async def run(cycles: int, concurrent: int, extra: list[str], data_dir: Path) -> dict[str, Any]:
    question = speak(QUESTION, data_dir)
    port = free_port()
    url = f"wss://127.0.0.1:{port}/ws"
    async with ReferenceLlmServer(ReferenceTiming()) as llm, running_serve(data_dir, llm.base_url, port, extra) as server:
        started_mb = rss_mb(server.pid)
        per_cycle: list[float] = []
        threads: list[int] = []
        turns: list[dict[str, Any]] = []
        for _ in range(cycles):
            turns.append(await spoken_turn(url, question))
            await asyncio.sleep(0.5)  # the server finishes the session (memory writes) after the close
            per_cycle.append(round(rss_mb(server.pid), 1))
            threads.append(thread_count(server.pid))
        hold = asyncio.Event()
        before_concurrent = rss_mb(server.pid)
        replies = [asyncio.Event() for _ in range(concurrent)]
        clients = [asyncio.create_task(spoken_turn(url, question, r, hold)) for r in replies]
        peak = before_concurrent
        # All speak at once; the peak is sampled until every one has had its whole reply.
        while not all(r.is_set() for r in replies):
            if failed := [c for c in clients if c.done() and c.exception() is not None]:
                raise failed[0].exception()  # type: ignore[misc]
            peak = max(peak, rss_mb(server.pid))
            await asyncio.sleep(0.1)
        all_open_mb = rss_mb(server.pid)  # every session open, each after a spoken turn
        peak = max(peak, all_open_mb)
        hold.set()
        concurrent_turns = await asyncio.gather(*clients)
        await asyncio.sleep(0.5)
        after_concurrent = rss_mb(server.pid)
    growth = per_cycle[-1] - per_cycle[0] if per_cycle else None
    return {
        "kind": "reconnects",
        "machine": machine_info(),
        "question": QUESTION,
        "rss_mb": {
            "at_start": round(started_mb, 1),
            "after_each_cycle": per_cycle,
            "after_first_cycle": per_cycle[0] if per_cycle else None,
            "after_last_cycle": per_cycle[-1] if per_cycle else None,
            "growth_first_to_last": round(growth, 1) if growth is not None else None,
            "concurrent_sessions": concurrent,
            "before_concurrent": round(before_concurrent, 1),
            "concurrent_all_open": round(all_open_mb, 1),
            "concurrent_peak": round(peak, 1),
            "after_concurrent_closed": round(after_concurrent, 1),
        },
        # Native threads of the server after each cycle: a step in RSS that comes with a new worker
        # thread is that thread's first use (its stack and native caches), not a session left behind.
        "threads_after_each_cycle": threads,
        "goals": {
            f"growth_within_{GOAL_GROWTH_MB:.0f}_mb": growth is not None and growth <= GOAL_GROWTH_MB,
            f"concurrent_under_{GOAL_CONCURRENT_MB:.0f}_mb": peak < GOAL_CONCURRENT_MB,
        },
        "turns": {
            "cycles_heard": [t["heard"] for t in turns],
            "cycle_errors": sorted({e for t in turns for e in t["errors"]}),
            "concurrent_heard": [t["heard"] for t in concurrent_turns],
            "concurrent_errors": sorted({e for t in concurrent_turns for e in t["errors"]}),
        },
        "llm_requests": len(llm.requests),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="JSON result (default bench/results/reconnects-<time>.json)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="a setting for the server, KEY=VALUE")
    args = parser.parse_args(argv)
    extra = [item for pair in args.sets for item in ("--set", pair)]
    with tempfile.TemporaryDirectory(prefix="convers-reconnects-") as folder:
        os.chmod(folder, 0o700)
        result = asyncio.run(run(args.cycles, args.concurrent, extra, Path(folder)))
    path = write_json_result(result, args.out, "reconnects")
    print(json.dumps({"rss_mb": result["rss_mb"] | {"after_each_cycle": "..."}, "goals": result["goals"],
                      "errors": result["turns"]["cycle_errors"] + result["turns"]["concurrent_errors"]}, indent=2))
    print(f"written to {path}")
    return 0 if all(result["goals"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
