"""`convers bench latency`: mouth-to-ear latency of the real voice pipeline, turn by turn.

espeak-ng speaks questions into a loopback microphone in real time; a real Session (VAD, STT,
memory, LLM, TTS from settings) answers through the loopback speaker, which plays in real time and
reports what it played. Every turn yields:

- time to first audio (TTFA): the true end of the user's speech in the input stream (known from
  the WAV, not from the VAD) to the first agent audio frame sent, and its stages;
- on barge-in turns: speech onset over the agent -> flush sent -> last frame of the old turn, and
  the number of old-turn frames sent after the flush (must be 0);
- pipeline overhead: TTFA minus the stages it is made of (what the engine itself costs).

Stage times are the engine's own marks (events.TurnMetrics: each stage's start and end, set where
the session does the work), read through bench/stages.py like the run over a socket reads them,
plus the reference LLM's own record of when it received a request and wrote its first token; so
the overhead is what is left: event-loop hops, HTTP, SSE parsing, queues, resampling and sends.
With `url` the same script runs against a `convers serve` WebSocket (bench/latency_ws.py).
Every JSON field is described in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convers.bench.latency_script import (  # noqa: F401  (re-exported: other benches import them from here)
    FRAME_S,
    INTERRUPTIONS,
    MIC_RATE,
    QUESTIONS,
    LatencyConfig,
    TurnPlan,
    Utterance,
    end_session,
    frame_index,
    judged_record,
    speak,
    speech_span,
    wait_until,
)
from convers.bench.results import write_json_result
from convers.bench.run_info import (  # noqa: F401  (re-exported: other benches import them from here)
    describe_built,
    machine_info,
    model_file_of,
    model_of,
    provider_info,
)
from convers.bench.stages import (  # noqa: F401  (re-exported: other benches import them from here)
    STAGES,
    check_goals,
    describe,
    ms,
    percentile,
    speculated,
    summarize,
    turn_figures,
)
from convers.contracts.events import EventKind

SCHEMA_VERSION = 1
_frame_index = frame_index  # the name bench/soak.py imports


# --------------------------------------------------------------------- the run


async def run_loopback(
    settings: Any,
    config: LatencyConfig,
    speculation: bool,
    utterances: Sequence[Utterance],
    interruptions: Sequence[Utterance],
    reference: Any | None,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """One benchmark run through the loopback transport; returns its turns, barge-ins and summary."""
    from convers.app import wiring
    from convers.engine.session import SessionParts
    from convers.transports.loopback import LoopbackTransport

    settings = settings.model_copy(deep=True)
    # Only on/off and the LLM come from the run; the rest (post-roll wait, first-chunk TTS) from settings.
    settings.speculation = dataclasses.replace(
        settings.speculation, enabled=speculation, llm=speculation and config.speculate_llm
    )
    llm_inner = wiring.build("llm", settings)
    vad, stt_inner, tts_inner = wiring.build_voice(settings)
    memory_inner = wiring.build_memory(settings, llm_inner) if config.memory else None
    turn_end = wiring.build_turn_end(settings)
    # The embedder and the store themselves, as `convers serve` warms them: warming the conversation
    # memory instead ran one recall, which gives up on the embedder after its 150 ms deadline, so in a
    # fresh data folder the int8 graph's first build (~7 s) went on into the first measured turn.
    memory_parts = (memory_inner.embedder, memory_inner.store) if memory_inner is not None else ()
    warm = await wiring.warm_up(llm_inner, stt_inner, tts_inner, vad, *memory_parts, turn_end)
    built = describe_built({"vad": vad, "stt": stt_inner, "tts": tts_inner, "llm": llm_inner, "turn_end": turn_end})
    transport = LoopbackTransport(input_rate=MIC_RATE)
    parts = SessionParts(llm=llm_inner, tts=tts_inner, stt=stt_inner, vad=vad, memory=memory_inner, turn_end=turn_end,
                         idle=getattr(memory_inner, "idle", None))
    session = wiring.make_session(settings, transport, parts, session_id=f"bench-{int(time.time())}", greet=False)

    metrics_by_turn: dict[int, Any] = {}
    user_turns: list[tuple[int, str]] = []
    speculation_events: dict[str, int] = {
        EventKind.SPECULATION_START: 0, EventKind.SPECULATION_COMMIT: 0, EventKind.SPECULATION_DISCARD: 0
    }
    session_barge: dict[int, dict[str, Any]] = {}
    judged: list[dict[str, Any]] = []
    readings: list[tuple[float, dict[str, Any]]] = []  # (when, the llm_prompt event): what the model read

    def on_event(event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == EventKind.LLM_PROMPT:
            readings.append((session.events.now(), event))
        elif kind == EventKind.USER_TURN:
            user_turns.append((int(event["turn"]), str(event["text"])))
        elif kind in (EventKind.LLM_FIRST_TOKEN, EventKind.FIRST_CHUNK, EventKind.FIRST_AUDIO_OUT):
            current = session.current
            if current is not None and current.turn == event.get("turn"):
                metrics_by_turn.setdefault(current.turn, current.metrics)
        elif kind == EventKind.BARGE_IN:
            session_barge[int(event["turn"])] = event
        elif kind in speculation_events:
            speculation_events[kind] += 1
        elif kind == "turn_judged":
            judged.append(judged_record(event))

    session.events.listeners.append(on_event)
    runner = asyncio.create_task(session.run())
    plans: list[TurnPlan] = []
    try:
        await wait_until(lambda: transport.mic_started_at is not None, 10)
        await asyncio.sleep(0.5)  # let the VAD see some silence first
        previous: int | None = None
        for index in range(config.turns):
            barge = bool(
                previous is not None and config.barge_in_every and index % config.barge_in_every == config.barge_in_every - 1
            )
            if barge:
                utterance = interruptions[(index // max(config.barge_in_every, 1)) % len(interruptions)]

                def into_reply(turn: int = previous) -> bool:  # type: ignore[assignment]
                    current = session.current
                    if current is None or current.turn != turn or current.settled:
                        return True
                    return transport.played_ms(turn) >= config.barge_after_ms

                await wait_until(into_reply, config.turn_timeout_s)
                current = session.current
                barge = current is not None and current.turn == previous and not current.settled
                at_s = transport.mic_time_s + FRAME_S
            else:
                utterance = utterances[index % len(utterances)]
                if previous is not None:

                    def reply_over(turn: int = previous) -> bool:
                        current = session.current
                        return current is None or current.turn != turn or current.settled

                    await wait_until(reply_over, config.turn_timeout_s)
                at_s = transport.mic_time_s + config.gap_s
            first_frame = frame_index(at_s)
            assert transport.mic_started_at is not None
            begins = transport.mic_started_at + first_frame * FRAME_S
            plan = TurnPlan(
                index=index,
                text=utterance.text,
                barge_in=barge,
                true_start=begins + utterance.speech_start_s,
                true_end=begins + utterance.speech_end_s,
                old_turn=previous if barge else None,
            )
            plans.append(plan)
            seen = len(user_turns)
            judged_before = len(judged)
            await transport.say_nowait(utterance.frame, at_s=first_frame * FRAME_S)

            def answered(seen: int = seen) -> bool:
                if len(user_turns) <= seen:
                    return False
                turn = user_turns[-1][0]
                return any(s.turn == turn for s in transport.sent)

            if await wait_until(answered, config.turn_timeout_s):
                plan.turn, plan.transcript = user_turns[-1]
                previous = plan.turn
            else:
                plan.error = "no reply" if len(user_turns) > seen else "no user turn (STT heard nothing?)"
                if len(user_turns) > seen:
                    plan.turn, plan.transcript = user_turns[-1]
            plan.judged = judged[judged_before:]
            progress(
                f"  turn {index + 1}/{config.turns}{' (barge-in)' if barge else ''}: "
                f"{plan.transcript or plan.error!s}"
            )
        if previous is not None:
            await wait_until(lambda: session.current is None or session.current.settled, config.turn_timeout_s)
    finally:
        await end_session(transport, runner)
        if memory_inner is not None:
            await memory_inner.aclose()

    server_requests = list(reference.requests) if reference is not None else []
    turns = []
    ends = [plan.true_end for plan in plans[1:]] + [float("inf")]
    for plan, next_end in zip(plans, ends, strict=True):
        model_read = model_reading(readings, plan.true_start, plan.true_end, next_end)
        marks = metrics_by_turn[plan.turn].marks if plan.turn in metrics_by_turn else {}
        sent = [s.at for s in transport.sent if s.turn == plan.turn]
        if plan.error or not sent or "first_audio_out" not in marks:
            turns.append({"index": plan.index, "text": plan.text, "transcript": plan.transcript, "turn": plan.turn,
                          "barge_in": plan.barge_in, "error": plan.error or "no audio", "ttfa_ms": None, **model_read})
            continue
        server_llm = served_llm(server_requests, marks)
        spec = ("hit" if speculated(marks) else "miss") if speculation else "off"
        # In process the first frame is heard as it is handed over: sent and arrived are one moment.
        turns.append({**turn_figures(plan, marks, min(sent), min(sent), spec, server_llm), "judged": plan.judged, **model_read})

    barge_ins = []
    for plan in plans:
        if not plan.barge_in or plan.old_turn is None:
            continue
        old = plan.old_turn
        flushes = [r.at for r in transport.records_of("flush") if r.turn == old]
        pauses = [r.at for r in transport.records_of("pause") if r.turn == old]
        frames = [s for s in transport.sent if s.turn == old]
        if not flushes:
            barge_ins.append({"turn": old, "error": "no flush", "onset_to_pause_ms": None, "onset_to_flush_ms": None,
                              "onset_to_last_frame_ms": None, "frames_after_flush": 0})
            continue
        flush_at = flushes[0]
        event = session_barge.get(old, {})
        barge_ins.append({
            "turn": old,
            "onset_to_pause_ms": ms(pauses[0] - plan.true_start) if pauses else None,
            "onset_to_flush_ms": ms(flush_at - plan.true_start),
            "onset_to_last_frame_ms": ms(max(s.at for s in frames) - plan.true_start) if frames else None,
            "frames_after_flush": sum(1 for s in frames if s.at > flush_at),
            "session_onset_to_flush_ms": event.get("onset_to_flush_ms"),
            "played_ms": event.get("played_ms"),
        })

    summary = summarize(turns, barge_ins)
    summary["goals"] = check_goals(summary, settings.barge_in.min_barge_in_speech_s)
    return {
        "speculation": speculation,
        "built": built,
        "warm_up_s": {name: round(s, 3) for name, s in warm.items()},
        "speculation_events": speculation_events,
        "summary": summary,
        "turns": turns,
        # Every request's reading, in order: seconds since the microphone started, purpose, tokens.
        "model_readings": [
            {"at_s": round(at - (transport.mic_started_at or at), 3), "purpose": event["purpose"],
             "prompt_tokens": event["prompt_tokens"], "read_tokens": event["read_tokens"]}
            for at, event in readings
        ],
        "barge_ins": barge_ins,
    }


def seed_returning(settings: Any) -> str:
    """Seeds settings.data_dir with a returning person (bench/returning.py); returns the agent's name."""
    from convers.app.wiring import build
    from convers.bench.returning import seed_returning_person
    from convers.memory.store import SqliteMemoryStore

    settings.data_path.mkdir(parents=True, exist_ok=True)
    embedder = build("embedder", settings)
    store = SqliteMemoryStore.from_settings(settings, embedder)
    try:
        person = seed_returning_person(settings.data_path, store)
    finally:
        store.close()
    return person.agent_name


