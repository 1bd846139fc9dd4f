"""`convers bench ...`: benchmarks that print a table and write JSON under bench/results/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from convers.cli.context import settings_from


@click.group()
def bench() -> None:
    """Measure recall quality and latency."""


@bench.command("memory")
@click.option("--conversations", default=8, show_default=True, help="Generated conversations (the first half tunes, the rest are held out).")
@click.option("--latency-sizes", default="10000,100000", show_default=True, help="Stored-turn counts for the latency part, comma separated ('' to skip).")
@click.option("--queries", default=200, show_default=True, help="Latency samples per size.")
@click.option("--synthetic/--no-synthetic", default=True, show_default=True, help="Also run the original synthetic set.")
@click.option("--seed", default=13, show_default=True)
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), help="Keep embeddings (and observation notes) here between runs.")
@click.option("--observations", is_flag=True, help="Also write observation keys with the configured language model (its answers cached under --cache, else DATA_DIR/bench-cache).")
@click.option("--long-turns", is_flag=True, help="Wrap every generated turn in small talk (turns of several sentences).")
@click.option("--echoed-words", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of questions asked in their evidence's words, as people do (0: every question a paraphrase).")
@click.option("--out", type=click.Path(path_type=Path), help="JSON result file (default bench/results/memory-<time>.json).")
@click.pass_context
def memory_bench(ctx: click.Context, conversations: int, latency_sizes: str, queries: int, synthetic: bool, seed: int,
                 cache: Path | None, observations: bool, long_turns: bool, echoed_words: float,
                 out: Path | None) -> None:
    """Recall@5/@10 per question type on long generated conversations, search latency, the synthetic set."""
    from convers.bench.memory import (
        BenchConfig,
        print_table,
        run_benchmark,
        write_result,
    )

    try:
        size_list = sorted({int(s) for s in latency_sizes.split(",") if s.strip()})
    except ValueError:
        raise click.UsageError(f"--latency-sizes takes numbers separated by commas, got {latency_sizes!r}") from None
    if conversations < 2:
        raise click.UsageError(f"--conversations must be at least 2 (one to tune, one held out), got {conversations}")
    settings = settings_from(ctx)
    config = BenchConfig(conversations=conversations, seed=seed, tune_conversations=conversations // 2,
                         latency_sizes=size_list, latency_queries=queries, synthetic=synthetic, cache_dir=cache,
                         observations=observations, long_turns=long_turns, echoed_words=echoed_words)
    result = run_benchmark(settings, config, progress=lambda text: click.echo(text, err=True))
    print_table(result, click.echo)
    path = write_result(result, out)
    click.echo(f"wrote {path}")


@bench.command("turns")
@click.option("--providers", default="smart-turn,silence", show_default=True,
              help="End-of-turn providers to compare (turn_end.provider values), comma separated.")
@click.option("--voices", default="espeak-ng,piper", show_default=True, help="Voices that speak the set.")
@click.option("--limit", default=0, show_default=True, help="At most this many utterances per provider, spread over the classes (0: all).")
@click.option("--kinds", default="", help="Only these classes, comma separated: finished, short, paused (default: all).")
@click.option("--out", type=click.Path(path_type=Path), help="JSON result file (default bench/results/turns-<time>.json).")
@click.pass_context
def turns_bench(ctx: click.Context, providers: str, voices: str, limit: int, kinds: str, out: Path | None) -> None:
    """End-of-turn decision time, premature cuts and time to first audio, per class of utterance."""
    from convers.bench.end_of_turn import (
        TurnsConfig,
        print_table,
        run_benchmark,
        write_result,
    )

    config = TurnsConfig(
        providers=tuple(p.strip() for p in providers.split(",") if p.strip()),
        voices=tuple(v.strip() for v in voices.split(",") if v.strip()),
        limit=limit,
        kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()),
    )
    result = run_benchmark(settings_from(ctx), config, progress=lambda text: click.echo(text, err=True))
    print_table(result, click.echo)
    click.echo(f"wrote {write_result(result, out)}")


@bench.command("latency")
@click.option("--turns", default=20, show_default=True, help="User turns per run (p50/p95 need 20 or more).")
@click.option(
    "--speculation",
    type=click.Choice(["both", "on", "off"]),
    default="both",
    show_default=True,
    help="Run with speculative turn processing off, on, or both (to measure what it saves).",
)
@click.option("--barge-in-every", default=4, show_default=True, help="Every Nth turn interrupts the agent (0: never).")
@click.option("--reference/--settings-llm", "reference", default=True, show_default=True,
              help="Use the built-in reference LLM (fixed speed), or the model settings.llm points at.")
@click.option("--ttft-ms", default=150.0, show_default=True, help="Reference LLM time to first token.")
@click.option("--tokens-per-s", default=30.0, show_default=True, help="Reference LLM token rate.")
@click.option("--speculate-llm/--no-speculate-llm", default=None, help="With speculation on, also start the LLM in the end-of-turn silence (default: settings speculation.llm).")
@click.option("--memory/--no-memory", default=True, show_default=True, help="Recall from a fresh memory store each turn.")
@click.option("--returning", is_flag=True, help="A person who comes back: seed a profile and a 380-turn memory, ask their own questions.")
@click.option("--stt", "stt_provider", help="STT provider to run instead of settings.stt.provider (e.g. pocketsphinx, faster-whisper, auto).")
@click.option("--tts", "tts_provider", help="TTS provider to run instead of settings.tts.provider (e.g. espeak-ng, piper, auto).")
@click.option("--url", help="Drive a running `convers serve` instead: wss://HOST:PORT/ws?token=TOKEN.")
@click.option("--speakerphone", "speakerphone_db", type=float, help="With --url: the client hears its own speaker at this echo level (dB).")
@click.option("--client-aec/--no-client-aec", default=True, show_default=True,
              help="With --url: the hello says the client cancelled its echo (or asks the server to).")
@click.option("--out", type=click.Path(path_type=Path), help="JSON result file (default bench/results/latency-<time>.json).")
@click.pass_context
def latency_bench(
    ctx: click.Context,
    turns: int,
    speculation: str,
    barge_in_every: int,
    reference: bool,
    ttft_ms: float,
    tokens_per_s: float,
    speculate_llm: bool | None,
    memory: bool,
    returning: bool,
    stt_provider: str | None,
    tts_provider: str | None,
    url: str | None,
    speakerphone_db: float | None,
    client_aec: bool,
    out: Path | None,
) -> None:
    """Mouth-to-ear latency: time to first audio and its stages, barge-in, pipeline overhead (p50/p95)."""
    from convers.bench.latency import (
        LatencyConfig,
        print_table,
        run_benchmark,
        write_result,
    )

    if turns < 1:
        raise click.UsageError(f"--turns must be at least 1, got {turns}")
    if url is not None and (stt_provider or tts_provider):
        raise click.UsageError("--stt and --tts choose local providers; over --url the server's settings decide")
    if url is None and (speakerphone_db is not None or not client_aec):
        raise click.UsageError("--speakerphone and --no-client-aec describe a browser-like client: use them with --url")
    settings = with_voice_providers(settings_from(ctx), stt_provider, tts_provider)
    config = LatencyConfig(
        turns=turns,
        barge_in_every=barge_in_every,
        reference_llm=reference,
        ttft_s=ttft_ms / 1000,
        tokens_per_s=tokens_per_s,
        memory=memory,
        speculate_llm=settings.speculation.llm if speculate_llm is None else speculate_llm,
        returning=returning,
        speakerphone_echo_db=speakerphone_db,
        client_aec=client_aec,
    )
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[speculation]
    try:
        result = run_benchmark(settings, config, modes, progress=lambda text: click.echo(text, err=True), url=url)
    except (RuntimeError, ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    print_table(result, click.echo)
    path = write_result(result, out)
    click.echo(f"wrote {path}")


@bench.command("returning-person")
@click.pass_context
def returning_person(ctx: click.Context) -> None:
    """Seed the data folder with a returning person (profile and a 380-turn memory), for
    `convers serve` driven by `bench latency --url`; prints the questions they ask."""
    from convers.bench.latency import seed_returning
    from convers.bench.returning import first_person_questions, returning_conversation

    settings = settings_from(ctx)
    agent = seed_returning(settings)
    click.echo(f"seeded {settings.data_path}: profile and memory; run serve with --set agent.name={agent}")
    for question in first_person_questions(returning_conversation()):
        click.echo(f"  {question}")


@bench.command("tools")
@click.option("--replies", default=200, show_default=True, help="Replies with one tool call each.")
@click.option("--out", type=click.Path(path_type=Path), help="JSON result file (default bench/results/tools-<time>.json).")
def tools_bench(replies: int, out: Path | None) -> None:
    """Tool round trip overhead: a scripted model and an instant tool through the real reply loop."""
    from convers.bench.tool_overhead import print_table, run_benchmark, write_result

    if replies < 1:
        raise click.UsageError(f"--replies must be at least 1, got {replies}")
    result = run_benchmark(replies)
    print_table(result, click.echo)
    click.echo(f"wrote {write_result(result, out)}")


def with_voice_providers(settings: Any, stt: str | None, tts: str | None) -> Any:
    """Settings with stt.provider / tts.provider replaced where given; an unknown name is a usage error."""
    from convers import registry

    if not stt and not tts:
        return settings
    settings = settings.model_copy(deep=True)
    for kind, name in (("stt", stt), ("tts", tts)):
        if not name:
            continue
        known = sorted(registry.installed(kind))
        if name != "auto" and name not in known:
            raise click.UsageError(f"--{kind} {name!r} is not an installed {kind} provider: choose auto or one of {', '.join(known)}")
        getattr(settings, kind).provider = name
    return settings


@bench.command("reference-llm")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True)
@click.option("--ttft-ms", default=150.0, show_default=True, help="Time to first token.")
@click.option("--tokens-per-s", default=30.0, show_default=True, help="Tokens (words) per second after the first.")
def reference_llm(host: str, port: int, ttft_ms: float, tokens_per_s: float) -> None:
    """Serve the reference OpenAI-compatible LLM (fixed speed) until Ctrl-C; point llm.base_url at it."""
    import asyncio

    from convers.bench.reference_llm import ReferenceLlmServer, ReferenceTiming

    try:
        server = ReferenceLlmServer(ReferenceTiming(ttft_ms / 1000, tokens_per_s), host=host, port=port)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    click.echo(f"reference LLM on http://{host}:{port}/v1 (ttft {ttft_ms:.0f} ms, {tokens_per_s:g} tokens/s); "
               f"use --set llm.base_url=http://{host}:{port}", err=True)
    try:
        asyncio.run(server.serve_forever())
    except KeyboardInterrupt:
        pass
    except OSError as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


@bench.command("stt")
@click.option("--conditions", default="full,0+0,0+1,0+2,5+1,8+1,10+1,15+1", show_default=True,
              help="Decodes to compare: 'full' (faster-whisper's 30 s window) or MIN+PAD seconds of a short window.")
@click.option("--threads", default="1", show_default=True, help="cpu_threads to compare, comma separated (e.g. 1,2).")
@click.option("--beam-size", default=1, show_default=True)
@click.option("--limit", type=int, help="Decode only the first N clips (a quick look; the choice needs them all).")
@click.option("--corpus", type=click.Choice(["sentences", "short"]), default="sentences", show_default=True,
              help="38 sentences and questions, or 24 answers of a word or a few said alone.")
@click.option("--out", type=click.Path(path_type=Path), help="JSON result file (default bench/results/stt-<time>.json).")
@click.pass_context
def stt_bench(ctx: click.Context, conditions: str, threads: str, beam_size: int, limit: int | None, corpus: str,
              out: Path | None) -> None:
    """Whisper word error rate and decode time per encoder window (espeak-ng and Piper voices)."""
    from convers.bench.stt import (
        parse_conditions,
        print_table,
        run_benchmark,
        write_result,
    )

    try:
        counts = [int(t) for t in threads.split(",") if t.strip()]
        chosen = parse_conditions(conditions, counts)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    settings = settings_from(ctx)
    try:
        result = run_benchmark(settings, chosen, progress=lambda text: click.echo(text, err=True), beam_size=beam_size,
                               limit=limit, corpus=corpus)
    except (RuntimeError, ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    print_table(result, click.echo)
    path = write_result(result, out)
    click.echo(f"wrote {path}")


@bench.command("speech")
@click.option("--cases", help="Only these cases, comma separated (default: all).")
@click.option("--deterministic/--sampled", default=False, show_default=True,
              help="Piper without its sampled noise (the same audio every run), or the voice as the user hears it.")
@click.option("--raw/--no-raw", default=True, show_default=True, help="Also speak each text as written, without the normaliser.")
@click.option("--out", type=click.Path(path_type=Path), help="JSON result file (default bench/results/speech-<time>.json).")
@click.pass_context
def speech_bench(ctx: click.Context, cases: str | None, deterministic: bool, raw: bool, out: Path | None) -> None:
    """What the listener hears: replies through the splitter, spoken text and Piper, heard back by Whisper."""
    from convers.bench.speech import print_table, run_benchmark, write_result

    names = [name.strip() for name in cases.split(",") if name.strip()] if cases else None
    try:
        result = run_benchmark(settings_from(ctx), lambda text: click.echo(text, err=True), deterministic=deterministic,
                               raw=raw, names=names)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    except (RuntimeError, OSError) as error:
        raise click.ClickException(str(error)) from None
    print_table(result, click.echo)
    path = write_result(result, out)
    click.echo(f"wrote {path}")


@bench.command("echo")
@click.option("--levels", default="-20,-10,-5,0", show_default=True, help="Echo levels in dB against the agent's output, comma separated.")
@click.option("--minutes", default=10.0, show_default=True, help="Minutes of agent speech per level with the canceller on.")
@click.option("--off-minutes", default=2.0, show_default=True, help="Minutes of agent speech per level with the canceller off (0: skip).")
@click.option("--noise", "noise_dbfs", type=float, help="Background noise level in dBFS (default: none).")
@click.option("--seed", default=7, show_default=True)
@click.option("--speaker-distortion", "speaker_drive", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="A speaker that distorts: what it plays goes through tanh(D x) / D before the room (0: clean; 2.5 squashes a 0.5 peak by a quarter).")
@click.option("--replies-per-room", type=click.IntRange(min=0), default=4, show_default=True,
              help="Replies before a new session starts in a new room (0: one room for the whole run, as one long conversation).")
@click.option("--clock-drift", "clock_drift_ppm", type=click.FloatRange(-1000.0, 1000.0), default=0.0, show_default=True,
              help="How much faster the microphone's clock runs than the speaker's, in parts per million (two USB devices: up to about 100).")
@click.option("--microphone-own-rate", is_flag=True,
              help="With --clock-drift: the microphone also delivers samples at its own rate (two devices), not in step with what is played.")
@click.option("--out", type=click.Path(path_type=Path), help="JSON result file (default bench/results/echo-<time>.json).")
@click.pass_context
def echo_bench(ctx: click.Context, levels: str, minutes: float, off_minutes: float, noise_dbfs: float | None, seed: int,
               speaker_drive: float, replies_per_room: int, clock_drift_ppm: float, microphone_own_rate: bool,
               out: Path | None) -> None:
    """The agent on a speakerphone: its own voice through a simulated room, the person speaking over it."""
    from convers.bench.echo import print_table, run_benchmark, write_result

    try:
        echo_levels = [float(level) for level in levels.split(",") if level.strip()]
    except ValueError:
        raise click.UsageError(f"--levels {levels!r}: give numbers in dB, like -20,-10,0") from None
    try:
        result = run_benchmark(settings_from(ctx), lambda text: click.echo(text, err=True), echo_levels=echo_levels,
                               minutes=minutes, off_minutes=off_minutes, noise_dbfs=noise_dbfs, seed=seed,
                               speaker_drive=speaker_drive, replies_per_room=replies_per_room,
                               clock_drift_ppm=clock_drift_ppm, microphone_own_rate=microphone_own_rate)
    except (RuntimeError, OSError) as error:
        raise click.ClickException(str(error)) from None
    print_table(result, click.echo)
    click.echo(f"wrote {write_result(result, out)}")


@bench.command("pulse-room")
@click.option("--replies", default=12, show_default=True, help="Agent replies to play (about 6 s each).")
@click.option("--person-every", default=2, show_default=True, help="A person speaks over every N-th reply (0: never).")
@click.option("--stall-ms", default=0.0, show_default=True,
              help="Stall the process this long every 0.7 s (the devices' callbacks come late, as on a loaded machine).")
@click.option("--out", type=click.Path(path_type=Path), help="JSON result file (default bench/results/pulse-room-<time>.json).")
@click.pass_context
def pulse_room_bench(ctx: click.Context, replies: int, person_every: int, stall_ms: float, out: Path | None) -> None:
    """`convers talk`'s transport and echo canceller through a private PulseAudio server (a null sink as the room)."""
    from convers.bench.pulse_room import PulseUnavailable, print_summary, run_benchmark, write_result

    try:
        result = run_benchmark(settings_from(ctx), lambda text: click.echo(text, err=True), replies=replies,
                               person_every=person_every, stall_ms=stall_ms)
    except (PulseUnavailable, RuntimeError, OSError) as error:
        raise click.ClickException(str(error)) from None
    print_summary(result, click.echo)
    click.echo(f"wrote {write_result(result, out)}")


