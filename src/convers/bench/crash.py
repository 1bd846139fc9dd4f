"""`convers bench kill9`: kill -9 a real `convers serve` at random moments; no acknowledged turn may be lost.

Each try starts the server on the same data directory (so every try after the first is a restart
after a kill), connects like the page, lets the greeting start, sends typed turns and kills the
process with SIGKILL. Half the tries kill right after a burst of typed turns: every other one of
those 0-300 ms after the last turn was sent (where an earlier version lost 19 of 30 echoed turns),
the rest 0.3-3 s after. The other tries kill a paced conversation at a random moment.
Then memory.db is opened as the restarted server would open it, and every turn whose echo said
`stored: true` (docs/protocol.md, "What an echo promises") must be in it.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from convers.bench.latency import describe, machine_info
from convers.bench.results import write_json_result
from convers.bench.served import ReferenceLlmProcess, ServeProcess


@dataclass(frozen=True)
class CrashConfig:
    """How many kills, and when they come."""

    tries: int = 20
    seed: int = 15
    # Every other try is a burst; the rest kill a paced conversation at a random moment.
    burst_turns: tuple[int, int] = (10, 30)
    # The conversation before the burst or the paced turns: the greeting starts, the connection's
    # memory warms up (each connection loads its own embedder).
    settle_s: tuple[float, float] = (1.0, 3.0)
    # Every other burst is killed within 0.3 s (where echoed turns were lost before), the rest
    # later, when some of the burst is committed and acknowledged and some is not yet.
    kill_after_burst_s: tuple[float, float] = (0.0, 0.3)
    kill_late_after_burst_s: tuple[float, float] = (0.3, 3.0)
    paced_gap_s: tuple[float, float] = (0.05, 0.8)
    paced_kill_s: tuple[float, float] = (0.2, 6.0)
    settings: tuple[str, ...] = ()


@dataclass
class _Client:
    sent_at: dict[str, float]
    echoes: dict[str, tuple[bool, float]]


async def _receive(ws: Any, client: _Client) -> None:
    try:
        async for message in ws:
            if isinstance(message, bytes):
                continue
            event = json.loads(message)
            if event.get("type") == "transcript" and event.get("final"):
                client.echoes[str(event["text"])] = (bool(event.get("stored")), time.monotonic())
    except Exception:  # noqa: BLE001 - the kill ends the connection however it ends
        return


async def one_try(serve: ServeProcess, index: int, rng: random.Random, config: CrashConfig) -> dict[str, Any]:
    """Start (or restart), talk, kill -9, and check the database against the echoes."""
    import websockets

    serve.start()
    ready_s = await serve.wait_ready()
    burst = index % 2 == 0
    client = _Client({}, {})
    ws = await websockets.connect(serve.url, ssl=serve.ssl_context(), max_queue=None)
    receiver = asyncio.create_task(_receive(ws, client))
    await ws.send(json.dumps({"type": "hello", "sample_rate": 16000, "format": "pcm16"}))
    nonce = rng.randrange(10**9)
    await asyncio.sleep(rng.uniform(*config.settle_s))
    prefix = f"kill9 try {index} ({nonce})"

    async def say(number: int) -> None:
        text = f"{prefix} turn {number}: my note number {number} is {rng.choice(['blue', 'green', 'red', 'seven'])}"
        client.sent_at[text] = time.monotonic()
        await ws.send(json.dumps({"type": "text", "text": text}))

    if burst:
        for number in range(rng.randint(*config.burst_turns)):
            await say(number)
        delay = rng.uniform(*(config.kill_after_burst_s if index % 4 == 0 else config.kill_late_after_burst_s))
        await asyncio.sleep(delay)
        scenario = {"kind": "burst", "kill_after_last_send_ms": round(delay * 1000, 1)}
    else:
        kill_after_s = rng.uniform(*config.paced_kill_s)
        kill_at = time.monotonic() + kill_after_s
        number = 0
        while time.monotonic() < kill_at:
            await say(number)
            number += 1
            await asyncio.sleep(min(rng.uniform(*config.paced_gap_s), max(0.0, kill_at - time.monotonic())))
        scenario = {"kind": "paced", "kill_after_first_send_s": round(kill_after_s, 2)}
    # What another process sees just before the kill: a turn seen here and missing after the kill
    # was lost by the kill itself, not by a late commit.
    visible_before_kill = _stored_user_turns(serve.data_dir / "memory.db", prefix)
    killed_at = time.monotonic()
    serve.kill9()
    await asyncio.gather(receiver, return_exceptions=True)
    await ws.close()
    acknowledged = [text for text, (stored, at) in client.echoes.items() if stored and at <= killed_at]
    present = _stored_user_turns(serve.data_dir / "memory.db", prefix)
    lost = [text for text in acknowledged if text not in present]
    echo_ms = [round((client.echoes[t][1] - client.sent_at[t]) * 1000, 1) for t in client.echoes if t in client.sent_at]
    return {
        "try": index,
        **scenario,
        "ready_s": round(ready_s, 2),
        "sent": len(client.sent_at),
        "echoed": len(client.echoes),
        "acknowledged": len(acknowledged),
        "echoed_not_stored": sum(1 for stored, _ in client.echoes.values() if not stored),
        "stored": len(present),
        "visible_before_kill": len(visible_before_kill),
        "lost_in_kill": sorted(visible_before_kill - present),
        "stored_unacknowledged": len(present - set(acknowledged)),
        "lost": lost,
        "echo_ms": describe(echo_ms),
    }


def _stored_user_turns(db: Path, prefix: str) -> set[str]:
    """What the restarted server will find: a fresh connection replays the WAL's committed frames."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT text FROM turns WHERE role = 'user' AND instr(text, ?) = 1", (prefix,))
        return {text for (text,) in rows}