def model_reading(
    readings: Sequence[tuple[float, dict[str, Any]]], speech_start: float, speech_end: float, next_end: float
) -> dict[str, Any]:
    """What the model read for one turn: the first reply request that ended after the person
    stopped speaking (before the next turn ended), and the prefills while they spoke.

    A model that reports nothing (the reference LLM, Ollama) gives None for each figure.
    """
    reply = next((event for at, event in readings if event["purpose"] == "reply" and speech_end < at < next_end), None)
    ahead = [event for at, event in readings if event["purpose"] == "prefill" and speech_start - 1.0 <= at <= speech_end + 1.0]
    return {
        "prompt_tokens": reply["prompt_tokens"] if reply else None,
        "read_tokens": reply["read_tokens"] if reply else None,
        "read_ms": reply["read_ms"] if reply else None,
        "prefill_read_tokens": sum(int(event["read_tokens"]) for event in ahead) if ahead else None,
    }


def served_llm(requests: Sequence[Any], marks: dict[str, float]) -> tuple[float, float] | None:
    """The reference server's (received, first token written) for the request the reply's first token came from.

    That is the last request received before the engine saw its first token. Not the last whose
    first token was written before it: the server stamps a token after writing it, on another
    thread, so on a busy machine the engine can see the token first, and the previous turn's
    request was taken (stages 9 s long, the LLM stage off the critical path).
    """
    first_token = marks.get("llm_first_token")
    if first_token is None:
        return None
    answered = [r for r in requests if r.first_token_at is not None and r.received_at <= first_token]
    if not answered:
        return None
    request = max(answered, key=lambda r: r.received_at)
    return (request.received_at, request.first_token_at)


