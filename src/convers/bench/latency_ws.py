"""The latency benchmark against a running `convers serve`, as the browser page would drive it.

A WebSocket client sends `hello`, then 20 ms PCM16 frames in real time (silence, and the spoken
questions), plays the agent's audio on a simulated speaker in real time, honours pause/resume/flush
per turn and reports `played` every 100 ms. Times are taken on this side of the socket: TTFA is
the true end of the question to the first agent frame received. The stage split comes from the
marks in the server's `metrics` message (milliseconds from its VAD's end of speech), read by the
same function as the loopback run's (bench/stages.py); over a socket the LLM stage holds the
server's HTTP to its model, so the overhead is not separable from it and is left null; see
docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convers.audio import StreamResampler, float32_to_pcm16, pcm16_to_float32
from convers.bench.echo import Room, RoomEcho
from convers.bench.latency_script import (
    FRAME_S,
    MIC_RATE,
    LatencyConfig,
    TurnPlan,
    Utterance,
    frame_index,
    wait_until,
)
from convers.bench.stages import (
    check_goals,
    marks_of_metrics,
    ms,
    speculated,
    summarize,
    turn_figures,
)
from convers.contracts.audio import AudioFrame

# A speakerphone client hears its speaker this long after playing it (before the room's own delay).
SPEAKER_LATENCY_S = 0.04


@dataclass
class _Received:
    turn: int
    at: float
    pcm: bytes
    position: int = 0


@dataclass
class BrowserLikeClient:
    """Microphone, speaker and protocol state of one simulated browser page."""

    out_rate: int = 16000
    mic_started_at: float | None = None
    frames_sent: int = 0
    scheduled: list[tuple[int, bytes]] = field(default_factory=list)
    received: list[tuple[int, float]] = field(default_factory=list)  # (turn, time) per audio frame
    records: list[tuple[str, int, float]] = field(default_factory=list)  # (flush|pause|resume, turn, time)
    transcripts: list[tuple[float, str]] = field(default_factory=list)
    metrics: dict[int, dict[str, Any]] = field(default_factory=dict)
    played: dict[int, float] = field(default_factory=dict)
    flushed_through: int = 0
    paused: set[int] = field(default_factory=set)
    queue: deque[_Received] = field(default_factory=deque)
    errors: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    echoes: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # final transcripts, whole
    # What the speaker played, from the microphone's start, at `out_rate` (a speakerphone's echo source).
    tape: bytearray = field(default_factory=bytearray)
    tape_read: int = 0
    aec: str | None = None  # what `ready` said of echo cancellation

    @property
    def mic_time_s(self) -> float:
        return self.frames_sent * FRAME_S

    def queued(self, turn: int) -> bool:
        return any(item.turn == turn for item in self.queue)


async def run_websocket(
    url: str,
    config: LatencyConfig,
    speculation: bool,
    utterances: Sequence[Utterance],
    interruptions: Sequence[Utterance],
    progress: Callable[[str], None],
    min_barge_in_speech_s: float = 0.25,
) -> dict[str, Any]:
    """One benchmark run through a `convers serve` WebSocket (wss://HOST:PORT/ws?token=...)."""
    import websockets

    context = None
    if url.startswith("wss://"):
        # The server's certificate is self-signed for its LAN address; this is a local measurement.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    client = BrowserLikeClient()
    try:
        socket = await websockets.connect(url, ssl=context, max_size=None)
    except (OSError, websockets.exceptions.WebSocketException) as error:
        raise RuntimeError(f"cannot connect to {url}: {error}; is `convers serve` running and the token right?") from None
    async with socket:
        # A speakerphone that asks the server to cancel its echo sends what it played beside each
        # microphone frame (the page's way: docs/protocol.md, `echo_reference`).
        reference = config.speakerphone_echo_db is not None and not config.client_aec
        await socket.send(json.dumps({"type": "hello", "sample_rate": MIC_RATE, "format": "pcm16",
                                      "aec": config.client_aec, "echo_reference": reference}))
        room = None
        if config.speakerphone_echo_db is not None:
            impulse = Room(120, 0.3, config.speakerphone_echo_db).impulse(np.random.default_rng(5))
            room = RoomEcho(impulse, 10 ** (config.speakerphone_echo_db / 20))
        tasks = [
            asyncio.create_task(_receive(socket, client)),
            asyncio.create_task(_microphone(socket, client, room, reference)),
            asyncio.create_task(_speaker(socket, client)),
        ]
        try:
            plans = await _script(client, config, utterances, interruptions, progress)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return _figures(client, plans, min_barge_in_speech_s)


async def _receive(socket: Any, client: BrowserLikeClient) -> None:
    async for message in socket:
        now = time.monotonic()
        if isinstance(message, bytes):
            turn, _seq = struct.unpack("<II", message[:8])
            client.received.append((turn, now))
            if turn > client.flushed_through:
                client.queue.append(_Received(turn, now, message[8:]))
            continue
        data = json.loads(message)
        kind = data.get("type")
        if kind == "ready":
            client.out_rate = int(data["audio_out"]["sample_rate"])
            client.aec = data.get("aec")
        elif kind == "transcript" and data.get("final"):
            client.transcripts.append((now, str(data.get("text", ""))))
            client.echoes.append((now, data))
        elif kind == "error":
            client.errors.append((now, data))
        elif kind == "metrics":
            client.metrics[int(data["turn"])] = data
        elif kind in ("flush", "pause", "resume"):
            turn = int(data["turn"])
            client.records.append((kind, turn, now))
            if kind == "flush":
                client.flushed_through = max(client.flushed_through, turn)
                client.queue = deque(item for item in client.queue if item.turn > turn)
            elif kind == "pause":
                client.paused.add(turn)
            else:
                client.paused.discard(turn)


async def _microphone(socket: Any, client: BrowserLikeClient, room: RoomEcho | None = None,
                      reference: bool = False) -> None:
    frame_samples = int(MIC_RATE * FRAME_S)
    frame_bytes = frame_samples * 2
    start = time.monotonic()
    client.mic_started_at = start
    active: bytearray = bytearray()
    to_mic_rate: StreamResampler | None = None
    while True:
        index = client.frames_sent
        while client.scheduled and client.scheduled[0][0] <= index:
            active.extend(client.scheduled.pop(0)[1])
        pcm = bytes(active[:frame_bytes]).ljust(frame_bytes, b"\x00")
        del active[:frame_bytes]
        delay = start + (index + 1) * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if room is not None:
            # The speaker's sound of this frame's 20 ms reaches the microphone through the room.
            if to_mic_rate is None or to_mic_rate.in_rate != client.out_rate:
                to_mic_rate = StreamResampler(client.out_rate, MIC_RATE)
            # Read a sound card's output latency behind the speaker's clock, so what was played is
            # on the tape by then (the speaker ticks every 10 ms): a hole in the echo would be a
            # sound no canceller can predict from what was played.
            end = max(0, round(((index + 1) * FRAME_S - SPEAKER_LATENCY_S) * client.out_rate) * 2)
            played = bytes(client.tape[client.tape_read : end]).ljust(max(0, end - client.tape_read), b"\x00")
            client.tape_read = max(client.tape_read, end)
            source = pcm16_to_float32(to_mic_rate.push(AudioFrame(played, client.out_rate)).pcm)
            source = np.pad(source, (0, max(0, frame_samples - len(source))))[:frame_samples]
            pcm = float32_to_pcm16(pcm16_to_float32(pcm) + room.push(source))
            if reference:
                both = np.empty(2 * frame_samples, dtype="<i2")
                both[0::2] = np.frombuffer(pcm, dtype="<i2")
                both[1::2] = np.frombuffer(float32_to_pcm16(source), dtype="<i2")
                pcm = both.tobytes()
        await socket.send(pcm)
        client.frames_sent = index + 1


async def _speaker(socket: Any, client: BrowserLikeClient) -> None:
    """Plays like a sound card: as many samples as time has passed, whatever the tick's lateness
    (silence when nothing plays), so the tape of what it played keeps the microphone's clock."""
    tick_s = 0.01
    reported: dict[int, float] = {}
    last = time.monotonic()
    owed = 0.0
    while True:
        await asyncio.sleep(tick_s)
        now = time.monotonic()
        owed += (now - last) * client.out_rate
        last = now
        samples = int(owed)
        owed -= samples
        out = bytearray()
        while len(out) < samples * 2 and client.queue and client.queue[0].turn not in client.paused:
            head = client.queue[0]
            piece = head.pcm[head.position : head.position + samples * 2 - len(out)]
            if head.turn not in client.played:  # a turn starts playing: the page reports 0 (docs/protocol.md)
                client.played[head.turn] = 0.0
                await socket.send(json.dumps({"type": "played", "turn": head.turn, "ms": 0}))
            head.position += len(piece)
            out.extend(piece)
            client.played[head.turn] += len(piece) / 2 / client.out_rate * 1000
            if head.position >= len(head.pcm):
                client.queue.popleft()
            played = client.played[head.turn]
            drained = not client.queued(head.turn)
            if drained or played - reported.get(head.turn, 0.0) >= 100:
                reported[head.turn] = played
                await socket.send(json.dumps({"type": "played", "turn": head.turn, "ms": round(played)}))
        if client.mic_started_at is not None:
            out.extend(bytes(samples * 2 - len(out)))
            client.tape.extend(out)


def _audible(client: BrowserLikeClient, turn: int) -> bool:
    return turn not in client.metrics or client.queued(turn)


async def _script(
    client: BrowserLikeClient,
    config: LatencyConfig,
    utterances: Sequence[Utterance],
    interruptions: Sequence[Utterance],
    progress: Callable[[str], None],
) -> list[TurnPlan]:
    await wait_until(lambda: client.mic_started_at is not None, 10)
    # The server may greet first: let the greeting play out so it is not taken for a reply.
    await asyncio.sleep(1.5)
    await wait_until(lambda: not any(_audible(client, t) for t in {t for t, _ in client.received}), config.turn_timeout_s)
    plans: list[TurnPlan] = []
    previous: int | None = None
    for index in range(config.turns):
        barge = bool(previous is not None and config.barge_in_every and index % config.barge_in_every == config.barge_in_every - 1)
        if barge:
            assert previous is not None
            utterance = interruptions[(index // config.barge_in_every) % len(interruptions)]
            turn = previous
            await wait_until(
                lambda turn=turn: client.played.get(turn, 0) >= config.barge_after_ms or not _audible(client, turn),  # type: ignore[misc]
                config.turn_timeout_s,
            )
            barge = _audible(client, turn)
            at_s = client.mic_time_s + FRAME_S
        else:
            utterance = utterances[index % len(utterances)]
            if previous is not None:
                turn = previous
                await wait_until(lambda turn=turn: not _audible(client, turn), config.turn_timeout_s)  # type: ignore[misc]
            at_s = client.mic_time_s + config.gap_s
        first_frame = frame_index(at_s)
        assert client.mic_started_at is not None
        begins = client.mic_started_at + first_frame * FRAME_S
        plan = TurnPlan(index, utterance.text, barge, begins + utterance.speech_start_s, begins + utterance.speech_end_s,
                        old_turn=previous if barge else None)
        plans.append(plan)
        heard = len(client.transcripts)
        newest = max((t for t, _ in client.received), default=0)
        client.scheduled.append((first_frame, utterance.frame.pcm))

        def reply_turns(heard: int = heard, newest: int = newest) -> list[int]:
            # A turn newer than any before the question, first heard after its transcript.
            if len(client.transcripts) <= heard:
                return []
            said_at = client.transcripts[heard][0]
            return [t for t, at in client.received if t > newest and at >= said_at]

        if await wait_until(lambda: bool(reply_turns()), config.turn_timeout_s + utterance.frame.duration_s):
            plan.turn = min(reply_turns())
            plan.transcript = client.transcripts[-1][1]
            previous = plan.turn
        else:
            plan.error = "no reply" if len(client.transcripts) > heard else "no transcript"
        progress(f"  turn {index + 1}/{config.turns}{' (barge-in)' if barge else ''}: {plan.transcript or plan.error}")
    if previous is not None:
        last = previous
        await wait_until(lambda: not _audible(client, last), config.turn_timeout_s)
    return plans


def server_turn(plan: TurnPlan, metrics: dict[str, Any], ttfa_ms: float) -> dict[str, Any]:
    """A turn's figures from the server's `metrics` message and the TTFA measured on this side.

    The marks are on the server's timeline, whose zero is its VAD's end of speech: that stands in
    for the true end (so `end_of_turn` is the server's wait to confirm), the first frame left at
    its `first_audio_out` and arrived `ttfa_ms` after the true end (so `transport` also holds the
    VAD's end-of-speech lag). What a socket cannot separate is left null: the overhead and its
    gaps, the VAD lag, the client-side LLM time.
    """
    marks = marks_of_metrics(metrics)
    on_server = TurnPlan(plan.index, plan.text, plan.barge_in, true_start=0.0, true_end=0.0, turn=plan.turn,
                         transcript=plan.transcript)
    sent = marks.get("first_audio_out", ttfa_ms / 1000)
    figures = turn_figures(on_server, marks, sent, ttfa_ms / 1000, "hit" if speculated(marks) else "miss")
    figures["ttfa_ms"] = ttfa_ms
    return {**figures, "overhead_ms": None, "gaps_ms": {}, "vad_end_lag_ms": None, "llm_ttft_client_ms": None}


def _figures(client: BrowserLikeClient, plans: Sequence[TurnPlan], min_barge_in_speech_s: float) -> dict[str, Any]:
    turns = []
    for plan in plans:
        arrivals = [at for turn, at in client.received if turn == plan.turn]
        metrics = client.metrics.get(plan.turn or -1)
        if plan.error or not arrivals or metrics is None:
            turns.append({"index": plan.index, "text": plan.text, "transcript": plan.transcript, "turn": plan.turn,
                          "barge_in": plan.barge_in, "error": plan.error or "no audio", "ttfa_ms": None})
            continue
        ttfa = ms(min(arrivals) - plan.true_end)
        assert ttfa is not None
        turns.append(server_turn(plan, metrics, ttfa))
    barge_ins = []
    for plan in plans:
        if not plan.barge_in or plan.old_turn is None:
            continue
        old = plan.old_turn
        flushes = [at for kind, turn, at in client.records if kind == "flush" and turn == old]
        pauses = [at for kind, turn, at in client.records if kind == "pause" and turn == old]
        frames = [at for turn, at in client.received if turn == old]
        flush_at = flushes[0] if flushes else None
        barge_ins.append({
            "turn": old,
            "onset_to_pause_ms": ms(pauses[0] - plan.true_start) if pauses else None,
            "onset_to_flush_ms": ms(flush_at - plan.true_start) if flush_at else None,
            "onset_to_last_frame_ms": ms(max(frames) - plan.true_start) if frames else None,
            "frames_after_flush": sum(1 for at in frames if flush_at is not None and at > flush_at),
            "session_onset_to_flush_ms": None,
            "played_ms": client.played.get(old),
        })
    # Pauses and flushes while the person was not speaking (from a question's first sample to 1.5 s
    # after its end): the agent interrupting itself, as over a speakerphone with its echo.
    spoken = [(plan.true_start, plan.true_end + 1.5) for plan in plans]
    self_interruptions = [{"kind": kind, "turn": turn} for kind, turn, at in client.records
                          if kind in ("pause", "flush") and not any(lo <= at <= hi for lo, hi in spoken)]
    summary = summarize(turns, barge_ins)
    summary["self_interruptions"] = len(self_interruptions)
    summary["client_aec"] = client.aec
    summary["goals"] = check_goals(summary, min_barge_in_speech_s)
    return {"speculation": None, "warm_up_s": {}, "speculation_events": {}, "summary": summary, "turns": turns,
            "barge_ins": barge_ins}