@bench.command("speech-cost")
@click.option("--replies", "replies_file", type=click.Path(path_type=Path), help="Case file of replies (JSON list of {\"reply\": ...}); default tests/data/sentence_cases.json where it exists.")
@click.option("--rounds", default=5, show_default=True, help="Timed passes; the best is reported.")
@click.option("--out", type=click.Path(path_type=Path), help="JSON result file (default bench/results/speech-cost-<time>.json).")
def speech_cost_bench(replies_file: Path | None, rounds: int, out: Path | None) -> None:
    """First-chunk tokens and CPU per token of the sentence splitter and spoken text."""
    from convers.bench.speech_cost import (
        CASE_FILE,
        print_table,
        run_benchmark,
        write_result,
    )

    if rounds < 1:
        raise click.UsageError(f"--rounds must be at least 1, got {rounds}")
    if replies_file is None and CASE_FILE.is_file():
        replies_file = CASE_FILE
    try:
        result = run_benchmark(replies_file, rounds, lambda text: click.echo(text, err=True))
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    print_table(result, click.echo)
    click.echo(f"wrote {write_result(result, out)}")


@bench.command("kill9")
@click.option("--tries", default=20, show_default=True, help="Kills (every other one right after a burst of typed turns).")
@click.option("--seed", default=15, show_default=True)
@click.option("--serve-set", "serve_settings", multiple=True, metavar="KEY=VALUE", help="A setting for the served process (repeatable).")
@click.option("--keep", type=click.Path(path_type=Path), help="Keep the server's data directory and log here (default: a temporary one).")
@click.option("--out", type=click.Path(path_type=Path), help="JSON result file (default bench/results/kill9-<time>.json).")
def kill9_bench(tries: int, seed: int, serve_settings: tuple[str, ...], keep: Path | None, out: Path | None) -> None:
    """Kill -9 a real `convers serve` at random moments: every acknowledged turn must be in memory.db."""
    import asyncio

    from convers.bench.crash import (
        CrashConfig,
        parse_settings,
        print_summary,
        run,
        write_result,
    )

    try:
        config = CrashConfig(tries=tries, seed=seed, settings=parse_settings(serve_settings))
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        result = asyncio.run(run(config, progress=lambda text: click.echo(text, err=True), data_dir=keep))
    except (RuntimeError, OSError) as error:
        raise click.ClickException(str(error)) from None
    print_summary(result, click.echo)
    click.echo(f"wrote {write_result(result, out)}")
    if not result["goals"]["no_acknowledged_turn_lost"]:
        raise SystemExit(1)