async def run(config: CrashConfig, progress: Callable[[str], None], data_dir: Path | None = None) -> dict[str, Any]:
    rng = random.Random(config.seed)
    llm = ReferenceLlmProcess()
    llm.start()
    scratch = tempfile.TemporaryDirectory(prefix="convers-kill9-")
    root = data_dir or Path(scratch.name)
    serve = ServeProcess(root / "data", llm.base_url, config.settings, log_path=root / "serve.log")
    tries: list[dict[str, Any]] = []
    try:
        for index in range(config.tries):
            result = await one_try(serve, index, rng, config)
            tries.append(result)
            progress(f"  try {index + 1}/{config.tries} ({result['kind']}): sent {result['sent']}, "
                     f"acknowledged {result['acknowledged']}, stored {result['stored']}, lost {len(result['lost'])}")
        # One more restart: the database the last kill left behind must still open and check out.
        serve.start()
        final_ready_s = await serve.wait_ready()
        serve.stop()
        with sqlite3.connect(root / "data" / "memory.db") as conn:
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        if serve.process is not None and serve.process.poll() is None:
            serve.kill9()
        llm.stop()
        scratch.cleanup()
    all_echo_ms = [t["echo_ms"] for t in tries]
    return {
        "benchmark": "kill9",
        "config": asdict(config),
        "machine": machine_info(),
        "tries": tries,
        "summary": {
            "tries": len(tries),
            "sent": sum(t["sent"] for t in tries),
            "acknowledged": sum(t["acknowledged"] for t in tries),
            "echoed_not_stored": sum(t["echoed_not_stored"] for t in tries),
            "lost_acknowledged": sum(len(t["lost"]) for t in tries),
            "stored_unacknowledged": sum(t["stored_unacknowledged"] for t in tries),
            "echo_p50_ms_per_try": [e.get("p50") for e in all_echo_ms],
            "restart_ready_s": describe([t["ready_s"] for t in tries[1:]] + [final_ready_s]),
            "integrity_after_last_kill": integrity,
        },
        "goals": {"no_acknowledged_turn_lost": sum(len(t["lost"]) for t in tries) == 0},
    }


def print_summary(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    summary = result["summary"]
    echo(f"kill -9 x {summary['tries']}: {summary['sent']} turns sent, {summary['acknowledged']} acknowledged, "
         f"{summary['lost_acknowledged']} acknowledged turns lost, {summary['echoed_not_stored']} echoed as not stored, "
         f"{summary['stored_unacknowledged']} stored before their echo left; integrity {summary['integrity_after_last_kill']}")


def write_result(result: dict[str, Any], out: Path | None = None) -> Path:
    return write_json_result(result, out, "kill9")


def parse_settings(items: Sequence[str]) -> tuple[str, ...]:
    for item in items:
        if "=" not in item:
            raise ValueError(f"--serve-set takes KEY=VALUE, got {item!r}")
    return tuple(items)
