"""espeak-ng through its CLI: offline, always there, and streaming as it synthesises."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import threading
import weakref
from collections.abc import AsyncIterator
from typing import IO, TYPE_CHECKING

from pydantic import Field

from convers.audio import resample
from convers.config import ProviderOptions, provider_options
from convers.contracts.audio import AudioFrame
from convers.contracts.provider import RANK_FALLBACK, AutoChoice, Availability

if TYPE_CHECKING:
    from convers.config import Settings

# espeak-ng always writes 22050 Hz mono PCM16 for its own voices.
ESPEAK_RATE = 22050
# espeak-ng's own default rate, used when tts.words_per_minute is unset.
ESPEAK_WORDS_PER_MINUTE = 175
READ_SIZE = 8192


class WavStreamError(RuntimeError):
    """The synthesiser's output did not start with a PCM16 mono WAV header."""


class WavHeaderParser:
    """Reads the header of a WAV stream whose size fields are bogus (the writer did not know them).

    Feed bytes until `sample_rate` is set; what follows the `data` chunk header is returned as PCM.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.sample_rate: int | None = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return data
        self._buffer.extend(data)
        buffer = self._buffer
        if len(buffer) < 12:
            return b""
        if buffer[:4] != b"RIFF" or buffer[8:12] != b"WAVE":
            raise WavStreamError(f"expected a RIFF/WAVE header, got {bytes(buffer[:12])!r}")
        offset = 12
        while len(buffer) >= offset + 8:
            chunk_id = bytes(buffer[offset : offset + 4])
            (size,) = struct.unpack_from("<I", buffer, offset + 4)
            body = offset + 8
            if chunk_id == b"data":
                if self.sample_rate is None:
                    raise WavStreamError("WAV stream has audio data before its fmt chunk")
                self.done = True
                rest = bytes(buffer[body:])
                self._buffer = bytearray()
                return rest
            if len(buffer) < body + size:
                return b""  # wait for the rest of this chunk
            if chunk_id == b"fmt ":
                audio_format, channels, rate = struct.unpack_from("<HHI", buffer, body)
                (bits,) = struct.unpack_from("<H", buffer, body + 14)
                if audio_format != 1 or channels != 1 or bits != 16:
                    raise WavStreamError(
                        f"expected PCM16 mono, got format {audio_format}, {channels} channels, {bits} bits"
                    )
                self.sample_rate = rate
            offset = body + size + (size & 1)
        return b""


def espeak_version() -> str | None:
    """`espeak-ng --version` first words, or None when the program is missing."""
    program = shutil.which("espeak-ng")
    if program is None:
        return None
    try:
        result = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = result.stdout.split()
    # "eSpeak NG text-to-speech: 1.51  Data at: ..."
    return words[3] if len(words) > 3 else result.stdout.strip() or "unknown version"


def espeak_voices() -> set[str]:
    """Every name espeak-ng accepts for `-v`, lower-cased: language codes, voice names, voice files."""
    program = shutil.which("espeak-ng")
    if program is None:
        return set()
    try:
        listing = subprocess.run([program, "--voices"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        columns = line.split()
        if len(columns) >= 5:
            # Pty Language Age/Gender VoiceName File [Other languages]
            names.update({columns[1].lower(), columns[3].lower(), columns[4].lower(), columns[4].rsplit("/", 1)[-1].lower()})
    return names


class _SpareProcess:
    """The espeak-ng started ahead of need, shared between the event loop and a spawning thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None
        # Set by `kill`: a spare still being started is stopped as soon as it is offered.
        self.closed = False

    def take(self) -> subprocess.Popen[bytes] | None:
        with self.lock:
            process, self.process = self.process, None
        return process if process is not None and process.poll() is None else None

    def offer(self, process: subprocess.Popen[bytes]) -> None:
        with self.lock:
            if self.process is None and not self.closed:
                self.process = process
                return
        _kill(process)  # another thread filled the place first, or the provider was closed

    def reopen(self) -> None:
        with self.lock:
            self.closed = False

    def kill(self) -> None:
        with self.lock:
            self.closed = True
            process, self.process = self.process, None
        if process is not None:
            _kill(process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


class EspeakTts:
    """Runs `espeak-ng --stdout` per text and yields PCM as the process writes it.

    Closing the generator (or cancelling its consumer) kills the process at once, so a barge-in
    never leaves a synthesiser running. Options (settings.tts.options): `pitch` (0-99), `gap_ms`
    (pause between words, in 10 ms units of espeak's -g).

    One espeak-ng is always started ahead of need, waiting on stdin for the next text: starting
    the program and loading its voice is nearly all of its time to first audio (13-17 ms fresh,
    under 1 ms warm, on this 2-core machine). The spare is plain `subprocess`, not bound to an
    event loop, and is killed by `aclose` or when the provider is collected or the program exits.
    """

    name = "espeak-ng"
    sample_rate = ESPEAK_RATE

    def __init__(
        self,
        voice: str = "en-us",
        words_per_minute: int = ESPEAK_WORDS_PER_MINUTE,
        pitch: int | None = None,
        program: str = "espeak-ng",
    ) -> None:
        self.voice = voice
        self.words_per_minute = words_per_minute
        self.pitch = pitch
        self.program = program
        self._spare = _SpareProcess()
        weakref.finalize(self, self._spare.kill)

    class Options(ProviderOptions):
        """tts.options for espeak-ng."""

        # espeak-ng's pitch, 0-99; unset: the voice's own.
        pitch: int | None = Field(default=None, ge=0, le=99)

    @classmethod
    def from_settings(cls, settings: Settings) -> EspeakTts:
        tts = settings.tts
        options = provider_options(cls.Options, settings, "tts", "espeak-ng")
        program = shutil.which("espeak-ng")
        if program is None:
            raise FileNotFoundError("espeak-ng is not installed: apt-get install espeak-ng")
        rate = tts.words_per_minute or ESPEAK_WORDS_PER_MINUTE
        return cls(tts.voice, rate, options.pitch, program)

    @classmethod
    def auto_choice(cls, settings: Settings) -> AutoChoice:
        """Always there and instant, but robotic: the last resort of `auto`."""
        available = cls.availability(settings)
        return AutoChoice(RANK_FALLBACK, available.usable, f"fallback: {available.detail}")

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        version = espeak_version()
        if version is None:
            return Availability(False, "espeak-ng is not installed: apt-get install espeak-ng")
        # espeak-ng silently falls back to its default voice on an unknown name: catch it here.
        voice = settings.tts.voice
        if voice.split("+", 1)[0].lower() not in espeak_voices():
            return Availability(
                False, f"espeak-ng {version} has no voice {voice!r}: pick one from `espeak-ng --voices` for tts.voice"
            )
        return Availability(True, f"espeak-ng {version} found, voice {voice}")

    def command(self) -> list[str]:
        args = [self.program, "--stdout", "-b", "1", "-v", self.voice, "-s", str(self.words_per_minute)]
        if self.pitch is not None:
            args += ["-p", str(self.pitch)]
        return args

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Text goes through stdin so a chunk starting with "-" is never read as an option.
        return subprocess.Popen(
            self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )

    def _prepare_spare(self) -> None:
        try:
            self._spare.offer(self._spawn())
        except OSError:
            pass  # the next text starts its own process and reports the error

    async def _take_process(self) -> subprocess.Popen[bytes]:
        self._spare.reopen()
        process = self._spare.take()
        if process is None:
            process = await asyncio.to_thread(self._spawn)
        # The next text's process starts now, in the background, while this one speaks.
        asyncio.get_running_loop().run_in_executor(None, self._prepare_spare)
        return process

    async def warm_up(self) -> None:
        self._spare.reopen()
        await asyncio.to_thread(self._prepare_spare)

    async def aclose(self) -> None:
        """Stops the spare process (the provider still works: the next text starts a new one)."""
        await asyncio.to_thread(self._spare.kill)

    async def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        text = text.strip()
        if not text:
            return
        process = await self._take_process()
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        # Written from a thread: a long text could fill the pipe while espeak-ng waits for us to read.
        writer = asyncio.ensure_future(asyncio.to_thread(_write_and_close, process.stdin, text.encode("utf-8")))
        # stdout joins this event loop only for this text (the process itself belongs to no loop).
        reader = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), process.stdout
        )
        try:
            header = WavHeaderParser()
            odd = b""
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                pcm = odd + header.feed(data)
                # Reads can split a sample; keep its first byte for the next read.
                cut = len(pcm) - (len(pcm) & 1)
                pcm, odd = pcm[:cut], pcm[cut:]
                if pcm:
                    assert header.sample_rate is not None
                    frame = AudioFrame(pcm, header.sample_rate)
                    yield frame if frame.sample_rate == self.sample_rate else resample(frame, self.sample_rate)
            code = await asyncio.to_thread(process.wait)
            await writer
            if code != 0 or not header.done:
                error = (await asyncio.to_thread(process.stderr.read)).decode("utf-8", "replace").strip()
                raise RuntimeError(
                    f"espeak-ng failed (exit {code}) for voice {self.voice!r}: {error or 'no audio produced'}"
                )
        finally:
            # Killed at once when the reader stops early: a barge-in must silence it now.
            if process.poll() is None:
                process.kill()
            transport.close()
            await asyncio.gather(writer, return_exceptions=True)
            await asyncio.to_thread(_kill, process)


def _write_and_close(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
    except BrokenPipeError:
        pass  # killed before it read everything: nothing left to say
    finally:
        try:
            pipe.close()
        except BrokenPipeError:
            pass
