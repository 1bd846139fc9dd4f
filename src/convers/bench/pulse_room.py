"""`convers bench pulse-room`: `convers talk`'s own transport and echo canceller through a real audio server.

`convers bench echo` runs in simulated time, with the reference and the microphone in lock step. On a
real machine the speaker and the microphone are two PortAudio streams with their own buffers and
callback timing, so the echo's delay against the reference is whatever the audio stack makes it.
This runs the real `LocalAudioTransport` (sounddevice, ALSA's `pulse` device) against a private
PulseAudio server whose null sink `room` is the room: what the speaker plays goes into it, and its
monitor is the microphone. The agent's echo reaches the microphone at 0 dB, with no reverberation,
after the audio server's real buffering. A person (espeak-ng, at the agent's level) is mixed into the
same sink with `paplay` at known moments.

Measured: the delay between the reference the canceller was given and the echo in the microphone
(cross-correlation, every half second), how much echo the canceller removes once learnt, false speech
onsets (the session's `Listener` with the configured VAD) and double-talk cues while only the agent
speaks, and how soon after a person's first sample the listener hears them in the cleaned microphone.
Needs `pulseaudio`, `pulseaudio-utils` (paplay, pactl) and `libasound2-plugins` (ALSA's pulse device).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from convers.audio import concat, dbfs, float32_to_pcm16, frame_from_float, pcm16_to_float32, resample, write_wav
from convers.bench.echo import AGENT_REPLIES, PERSON_INTERRUPTIONS, Voices, _voice_onset
from convers.bench.results import write_json_result
from convers.bench.run_info import machine_info
from convers.bench.summary import summarise
from convers.contracts.audio import AudioFrame
from convers.contracts.transport import InboundAudio
from convers.echo_cancelling import EchoCancelling
from convers.engine.barge_in.echo_witness import event_echo_removed_db
from convers.engine.listening.listener import Listener
from convers.engine.listening.turn_taking import SpeechOnset

RATE = 16000
SINK = "room"
# What the canceller needs before its removal is counted (echo_cancelling.LEARNING_S of agent speech).
LEARNT_AFTER_S = 6.0
# How often `--stall-ms` stalls the process.
STALL_EVERY_S = 0.7
# Silence between two replies.
GAP_S = 0.8
# Onsets this long before a person's first sample to this long after their last are theirs.
PERSON_BEFORE_S = 0.1
PERSON_AFTER_S = 1.0
# The person starts this far into a reply.
PERSON_INTO_REPLY_S = 1.5
# A microphone block louder than this while the agent plays holds its echo (counted for removal).
_ECHO_DBFS = -45.0


class PulseUnavailable(RuntimeError):
    """PulseAudio or ALSA's pulse plugin is missing or will not start; the message says what to install."""


def _missing_tools() -> list[str]:
    missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
    plugin_dirs = [Path("/usr/lib/x86_64-linux-gnu/alsa-lib"), Path("/usr/lib/aarch64-linux-gnu/alsa-lib"), Path("/usr/lib/alsa-lib")]
    if not any((d / "libasound_module_pcm_pulse.so").exists() for d in plugin_dirs):
        missing.append("libasound2-plugins (ALSA's pulse device)")
    return missing