@bench.command("soak")
@click.option("--clients", default=2, show_default=True, help="Browser-like clients talking at once.")
@click.option("--minutes", default=30.0, show_default=True, help="How long every client keeps talking.")
@click.option("--stagger-s", default=4.0, show_default=True, help="Client i connects i x this many seconds after the first (0: all at once).")
@click.option("--serve-set", "serve_settings", multiple=True, metavar="KEY=VALUE", help="A setting for the served process (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), help="JSON result file (default bench/results/soak-<time>.json).")
def soak_bench(clients: int, minutes: float, stagger_s: float, serve_settings: tuple[str, ...], out: Path | None) -> None:
    """N clients x M minutes of spoken and typed turns against a real `convers serve`: errors, RSS, first-audio drift."""
    import asyncio

    from convers.bench.crash import parse_settings
    from convers.bench.soak import SoakConfig, print_summary, run, write_result

    if clients < 1 or minutes <= 0:
        raise click.UsageError(f"--clients must be 1 or more and --minutes above 0, got {clients} and {minutes}")
    try:
        config = SoakConfig(clients=clients, minutes=minutes, stagger_s=max(0.0, stagger_s),
                            settings=parse_settings(serve_settings))
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        result = asyncio.run(run(config, progress=lambda text: click.echo(text, err=True)))
    except (RuntimeError, OSError) as error:
        raise click.ClickException(str(error)) from None
    print_summary(result, click.echo)
    click.echo(f"wrote {write_result(result, out)}")


@bench.command("reconnects")
@click.option("--cycles", default=30, show_default=True, help="Connect, one spoken question, the whole reply, close: this many times.")
@click.option("--concurrent", default=8, show_default=True, help="Then this many clients at once, each with a turn, all held open.")
@click.option("--serve-set", "serve_settings", multiple=True, metavar="KEY=VALUE", help="A setting for the served process (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), help="JSON result file (default bench/results/reconnects-<time>.json).")
def reconnects_bench(cycles: int, concurrent: int, serve_settings: tuple[str, ...], out: Path | None) -> None:
    """Server memory (VmRSS) across reconnects and with sessions open at once, against a real `convers serve`."""
    from convers.bench.reconnects import main

    if cycles < 1 or concurrent < 0:
        raise click.UsageError(f"--cycles must be 1 or more and --concurrent 0 or more, got {cycles} and {concurrent}")
    argv = ["--cycles", str(cycles), "--concurrent", str(concurrent)]
    argv += [item for pair in serve_settings for item in ("--set", pair)]
    if out is not None:
        argv += ["--out", str(out)]
    # The exit status says whether both goals were met, as `python -m convers.bench.reconnects` does.
    raise SystemExit(main(argv))