# --------------------------------------------------------------------- the artifact


def run_benchmark(
    settings: Any,
    config: LatencyConfig,
    modes: Sequence[bool] = (False, True),
    progress: Callable[[str], None] = lambda _text: None,
    url: str | None = None,
) -> dict[str, Any]:
    """Every mode (speculation off/on) in turn; the whole artifact as a dict."""
    from convers.bench.reference_llm import ReferenceLlmServer, ReferenceTiming

    with tempfile.TemporaryDirectory(prefix="convers-bench-") as scratch:
        scratch_path = Path(scratch)
        questions: Sequence[str] = QUESTIONS
        if config.returning:
            from convers.bench.returning import (
                first_person_questions,
                returning_conversation,
            )

            questions = first_person_questions(returning_conversation())[: max(config.turns, 1)]
        utterances = [speak(q, scratch_path, config.words_per_minute) for q in questions]
        interruptions = [speak(q, scratch_path, config.words_per_minute) for q in INTERRUPTIONS]
        runs = []
        reference = None
        for speculation in modes:
            run_settings = settings.model_copy(deep=True)
            run_settings.data_dir = scratch_path / f"data-{'spec' if speculation else 'plain'}"
            run_settings.events.enabled = False
            run_settings.memory.enabled = config.memory
            if config.returning and url is None:
                run_settings.agent.name = seed_returning(run_settings)
                progress(f"seeded a returning person's profile and memory in {run_settings.data_dir}")
            label = "as the server is set" if url else ("on" if speculation else "off")
            progress(f"speculation {label}: {config.turns} turns")
            if url is not None:
                from convers.bench.latency_ws import run_websocket

                # The server's own settings decide speculation: one run, whatever `modes` says.
                runs.append(asyncio.run(run_websocket(
                    url, config, speculation, utterances, interruptions, progress, settings.barge_in.min_barge_in_speech_s
                )))
                break
            if config.reference_llm:
                reference = ReferenceLlmServer(ReferenceTiming(config.ttft_s, config.tokens_per_s))
                with reference.running_in_thread():
                    run_settings.llm.provider = "openai"
                    run_settings.llm.base_url = reference.base_url
                    run_settings.llm.model = None
                    runs.append(asyncio.run(
                        run_loopback(run_settings, config, speculation, utterances, interruptions, reference, progress)
                    ))
            else:
                runs.append(asyncio.run(
                    run_loopback(run_settings, config, speculation, utterances, interruptions, None, progress)
                ))
    # What the loopback runs built (the same settings each time): reported once, at the top.
    built = next((b for b in [run.pop("built", None) for run in runs] if b), None)
    providers, models, model_files = provider_info(settings, reference if config.reference_llm and url is None else None, built)
    result: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "kind": "latency",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "transport": "websocket" if url else "loopback",
        "machine": machine_info(),
        "providers": providers,
        "models": models,
        "model_files": model_files,
        "config": asdict(config),
        "settings": {
            "turns": asdict(settings.turns),
            "barge_in": asdict(settings.barge_in),
            "speculation": asdict(settings.speculation),
            "threads": {k: getattr(settings, k).threads for k in ("llm", "stt", "tts", "vad", "embedder")},
            "tts_words_per_minute": settings.tts.words_per_minute,
        },
        "runs": runs,
    }
    result["comparison"] = compare(runs)
    return result