class PulseRoom:
    """A private PulseAudio server (its own socket under `directory`) with one null sink, `room`.

    `environment()` is what a process sets so that ALSA's `pulse` device, and so PortAudio, plays into
    the room and records its monitor. The daemon is this object's child and ends with `stop()`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "native"
        self._process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        return {"PULSE_SERVER": f"unix:{self.socket}", "PULSE_SINK": SINK, "PULSE_SOURCE": f"{SINK}.monitor"}

    def start(self, timeout_s: float = 10.0) -> None:
        missing = _missing_tools()
        if missing:
            raise PulseUnavailable("missing " + ", ".join(missing) + ": apt-get install pulseaudio pulseaudio-utils libasound2-plugins")
        script = self.directory / "room.pa"
        script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"load-module module-null-sink sink_name={SINK}\n"
            f"set-default-sink {SINK}\nset-default-source {SINK}.monitor\n",
            encoding="utf-8",
        )
        runtime = self.directory / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        # Its own runtime and state directories: nothing of a desktop session's PulseAudio is touched.
        env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PULSE_STATE_PATH": str(self.directory / "state"),
               "PULSE_RUNTIME_PATH": str(runtime)}
        self._process = subprocess.Popen(
            ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
             "--disable-shm=yes", f"--log-target=file:{self.directory / 'pulseaudio.log'}"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = (self.directory / "pulseaudio.log")
                detail = log.read_text(errors="replace")[-600:] if log.exists() else ""
                raise PulseUnavailable(f"pulseaudio exited with {self._process.returncode}: {detail}")
            if self.socket.exists() and self._pactl("info").returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise PulseUnavailable(f"pulseaudio did not answer within {timeout_s:.0f} s")

    def _pactl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["pactl", "--server", f"unix:{self.socket}", *args], capture_output=True, timeout=5, check=False)

    def play(self, path: Path) -> subprocess.Popen[bytes]:
        """Starts playing a WAV file into the room (a person speaking in it); returns the player."""
        return subprocess.Popen(["paplay", "--server", f"unix:{self.socket}", f"--device={SINK}", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


class RecordingEchoCancelling(EchoCancelling):
    """EchoCancelling that also keeps what it was given and what it gave back, with the moments it happened."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.monotonic()
        # Appended from the speaker's audio thread; read after the run.
        self.played_frames: list[AudioFrame] = []
        self.played_at: list[float] = []
        self.mic_frames: list[AudioFrame] = []
        # Per microphone frame: when it was cleaned, the played samples handed over up to then (at the
        # played rate), the reference queued but not yet given to the canceller (ms), its output.
        self.cleaned_at: list[float] = []
        self.rendered_samples: list[int] = []
        self.queued_ms: list[float] = []
        self.cleaned_frames: list[AudioFrame] = []
        self.double_talk_flags: list[bool] = []
        self.witness_queued: list[int] = []
        self.witness_realignments = 0
        self.witness_left_db: list[float | None] = []
        self._played_total = 0
        self.glitches = 0

    def device_glitched(self) -> None:
        super().device_glitched()
        self.glitches += 1

    def played(self, frame: AudioFrame) -> None:
        with self._lock:
            self._played.append(frame)
            self.played_frames.append(frame)
            self.played_at.append(time.monotonic() - self.started)
            self._played_total += len(frame.pcm) // 2

    def cleaned(self, frame: AudioFrame) -> AudioFrame:
        with self._lock:
            # What super().cleaned() takes from the queue next (a speaker block landing in between is
            # off by one block here, which the per-window medians below do not feel).
            rendered = self._played_total
            queued = sum(len(f.pcm) // 2 * 1000 / f.sample_rate for f in self._played)
        out = super().cleaned(frame)
        self.mic_frames.append(frame)
        self.cleaned_at.append(time.monotonic() - self.started)
        self.rendered_samples.append(rendered)
        self.queued_ms.append(queued)
        self.cleaned_frames.append(out)
        self.double_talk_flags.append(self.double_talk)
        # The double-talk witness: how many played blocks wait to be paired with a microphone block,
        # and what its linear filter left of this one (None while it rests).
        dt = self._double_talk
        self.witness_queued.append(len(dt._queued))
        self.witness_realignments = getattr(dt, "realignments", 0)
        self.witness_left_db.append(dbfs(AudioFrame(dt.residual, self.rate)) if dt.residual is not None else None)
        return out


@dataclass
class _PersonPlayed:
    audio: np.ndarray  # at RATE
    text: str
    started_at: float  # monotonic seconds since the canceller's start, when paplay was started
    # The listener's onset on this voice alone, after its first sample (ms): what the VAD needs anyway.
    alone_onset_ms: float | None = None


@dataclass
class RoomRun:
    """What one run recorded: the canceller's inputs and outputs, the listener's onsets, the people played."""

    cancelling: RecordingEchoCancelling
    played_rate: int
    mic_rate: int
    # The arbiter's `echo_witness_removed_db`: an onset the linear filter explains this much of pauses nothing.
    witness_echo_db: float
    onsets_cleaned: list[float] = field(default_factory=list)  # stream seconds of the cleaned microphone
    # Per cleaned onset: how much of its audio the linear filter explained as echo (dB), as the session
    # asks it at that moment (engine/barge_in/echo_witness.py; the arbiter pauses nothing above
    # `BargeInPolicy.echo_witness_removed_db`), and whether the canceller was learning the room then
    # (at the start, and again after a device glitch: an onset pauses nothing then).
    onsets_cleaned_witness_db: list[float | None] = field(default_factory=list)
    onsets_cleaned_learning: list[bool] = field(default_factory=list)
    onsets_raw: list[float] = field(default_factory=list)  # stream seconds of the raw microphone
    people: list[_PersonPlayed] = field(default_factory=list)
    agent_s: float = 0.0
    wall_s: float = 0.0
    # PortAudio's status flags, as the transport logs them: each an underflow or overflow of a device buffer.
    stream_status: dict[str, int] = field(default_factory=dict)


def _correlate(segment: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """Where in `reference` `segment` best matches (its start), and the normalised correlation there."""
    n = len(reference) + len(segment)
    size = 1 << math.ceil(math.log2(n))
    spectrum = np.fft.rfft(reference, size) * np.conj(np.fft.rfft(segment, size))
    corr = np.fft.irfft(spectrum, size)[: len(reference) - len(segment) + 1]
    energy = np.convolve(reference * reference, np.ones(len(segment)), mode="valid")
    norm = corr / (np.sqrt(energy * float(np.dot(segment, segment))) + 1e-12)
    best = int(np.argmax(norm))
    return best, float(norm[best])


def analyse(run: RoomRun) -> dict[str, Any]:
    """The figures of one run (see the module docstring)."""
    c = run.cancelling
    played16 = pcm16_to_float32(resample(concat(c.played_frames), RATE).pcm)
    mic16 = pcm16_to_float32(resample(concat(c.mic_frames), RATE).pcm)
    cleaned16 = pcm16_to_float32(concat(c.cleaned_frames, RATE).pcm) if c.cleaned_frames else np.zeros(0)
    mic_ends = np.cumsum([round(len(f.pcm) // 2 * RATE / f.sample_rate) for f in c.mic_frames])
    rendered16 = np.asarray(c.rendered_samples, dtype=float) * RATE / run.played_rate
    person_spans = _person_spans(run, mic16)

    # (a) the delay: for each half second of microphone with the agent's echo in it and no person, the
    # reference sample it heard; the delay is how much reference the canceller had been given past it.
    window = RATE // 2
    delays_ms: list[float] = []
    wall_delays_ms: list[float] = []
    delay_at_s: list[float] = []
    played_at = np.asarray(c.played_at)
    played_ends = np.cumsum([len(f.pcm) // 2 for f in c.played_frames]) * RATE / run.played_rate
    for start in range(0, len(mic16) - window, window):
        segment = mic16[start : start + window]
        t = start / RATE
        if np.sqrt(np.mean(segment**2)) < 10 ** (_ECHO_DBFS / 20) or _in_spans(t, t + 0.5, person_spans):
            continue
        frame_index = int(np.searchsorted(mic_ends, start + window))
        if frame_index >= len(rendered16):
            break
        given = rendered16[frame_index]
        lo = max(0, int(given) - 2 * RATE - window)
        hi = min(len(played16), int(given) + RATE // 2)
        if hi - lo <= window:
            continue
        offset, score = _correlate(segment, played16[lo:hi])
        if score < 0.6:
            continue
        heard = lo + offset + window  # the reference sample heard at the window's end
        delays_ms.append((given - heard) * 1000 / RATE)
        delay_at_s.append(t)
        # Wall clock: from the speaker callback that handed that sample over to the cleaning of the
        # microphone frame that heard it.
        played_index = int(np.searchsorted(played_ends, heard))
        if played_index < len(played_at):
            wall_delays_ms.append((c.cleaned_at[frame_index] - played_at[played_index]) * 1000)

    # (b) the echo removed once learnt, per microphone frame with the agent's echo and no person.
    removed: list[float] = []
    removed_learning: list[float] = []
    witness_removed: list[float] = []
    agent_frames = 0
    double_talk_frames = 0
    double_talk_fires = 0
    previous = False
    cleaned_at_sample = 0
    for i, (mic, out) in enumerate(zip(c.mic_frames, c.cleaned_frames, strict=True)):
        t = (mic_ends[i] - len(out.pcm) // 2) / RATE
        cleaned_at_sample += len(out.pcm) // 2
        in_person = _in_spans(t, t + 0.02, person_spans)
        loud = dbfs(mic) > _ECHO_DBFS
        if loud and not in_person and out.pcm:
            (removed if t >= LEARNT_AFTER_S else removed_learning).append(dbfs(mic) - dbfs(out))
            left = c.witness_left_db[i]
            if t >= LEARNT_AFTER_S and left is not None:
                witness_removed.append(dbfs(mic) - left)
        if not in_person and loud:
            agent_frames += 1
            if c.double_talk_flags[i]:
                double_talk_frames += 1
                if not previous:
                    double_talk_fires += 1
        previous = c.double_talk_flags[i]

    # (c) onsets while only the agent speaks; (d) the person heard.
    def outside(onsets: list[float]) -> list[float]:
        return [t for t in onsets if not _in_spans(t, t, person_spans)]

    people = []
    for (onset, end), person in zip(person_spans, run.people, strict=True):
        onsets = [t for t in run.onsets_cleaned if onset - PERSON_BEFORE_S <= t <= end]
        cue = _first_cue(c, mic_ends, onset, end)
        people.append({"said": person.text, "onset_s": round(onset, 3),
                       "vad_onset_after_ms": round((onsets[0] - onset) * 1000) if onsets else None,
                       "vad_onset_alone_ms": person.alone_onset_ms,
                       "double_talk_after_ms": round((cue - onset) * 1000) if cue is not None else None})
    minutes = run.agent_s / 60
    false_cleaned = outside(run.onsets_cleaned)
    false_learnt = [db for t, db, learning in zip(run.onsets_cleaned, run.onsets_cleaned_witness_db,
                                                  run.onsets_cleaned_learning, strict=True)
                    if not _in_spans(t, t, person_spans) and not learning]
    false_raw = outside(run.onsets_raw)
    # How far the reference handed over ran ahead of the microphone, by sample counts (ms): it grows
    # when one clock runs faster than the other or a device buffer under- or overflows.
    lead_ms = (rendered16 - mic_ends) * 1000 / RATE
    tenth = max(1, len(lead_ms) // 10)
    callback_gaps = np.diff(played_at) * 1000 if len(played_at) > 1 else np.zeros(1)
    mic_gaps = np.diff(np.asarray(c.cleaned_at)) * 1000 if len(c.cleaned_at) > 1 else np.zeros(1)
    return {
        "played_rate": run.played_rate,
        "mic_rate": run.mic_rate,
        "wall_s": round(run.wall_s, 1),
        "agent_speech_min": round(minutes, 2),
        "delay_ms": _spread_of(delays_ms),
        "delay_ms_by_time": [[round(t, 1), round(d, 1)] for t, d in zip(delay_at_s, delays_ms, strict=True)][::4],
        "delay_ms_first_vs_last_10": [round(float(np.median(delays_ms[:10])), 1), round(float(np.median(delays_ms[-10:])), 1)]
        if len(delays_ms) >= 20 else None,
        "wall_delay_ms": _spread_of(wall_delays_ms),
        "speaker_lead_ms": _spread_of(list(lead_ms)),
        "speaker_lead_ms_first_vs_last_tenth": [round(float(np.median(lead_ms[:tenth])), 1), round(float(np.median(lead_ms[-tenth:])), 1)]
        if len(lead_ms) else None,
        "stream_status": run.stream_status,
        "reference_queued_ms": _spread_of(c.queued_ms),
        "speaker_callback_gap_ms": _spread_of(list(callback_gaps)),
        "mic_frame_gap_ms": _spread_of(list(mic_gaps)),
        "echo_removed_db_p50": round(float(np.median(removed)), 1) if removed else None,
        "echo_removed_db_p10": round(float(np.percentile(removed, 10)), 1) if removed else None,
        "echo_removed_db_learning_p50": round(float(np.median(removed_learning)), 1) if removed_learning else None,
        "witness_removed_db_p50": round(float(np.median(witness_removed)), 1) if witness_removed else None,
        "witness_queued_blocks": _spread_of(c.witness_queued),
        "witness_realignments": c.witness_realignments,
        "echo_left_dbfs_p90": round(float(np.percentile([dbfs(f) for f in c.cleaned_frames if f.pcm], 90)), 1)
        if c.cleaned_frames else None,
        "false_onsets_cleaned": len(false_cleaned),
        "false_onsets_cleaned_per_min": round(len(false_cleaned) / minutes, 2) if minutes else None,
        "false_onsets_cleaned_at_s": [round(t, 2) for t in false_cleaned[:10]],
        # While the canceller counted the room learnt (not in its first LEARNING_S of agent speech, nor
        # RELEARN_S after a device glitch), what the linear filter explained of each as echo (dB), and
        # how many would pause the agent: the arbiter lets through an onset the filter explains
        # (`echo_witness_removed_db`).
        "false_onsets_cleaned_learnt": len(false_learnt),
        "false_onsets_learnt_witness_db": [None if db is None else round(db, 1) for db in false_learnt],
        "false_onsets_learnt_pausing": sum(1 for db in false_learnt if db is None or db < run.witness_echo_db),
        "device_glitches": c.glitches,
        "false_onsets_raw_per_min": round(len(false_raw) / minutes, 2) if minutes else None,
        "double_talk_agent_only_fires": double_talk_fires,
        "double_talk_agent_only_frames": double_talk_frames,
        "agent_only_echo_frames": agent_frames,
        "people": people,
        "cleaned_s": round(len(cleaned16) / RATE, 2),
    }


def _spread_of(values: Sequence[float]) -> dict[str, float | int | None]:
    return summarise(values, ("min", "p5", "p50", "p95", "max"))


def _in_spans(lo: float, hi: float, spans: Sequence[tuple[float, float]]) -> bool:
    return any(lo <= end + PERSON_AFTER_S and hi >= onset - PERSON_BEFORE_S for onset, end in spans)


def _person_spans(run: RoomRun, mic16: np.ndarray) -> list[tuple[float, float]]:
    """Each person's first and last voiced sample in the microphone's stream time, found by correlation
    (paplay's own start-up delay is unknown), searched from two seconds before its start to three after."""
    spans = []
    cleaned_at = np.asarray(run.cancelling.cleaned_at)
    mic_ends = np.cumsum([round(len(f.pcm) // 2 * RATE / f.sample_rate) for f in run.cancelling.mic_frames])
    for person in run.people:
        index = int(np.searchsorted(cleaned_at, person.started_at))
        near = int(mic_ends[min(index, len(mic_ends) - 1)])
        lo, hi = max(0, near - 2 * RATE), min(len(mic16), near + 3 * RATE + len(person.audio))
        voiced = person.audio[_voice_onset(person.audio) :]
        head = voiced[: RATE // 2]
        offset, _ = _correlate(head, mic16[lo:hi])
        onset = (lo + offset) / RATE
        last = np.flatnonzero(np.abs(voiced) > 0.02)
        spans.append((onset, onset + (int(last[-1]) if len(last) else 0) / RATE))
    return spans


def _first_cue(c: RecordingEchoCancelling, mic_ends: np.ndarray, onset: float, end: float) -> float | None:
    for i, flag in enumerate(c.double_talk_flags):
        t = mic_ends[i] / RATE
        if flag and onset - PERSON_BEFORE_S <= t <= end:
            return t
    return None


async def play_room(transport: Any, cancelling: RecordingEchoCancelling, room: PulseRoom, voices: Voices,
                    vad_cleaned: Any, vad_raw: Any, settings: Any, *, replies: int, person_every: int,
                    workdir: Path, progress: Callable[[str], None] = lambda _: None) -> RoomRun:
    """Plays `replies` of the agent's replies through `transport` (a person over every `person_every`-th,
    0: none) while listening to the cleaned and the raw microphone; returns what was recorded."""
    run = RoomRun(cancelling, transport.output_format.sample_rate, transport._device_input_rate,
                  settings.barge_in.echo_witness_removed_db)
    listen_cleaned = Listener(vad_cleaned, settings.turns)
    listen_raw = Listener(vad_raw, settings.turns)
    heard_samples = [0, 0]  # stream position of the cleaned and the raw microphone (samples at RATE)

    async def listen() -> None:
        raw_fed = 0
        async for event in transport.inbound():
            if not isinstance(event, InboundAudio):
                continue
            heard_samples[0] += len(event.frame.pcm) // 2
            for e in listen_cleaned.feed(event.frame, heard_samples[0] / RATE):
                if isinstance(e, SpeechOnset):
                    run.onsets_cleaned.append(e.at)
                    run.onsets_cleaned_witness_db.append(event_echo_removed_db(cancelling.witness_removed_db, e, e.at))
                    run.onsets_cleaned_learning.append(cancelling.learning)
            # The raw microphone frames that went in since (one, unless a frame left no whole block).
            for raw in cancelling.mic_frames[raw_fed:]:
                heard_samples[1] += round(len(raw.pcm) // 2 * RATE / raw.sample_rate)
                for e in listen_raw.feed(raw, heard_samples[1] / RATE):
                    if isinstance(e, SpeechOnset):
                        run.onsets_raw.append(e.at)
            raw_fed = len(cancelling.mic_frames)

    person_files = []
    for i, audio in enumerate(voices.person):
        path = workdir / f"person-{i}.wav"
        write_wav(path, frame_from_float(audio, RATE))
        person_files.append(path)
    started = time.monotonic()
    listener = asyncio.create_task(listen())
    players: list[subprocess.Popen[bytes]] = []
    try:
        await asyncio.sleep(1.0)  # the streams open; a second of the room's silence
        for n in range(replies):
            audio = voices.agent[n % len(voices.agent)]
            await transport.send_audio(n + 1, 0, AudioFrame(float32_to_pcm16(audio), RATE))
            duration = len(audio) / RATE
            if person_every and n % person_every == person_every - 1 and duration > PERSON_INTO_REPLY_S + 2:
                await asyncio.sleep(PERSON_INTO_REPLY_S)
                which = (n // person_every) % len(voices.person)
                run.people.append(_PersonPlayed(voices.person[which], voices.person_texts[which],
                                                time.monotonic() - cancelling.started))
                players.append(room.play(person_files[which]))
                await asyncio.sleep(duration - PERSON_INTO_REPLY_S + GAP_S)
            else:
                await asyncio.sleep(duration + GAP_S)
            run.agent_s += duration
            progress(f"reply {n + 1}/{replies} played ({duration:.1f} s)")
        await asyncio.sleep(1.0)
    finally:
        for player in players:
            if player.poll() is None:
                player.terminate()
            player.wait()
        await transport.close()
        await listener
    run.wall_s = time.monotonic() - started
    for person in run.people:
        person.alone_onset_ms = _onset_alone(person.audio, vad_raw, settings)
    return run


def _onset_alone(audio: np.ndarray, vad: Any, settings: Any) -> float | None:
    """When the listener hears `audio` alone start, after its first voiced sample (ms)."""
    vad.reset()
    listener = Listener(vad, settings.turns)
    block = RATE // 50
    for start in range(0, len(audio), block):
        for event in listener.feed(frame_from_float(audio[start : start + block], RATE), (start + block) / RATE):
            if isinstance(event, SpeechOnset):
                return round((event.at - _voice_onset(audio) / RATE) * 1000)
    return None


def run_benchmark(settings: Any, progress: Callable[[str], None], *, replies: int = 8, person_every: int = 2,
                  directory: Path | None = None, stall_ms: float = 0.0) -> dict[str, Any]:
    """Starts a private PulseAudio, plays `replies` of the agent through the real local transport, analyses."""
    from convers.app.wiring import build, provider_name
    from convers.echo_cancelling import canceller_factory

    make_canceller = canceller_factory(settings)
    if make_canceller is None:
        raise RuntimeError("no echo canceller can run here (`convers doctor` says why)")
    with tempfile.TemporaryDirectory(prefix="convers-pulse-", dir=directory) as tmp:
        workdir = Path(tmp)
        room = PulseRoom(workdir)
        room.start()
        saved = {key: os.environ.get(key) for key in room.environment()}
        os.environ.update(room.environment())
        try:
            progress(f"synthesising {replies} replies ({provider_name('tts', settings)}) and the person (espeak-ng)")
            voices = asyncio.run(Voices.synthesise(build("tts", settings), build("tts", settings, "espeak-ng"),
                                                   AGENT_REPLIES[: max(1, replies)], PERSON_INTERRUPTIONS))
            result = measure(settings, make_canceller, room, voices, replies=replies, person_every=person_every,
                             workdir=workdir, progress=progress, stall_ms=stall_ms)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            room.stop()
    return {
        "benchmark": "pulse-room",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "agent_voice": provider_name("tts", settings),
        "vad": provider_name("vad", settings),
        "config": {"replies": replies, "person_every": person_every, "stall_ms": stall_ms,
                   "room": "PulseAudio null sink, its monitor as the microphone",
                   "echo_db": 0.0, "device": "ALSA pulse"},
        **result,
    }


def measure(settings: Any, make_canceller: Callable[[], Any], room: PulseRoom, voices: Voices, *, replies: int,
            person_every: int, workdir: Path, progress: Callable[[str], None] = lambda _: None,
            stall_ms: float = 0.0) -> dict[str, Any]:
    """One run through an already started room (its environment already set in this process); with
    `stall_ms`, the process stalls that long every STALL_EVERY_S (`Stalls`)."""
    from convers.app.wiring import build
    from convers.transports.local import LocalAudioTransport, import_sounddevice

    # PortAudio lists the devices once, when it starts: ALSA's pulse device is only there if the
    # server answered then, so it starts again now that this room's server runs and is named.
    sd = import_sounddevice()
    sd._terminate()
    sd._initialize()
    cancelling = RecordingEchoCancelling(make_canceller())
    vad_cleaned, vad_raw = build("vad", settings), build("vad", settings)
    statuses = _StatusCounter()
    transport_log = logging.getLogger("convers.transports.local")
    level = transport_log.level
    transport_log.addHandler(statuses)
    transport_log.setLevel(logging.DEBUG)  # the stream status flags are logged at debug
    try:
        transport = LocalAudioTransport("pulse", "pulse", echo=cancelling)
        with Stalls(stall_ms) as stalls:
            run = asyncio.run(play_room(transport, cancelling, room, voices, vad_cleaned, vad_raw, settings,
                                        replies=replies, person_every=person_every, workdir=workdir, progress=progress))
    finally:
        transport_log.removeHandler(statuses)
        transport_log.setLevel(level)
    run.stream_status = dict(statuses.counts)
    return {**analyse(run), "stalls": {"ms": stall_ms, "every_s": STALL_EVERY_S, "count": stalls.count}}


class Stalls:
    """While entered, a thread holds the interpreter lock for `stall_ms` every STALL_EVERY_S (0: never),
    as a busy moment of the agent can: the sound devices' callbacks, Python code, then come late,
    and the devices under- and overflow, as on a loaded machine. The lock is held by sorting a list
    of floats (one C call), of a length timed at the start to take `stall_ms`."""

    def __init__(self, stall_ms: float) -> None:
        self.stall_ms = stall_ms
        self.count = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._items: list[float] = []

    def __enter__(self) -> Stalls:
        if self.stall_ms > 0:
            rng = random.Random(7)
            probe = [rng.random() for _ in range(100_000)]
            started = time.perf_counter()
            sorted(probe)
            per_item_ms = (time.perf_counter() - started) * 1000 / len(probe)
            self._items = [rng.random() for _ in range(max(1, round(self.stall_ms / per_item_ms)))]
            self._thread = threading.Thread(target=self._run, name="stalls", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(STALL_EVERY_S):
            sorted(self._items)
            self.count += 1

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class _StatusCounter(logging.Handler):
    """Counts the transport's 'microphone status: ...' and 'speaker status: ...' lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if " status: " in message:
            self.counts[message] = self.counts.get(message, 0) + 1


def print_summary(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    d = result["delay_ms"]
    echo(f"devices: speaker {result['played_rate']} Hz, microphone {result['mic_rate']} Hz; {result['agent_speech_min']} min of agent speech")
    echo(f"echo delay behind the reference (ms): p5 {d.get('p5')} p50 {d.get('p50')} p95 {d.get('p95')} "
         f"(min {d.get('min')}, max {d.get('max')}, n {d['n']}); first vs last 10: {result['delay_ms_first_vs_last_10']}")
    echo(f"reference handed over ahead of the microphone (ms): {result['speaker_lead_ms']}, first vs last tenth "
         f"{result['speaker_lead_ms_first_vs_last_tenth']}; stream status: {result['stream_status'] or 'none'}")
    echo(f"reference queued at each microphone frame (ms): {result['reference_queued_ms']}")
    echo(f"echo removed once learnt: p50 {result['echo_removed_db_p50']} dB, p10 {result['echo_removed_db_p10']} dB "
         f"(while learning p50 {result['echo_removed_db_learning_p50']} dB)")
    echo(f"the double-talk witness (Speex, linear) removed p50 {result['witness_removed_db_p50']} dB; "
         f"played blocks queued for it: {result['witness_queued_blocks']}, "
         f"realigned {result['witness_realignments']} times")
    echo(f"false onsets while only the agent spoke: cleaned {result['false_onsets_cleaned']} "
         f"({result['false_onsets_cleaned_per_min']}/min), raw microphone {result['false_onsets_raw_per_min']}/min; "
         f"double-talk cue fired {result['double_talk_agent_only_fires']} times")
    echo(f"device glitches (each: the room is learnt again for a moment): {result['device_glitches']}")
    echo(f"false onsets once learnt: {result['false_onsets_cleaned_learnt']}, the linear filter explained "
         f"{result['false_onsets_learnt_witness_db']} dB of them; {result['false_onsets_learnt_pausing']} would pause the agent")
    for person in result["people"]:
        echo(f"person {person['said']!r}: VAD onset {person['vad_onset_after_ms']} ms (alone {person['vad_onset_alone_ms']} ms), double talk {person['double_talk_after_ms']} ms after their first sample")


def write_result(result: dict[str, Any], out: Path | None = None) -> Path:
    return write_json_result(result, out, "pulse-room")

