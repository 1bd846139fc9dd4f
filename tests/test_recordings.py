"""The opt-in recorder: per-turn WAVs and a sidecar, private files, and wipe/forget remove them."""

from __future__ import annotations

import json
import stat
import wave
from datetime import UTC

from click.testing import CliRunner

from convers.cli import main
from convers.config import Settings
from convers.contracts.audio import AudioFrame
from convers.contracts.memory import MemoryTurn
from convers.engine.reply.prompt import PromptBuilder
from convers.engine.session import Session, SessionOptions, SessionParts
from convers.events import EventLog
from convers.memory.store import SqliteMemoryStore
from convers.recordings import Recordings, TurnRecorder
from tests.doubles import RecordingTransport, RunningSession, ScriptedLlm, ToneTts

USER_AUDIO = AudioFrame(b"\x01\x00" * 16000, 16000)  # one second


def recorded_session(tmp_path, llm, tts=None) -> tuple[Session, RecordingTransport, TurnRecorder]:
    recorder = TurnRecorder.in_data_dir(tmp_path, "s1")
    transport = RecordingTransport()
    session = Session(
        transport,
        SessionParts(llm=llm, tts=tts, recorder=recorder),
        PromptBuilder(persona="P"),
        EventLog(None),
        options=SessionOptions(greet=False),
        session_id="s1",
    )
    return session, transport, recorder


async def test_a_turn_is_recorded_as_two_wavs_and_a_sidecar(tmp_path) -> None:
    session, transport, recorder = recorded_session(tmp_path, ScriptedLlm(["Hello", " there."]), tts=ToneTts())
    running = await RunningSession.start(session, transport)
    await (await session.user_said("hi there", audio=USER_AUDIO))
    sent_ms = session.current.progress.audio_ms
    await running.played(1, int(sent_ms) + 1)  # the client played it all: the turn settles
    await running.stop()
    folder = tmp_path / "recordings" / "s1"
    sidecar = json.loads((folder / "0001.json").read_text())
    assert sidecar["session"] == "s1" and sidecar["turn"] == 1
    assert sidecar["transcript"] == "hi there" and sidecar["agent_text"] == "Hello there."
    with wave.open(str(folder / "0001-user.wav")) as wav:
        assert wav.getframerate() == 16000 and wav.getnframes() == 16000
    with wave.open(str(folder / "0001-agent.wav")) as wav:
        sent = sum(len(frame.pcm) for _, _, frame in transport.audio(1)) // 2
        assert wav.getnframes() == sent > 0
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


async def test_a_cut_reply_is_recorded_as_far_as_it_was_heard(tmp_path) -> None:
    llm = ScriptedLlm(["One two three. ", "Four five six. ", "Seven eight nine."])
    session, transport, recorder = recorded_session(tmp_path, llm, tts=ToneTts())
    running = await RunningSession.start(session, transport)
    await (await session.user_said("count", audio=USER_AUDIO))
    await running.played(1, 100)
    await session.interrupt()
    await running.stop()
    with wave.open(str(tmp_path / "recordings" / "s1" / "0001-agent.wav")) as wav:
        assert wav.getnframes() == 1600  # 100 ms at 16 kHz: what the client played


async def test_the_session_tells_the_page_it_records(tmp_path) -> None:
    session, transport, _ = recorded_session(tmp_path, ScriptedLlm(["Hi."]))
    transport.inbox.put_nowait(None)
    await session.run()
    assert transport.events("recording") == [{"type": "recording", "on": True}]


def test_forget_removes_the_matching_turn_and_wipe_removes_all(tmp_path) -> None:
    folder = tmp_path / "recordings" / "s1"
    folder.mkdir(parents=True)
    for turn, said in ((1, "my sister is Maya"), (2, "the weather")):
        (folder / f"{turn:04d}.json").write_text(json.dumps({"transcript": said, "agent_text": "ok"}))
        (folder / f"{turn:04d}-user.wav").write_bytes(b"RIFF")
    recordings = Recordings(tmp_path)
    assert recordings.forget("s1", ["my  sister is Maya"]) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["0002-user.wav", "0002.json"]
    assert recordings.wipe() == 1
    assert not (tmp_path / "recordings").exists()


def test_memory_cli_wipe_and_forget_take_the_recordings(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    with SqliteMemoryStore.from_settings(settings, embedder=None) as store:
        from datetime import datetime

        turn_id = store.add(MemoryTurn("t1", "s1", datetime.now(UTC), "Sam", "user", "my sister is Maya"))
    folder = tmp_path / "recordings" / "s1"
    folder.mkdir(parents=True)
    (folder / "0001.json").write_text(json.dumps({"transcript": "my sister is Maya", "agent_text": "Nice."}))
    (folder / "0002.json").write_text(json.dumps({"transcript": "other", "agent_text": "Sure."}))
    runner = CliRunner()
    forgot = runner.invoke(main, ["--data-dir", str(tmp_path), "memory", "forget", turn_id])
    assert forgot.exit_code == 0, forgot.output
    assert "and its recording (1)" in forgot.output
    assert not (folder / "0001.json").exists() and (folder / "0002.json").exists()
    wiped = runner.invoke(main, ["--data-dir", str(tmp_path), "memory", "wipe", "--yes"])
    assert wiped.exit_code == 0, wiped.output
    assert "1 recorded turns" in wiped.output and not (tmp_path / "recordings").exists()