def compare(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """What speculation saved: p50/p95 TTFA without minus with (positive = faster with it)."""
    plain = next((r for r in runs if r["speculation"] is False), None)
    spec = next((r for r in runs if r["speculation"]), None)
    if plain is None or spec is None:
        return None
    saved: dict[str, Any] = {}
    for q in ("p50", "p95"):
        a, b = plain["summary"]["ttfa_ms"][q], spec["summary"]["ttfa_ms"][q]
        saved[f"ttfa_{q}_saved_ms"] = None if a is None or b is None else round(a - b, 1)
    return saved


def print_table(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    echo(f"machine: {result['machine']['cpu']} x{result['machine']['cpu_count']}, load {result['machine']['load_average']}")
    echo("providers: " + ", ".join(f"{k}={v}" for k, v in result["providers"].items()))
    echo("models: " + ", ".join(f"{k}={v}" for k, v in result["models"].items() if v))
    for run in result["runs"]:
        summary = run["summary"]
        echo("")
        mode = "server setting" if run["speculation"] is None else ("on" if run["speculation"] else "off")
        echo(f"speculation {mode}: {summary['turns_measured']} turns measured, "
             f"{summary['turns_failed']} failed, {summary['speculation_hits']} speculation hits")
        echo(f"  {'figure (ms)':<28}{'p50':>8}{'p95':>8}{'mean':>8}")
        rows = [("time to first audio", summary["ttfa_ms"])]
        rows += [(f"  {stage} (critical path)", summary["critical_ms"][stage]) for stage in STAGES]
        rows += [("pipeline overhead", summary["overhead_ms"]), ("VAD end-of-speech lag", summary["vad_end_lag_ms"])]
        barge = summary["barge_in"]
        rows += [("barge-in onset->pause", barge["onset_to_pause_ms"]), ("barge-in onset->flush", barge["onset_to_flush_ms"]),
                 ("barge-in onset->last frame", barge["onset_to_last_frame_ms"])]
        for label, stats in rows:
            echo(f"  {label:<28}{_fmt(stats['p50']):>8}{_fmt(stats['p95']):>8}{_fmt(stats['mean']):>8}")
        echo(f"  barge-ins: {barge['count']}, old-turn frames after flush: {barge['frames_after_flush_total']}")
        echo("  goals: " + ", ".join(f"{k}={v}" for k, v in summary["goals"].items()))
    if result.get("comparison"):
        echo("")
        echo("speculation saved: " + ", ".join(f"{k}={v}" for k, v in result["comparison"].items()))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def write_result(result: dict[str, Any], out: Path | None = None) -> Path:
    """The result as JSON at `out`, or under bench/results/."""
    return write_json_result(result, out, "latency")

