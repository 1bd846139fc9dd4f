"""The opt-in recorder: each turn's user and agent audio as WAV, with a sidecar JSON, per session.

Off by default (`recorder.enabled`). Files go to data_dir/recordings/<session>/ as
`<turn>-user.wav`, `<turn>-agent.wav` and `<turn>.json` (session, turn id, transcript, the agent's
words as heard, sample rates), all private to the user (0600 in 0700 folders). `convers memory
wipe` deletes every recording and `convers memory forget` deletes the turn's recording with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import wave
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convers.contracts.audio import AudioFormat, AudioFrame
from convers.contracts.transport import InboundEvent, Transport
from convers.private_files import FILE_MODE, private_dir

log = logging.getLogger(__name__)

RECORDINGS_FOLDER = "recordings"


@dataclass
class _Turn:
    user_text: str = ""
    user_audio: AudioFrame | None = None
    agent_pcm: list[bytes] = field(default_factory=list)
    agent_rate: int = 0


class TurnRecorder:
    """Collects one session's audio per turn and writes it when the turn is over (in a worker thread)."""

    def __init__(self, folder: Path, session: str) -> None:
        self.folder = Path(folder)
        self.session = session
        self._turns: dict[int, _Turn] = {}
        self._writes: set[asyncio.Task[None]] = set()

    @classmethod
    def in_data_dir(cls, data_dir: Path, session: str) -> TurnRecorder:
        return cls(Path(data_dir).expanduser() / RECORDINGS_FOLDER / session, session)

    def wrap(self, transport: Transport) -> Transport:
        """`transport`, with every outbound audio frame also kept for its turn's recording."""
        return _CapturingTransport(transport, self)  # type: ignore[return-value]

    def user_turn(self, turn: int, text: str, audio: AudioFrame | None) -> None:
        """The user's words that start agent turn `turn` (audio is None when they were typed)."""
        entry = self._turns.setdefault(turn, _Turn())
        entry.user_text = text
        entry.user_audio = audio

    def agent_audio(self, turn: int, frame: AudioFrame) -> None:
        entry = self._turns.setdefault(turn, _Turn())
        entry.agent_rate = frame.sample_rate
        entry.agent_pcm.append(frame.pcm)

    def finish_turn(self, turn: int, agent_text: str, played_ms: float = 0.0) -> None:
        """The turn is over (`agent_text` is what the user heard): its files are written in the background.

        The agent's audio is cut to `played_ms` when the client reported playing less than was sent
        (a barge-in): the recording is what the user heard.
        """
        entry = self._turns.pop(turn, None)
        if entry is None or not (entry.user_audio or entry.agent_pcm or entry.user_text or agent_text):
            return
        if played_ms > 0 and entry.agent_pcm:
            heard_bytes = int(entry.agent_rate * played_ms / 1000) * 2
            entry.agent_pcm = [b"".join(entry.agent_pcm)[:heard_bytes]]
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._write, turn, entry, agent_text))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        task.add_done_callback(_log_failure)

    async def aclose(self) -> None:
        """Waits for the files still being written."""
        await asyncio.gather(*self._writes, return_exceptions=True)

    def _write(self, turn: int, entry: _Turn, agent_text: str) -> None:
        private_dir(self.folder)
        stem = f"{turn:04d}"
        sidecar: dict[str, Any] = {
            "session": self.session,
            "turn": turn,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "transcript": entry.user_text,
            "agent_text": agent_text,
        }
        if entry.user_audio is not None and entry.user_audio.pcm:
            _write_wav(self.folder / f"{stem}-user.wav", entry.user_audio.pcm, entry.user_audio.sample_rate)
            sidecar["user_audio"] = {"file": f"{stem}-user.wav", "sample_rate": entry.user_audio.sample_rate}
        if entry.agent_pcm:
            _write_wav(self.folder / f"{stem}-agent.wav", b"".join(entry.agent_pcm), entry.agent_rate)
            sidecar["agent_audio"] = {"file": f"{stem}-agent.wav", "sample_rate": entry.agent_rate}
        _write_private(self.folder / f"{stem}.json", json.dumps(sidecar, ensure_ascii=False, indent=2).encode() + b"\n")


class _CapturingTransport:
    """Delegates everything to the real transport; keeps a copy of each audio frame for the recorder."""

    def __init__(self, inner: Transport, recorder: TurnRecorder) -> None:
        self._inner = inner
        self._recorder = recorder

    @property
    def output_format(self) -> AudioFormat:
        return self._inner.output_format

    @property
    def name(self) -> str:
        return self._inner.name

    def inbound(self) -> AsyncIterator[InboundEvent]:
        return self._inner.inbound()

    async def send_audio(self, turn: int, seq: int, frame: AudioFrame) -> None:
        self._recorder.agent_audio(turn, frame)
        await self._inner.send_audio(turn, seq, frame)

    def __getattr__(self, name: str) -> Any:  # send_event, flush, pause, resume, close, ...
        return getattr(self._inner, name)


class Recordings:
    """Every session's recordings under data_dir/recordings/, for `convers memory wipe` and `forget`."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir).expanduser() / RECORDINGS_FOLDER

    def count(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json")) if self.root.is_dir() else 0

    def wipe(self) -> int:
        """Deletes every recording; returns how many turns had one."""
        count = self.count()
        if self.root.is_dir():
            shutil.rmtree(self.root)
        return count

    def forget(self, session: str, texts: Iterable[str]) -> int:
        """Deletes the turns of `session` whose transcript or agent words are one of `texts`."""
        wanted = {" ".join(t.split()) for t in texts if t.strip()}
        folder = self.root / session
        removed = 0
        for sidecar in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                data = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            said = {" ".join(str(data.get(key, "")).split()) for key in ("transcript", "agent_text")}
            if said & wanted:
                for path in (sidecar, sidecar.with_name(f"{sidecar.stem}-user.wav"), sidecar.with_name(f"{sidecar.stem}-agent.wav")):
                    path.unlink(missing_ok=True)
                removed += 1
        return removed


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _write_wav(path: Path, pcm: bytes, sample_rate: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as out, wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("recording not saved: %s", task.exception())
