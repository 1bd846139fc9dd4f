"""`convers bench soak`: N browser-like clients talk to one real `convers serve` for M minutes.

Each client speaks (espeak-ng questions streamed as 20 ms microphone frames in real time) two turns
in three and types the third, waits for the reply to play out on its simulated speaker (reporting
`played` like the page), and goes on until the time is up. Reported: errors (error events, turns
without an echo or a reply, dropped connections), the server's resident memory at the start and end
(and every 5 s), and time to first audio of spoken turns in the first and the last minute, so a
leak or a slowdown over a long conversation shows as a number. It is a benchmark, not a test:
it prints and writes JSON (bench/results/soak-<time>.json).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from convers.bench.latency import (
    FRAME_S,
    MIC_RATE,
    QUESTIONS,
    Utterance,
    _frame_index,
    describe,
    machine_info,
    speak,
    wait_until,
)
from convers.bench.latency_ws import BrowserLikeClient, _microphone, _receive, _speaker
from convers.bench.results import write_json_result
from convers.bench.served import ReferenceLlmProcess, ServeProcess

TYPED = ("What should I cook tonight?", "Tell me something nice about Tuesdays.", "How far away is the moon?")


@dataclass(frozen=True)
class SoakConfig:
    """How many clients, for how long, and how patient a turn is."""

    clients: int = 2
    minutes: float = 30.0
    # Silence between the end of the agent's reply and the next turn.
    gap_s: float = 0.8
    # Client i connects i x this later. Users do not arrive in lock-step: two clients started
    # together spoke at the same moments for the first minutes (the second 1.1-1.2 s to first
    # audio, the first 0.6-0.9 s), so the first minute measured their collision, not drift.
    stagger_s: float = 4.0
    # A real model's reply may play for 40 s (llm.max_tokens 150).
    turn_timeout_s: float = 60.0
    rss_every_s: float = 5.0
    settings: tuple[str, ...] = ()


@dataclass
class TurnRecord:
    client: int
    kind: str  # spoken | typed
    at_s: float  # since the soak began
    ttfa_ms: float | None = None
    error: str | None = None


def _over(client: BrowserLikeClient, turn: int) -> bool:
    """The reply of `turn` is done: flushed, or fully generated (metrics came) and played out."""
    return turn <= client.flushed_through or (turn in client.metrics and not client.queued(turn))


def _first_audio(client: BrowserLikeClient, turn: int) -> float | None:
    return next((at for t, at in client.received if t == turn), None)


async def _spoken_turn(client: BrowserLikeClient, utterance: Utterance, config: SoakConfig) -> tuple[int | None, float | None, str | None]:
    assert client.mic_started_at is not None
    heard = len(client.echoes)
    frame_index = _frame_index(client.mic_time_s + config.gap_s)
    true_end = client.mic_started_at + frame_index * FRAME_S + float(utterance.speech_end_s)
    client.scheduled.append((frame_index, utterance.frame.pcm))

    def answered() -> list[int]:
        # The user turns this speech became (the VAD may split it) whose reply has sounded.
        return [int(e["turn"]) for _, e in client.echoes[heard:] if _first_audio(client, int(e["turn"])) is not None]

    if not await wait_until(lambda: bool(answered()), config.turn_timeout_s + utterance.frame.duration_s):
        return None, None, "no transcript" if len(client.echoes) == heard else "no reply audio"
    turn = max(answered())
    first = _first_audio(client, turn)
    assert first is not None
    return turn, round((first - true_end) * 1000, 1), None


async def _typed_turn(socket: Any, client: BrowserLikeClient, text: str, config: SoakConfig) -> tuple[int | None, float | None, str | None]:
    heard = len(client.echoes)
    await asyncio.sleep(config.gap_s)
    sent = time.monotonic()
    await socket.send(json.dumps({"type": "text", "text": text}))

    def echo_turn() -> int | None:
        return next((int(e["turn"]) for _, e in client.echoes[heard:] if e.get("text") == text), None)

    if not await wait_until(lambda: echo_turn() is not None, config.turn_timeout_s):
        return None, None, "no echo"
    turn = echo_turn()
    assert turn is not None
    if not await wait_until(lambda: _first_audio(client, turn) is not None, config.turn_timeout_s):
        return turn, None, "no reply audio"
    first = _first_audio(client, turn)
    assert first is not None
    return turn, round((first - sent) * 1000, 1), None


async def _one_client(
    index: int, serve: ServeProcess, utterances: Sequence[Utterance], config: SoakConfig, began: float, deadline: float,
    records: list[TurnRecord], progress: Callable[[str], None],
) -> dict[str, Any]:
    import websockets

    await asyncio.sleep(index * config.stagger_s)
    client = BrowserLikeClient()
    socket = await websockets.connect(serve.url, ssl=serve.ssl_context(), max_size=None, max_queue=None)
    dropped = None
    async with socket:
        await socket.send(json.dumps({"type": "hello", "sample_rate": MIC_RATE, "format": "pcm16"}))
        tasks = [asyncio.create_task(job(socket, client)) for job in (_receive, _microphone, _speaker)]
        try:
            await wait_until(lambda: client.mic_started_at is not None, 10)
            await asyncio.sleep(1.5)  # the greeting
            greeted = {t for t, _ in client.received}
            await wait_until(lambda: all(_over(client, t) for t in greeted), config.turn_timeout_s)
            number = 0
            while time.monotonic() < deadline:
                if tasks[0].done():
                    dropped = "the server closed the connection"
                    break
                kind = "typed" if number % 3 == 2 else "spoken"
                at_s = round(time.monotonic() - began, 2)
                if kind == "spoken":
                    turn, ttfa, error = await _spoken_turn(client, utterances[number % len(utterances)], config)
                else:
                    turn, ttfa, error = await _typed_turn(socket, client, f"{TYPED[number % len(TYPED)]} ({index}.{number})", config)
                if turn is not None and error is None and not await wait_until(functools.partial(_over, client, turn), config.turn_timeout_s):
                    error = "reply never ended"
                records.append(TurnRecord(index, kind, at_s, ttfa, error))
                if error:
                    progress(f"  client {index} turn {number} ({kind}): {error}")
                number += 1
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {"client": index, "turns": number, "error_events": [e for _, e in client.errors], "dropped": dropped}


async def _sample_rss(serve: ServeProcess, samples: list[tuple[float, int | None]], began: float, every_s: float) -> None:
    while True:
        samples.append((round(time.monotonic() - began, 1), serve.rss_bytes()))
        await asyncio.sleep(every_s)


def _minute_p50(records: Sequence[TurnRecord], kind: str, minute: int) -> float | None:
    values = [r.ttfa_ms for r in records if r.kind == kind and r.ttfa_ms is not None and int(r.at_s // 60) == minute]
    return round(statistics.median(values), 1) if values else None


async def run(config: SoakConfig, progress: Callable[[str], None]) -> dict[str, Any]:
    llm = ReferenceLlmProcess()
    llm.start()
    scratch = tempfile.TemporaryDirectory(prefix="convers-soak-")
    root = Path(scratch.name)
    serve = ServeProcess(root / "data", llm.base_url, config.settings, log_path=root / "serve.log")
    try:
        utterances = [speak(q, root, 160) for q in QUESTIONS]
        serve.start()
        ready_s = await serve.wait_ready()
        rss_ready = serve.rss_bytes()
        progress(f"  server ready in {ready_s:.1f} s, RSS {_mb(rss_ready)} MB; {config.clients} clients for {config.minutes:g} min")
        began = time.monotonic()
        deadline = began + config.minutes * 60
        records: list[TurnRecord] = []
        samples: list[tuple[float, int | None]] = []
        sampler = asyncio.create_task(_sample_rss(serve, samples, began, config.rss_every_s))
        clients = await asyncio.gather(
            *(_one_client(i, serve, utterances, config, began, deadline, records, progress) for i in range(config.clients)),
            return_exceptions=True,
        )
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        rss_end = serve.rss_bytes()
        alive = serve.process is not None and serve.process.poll() is None
        serve.stop()
    finally:
        if serve.process is not None and serve.process.poll() is None:
            serve.kill9()
        llm.stop()
        scratch.cleanup()
    client_results = [c if isinstance(c, dict) else {"failed": repr(c)} for c in clients]
    # Start: the first sample once every client had its greeting (the first 30 s are warm-up).
    rss_start = next((rss for at, rss in samples if at >= 30 and rss is not None), rss_ready)
    last_minute = max(0, math.ceil(config.minutes) - 1)
    first = _minute_p50(records, "spoken", 0)
    last = _minute_p50(records, "spoken", last_minute)
    error_events = [e for c in client_results for e in c.get("error_events", [])]
    turn_errors = [asdict(r) for r in records if r.error]
    failed_clients = [c for c in client_results if "failed" in c or c.get("dropped")]
    summary: dict[str, Any] = {
        "clients": config.clients,
        "minutes": config.minutes,
        "turns": len(records),
        "spoken_turns": sum(r.kind == "spoken" for r in records),
        "typed_turns": sum(r.kind == "typed" for r in records),
        "errors": len(error_events) + len(turn_errors) + len(failed_clients) + (0 if alive else 1),
        "error_events": error_events,
        "turn_errors": turn_errors,
        "client_failures": failed_clients,
        "server_alive_at_end": alive,
        "rss_mb": {"ready": _mb(rss_ready), "start": _mb(rss_start), "end": _mb(rss_end),
                   "growth": None if rss_start is None or rss_end is None else _mb(rss_end - rss_start)},
        "ttfa_spoken_ms": describe([r.ttfa_ms for r in records if r.kind == "spoken"]),
        "ttfa_typed_ms": describe([r.ttfa_ms for r in records if r.kind == "typed"]),
        "ttfa_spoken_p50_first_minute_ms": first,
        "ttfa_spoken_p50_last_minute_ms": last,
        "ttfa_p50_drift_pct": None if not first or last is None else round((last - first) / first * 100, 1),
        "ttfa_spoken_p50_per_minute_ms": [_minute_p50(records, "spoken", m) for m in range(math.ceil(config.minutes))],
    }
    return {
        "benchmark": "soak",
        "config": asdict(config),
        "machine": machine_info(),
        "summary": summary,
        "rss_samples": [{"at_s": at, "rss_mb": _mb(rss)} for at, rss in samples],
        "turns": [asdict(r) for r in records],
        "goals": {
            "no_errors": summary["errors"] == 0,
            "rss_growth_under_50_mb": None if summary["rss_mb"]["growth"] is None else summary["rss_mb"]["growth"] < 50,
            "ttfa_drift_under_10_pct": None if summary["ttfa_p50_drift_pct"] is None else abs(summary["ttfa_p50_drift_pct"]) < 10,
        },
    }


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def print_summary(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    s = result["summary"]
    echo(f"soak: {s['clients']} clients x {s['minutes']:g} min, {s['turns']} turns ({s['spoken_turns']} spoken, "
         f"{s['typed_turns']} typed), {s['errors']} errors")
    echo(f"  RSS MB: ready {s['rss_mb']['ready']}, start {s['rss_mb']['start']}, end {s['rss_mb']['end']} "
         f"(growth {s['rss_mb']['growth']})")
    echo(f"  TTFA spoken p50 {s['ttfa_spoken_ms']['p50']} ms (p95 {s['ttfa_spoken_ms']['p95']}), first minute "
         f"{s['ttfa_spoken_p50_first_minute_ms']}, last minute {s['ttfa_spoken_p50_last_minute_ms']} "
         f"(drift {s['ttfa_p50_drift_pct']} %); typed p50 {s['ttfa_typed_ms']['p50']} ms")
    echo(f"  goals: {result['goals']}")


def write_result(result: dict[str, Any], out: Path | None = None) -> Path:
    return write_json_result(result, out, "soak")
