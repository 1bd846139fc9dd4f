"""EchoCancelling: runs an echo canceller between a speaker and a microphone of any rate and block size.

The speaker side may live on an audio thread (`played` only queues); everything that touches the
canceller runs where the microphone is read (`cleaned`), so render and capture blocks reach it in
the order they happened: all that was played up to now, then the microphone block that heard it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from convers.audio import Rechunker, StreamResampler, dbfs
from convers.contracts.audio import AudioFrame
from convers.contracts.echo import EchoCanceller
from convers.double_talk import DoubleTalk
from convers.linear_residual import LinearResidual

if TYPE_CHECKING:
    from convers.config import Settings

log = logging.getLogger(__name__)

# What the canceller needs to learn a room: WebRTC AEC3 let Piper's voice through at -31..-43 dBFS
# (which Silero scores 0.45-0.63) between 1.5 and 2.9 s into a session's first reply, and never
# after (simulated rooms, 20-200 ms, `convers bench echo`). 4 s of agent speech keeps a margin.
LEARNING_S = 6.0
# After a sound device under- or overflowed, the echo's delay against what was played has moved by
# however many samples it lost or added. WebRTC AEC3 finds it again, but let the agent's echo through
# up to 1.4 s after a 20-60 ms jump (simulated rooms, Piper's voice), and the double-talk witness
# removed next to nothing of it for 4 s and more. For this much agent speech after such a moment
# the room counts as being learnt again: an onset over the agent pauses nothing, and a cut waits
# (the barge-in arbiter's learning rules).
RELEARN_S = 2.0
# A played block quieter than this is not speech the canceller learns from.
_AUDIBLE_DBFS = -50.0


class EchoCancelling:
    """Feeds `canceller` what was played and what the microphone heard; hands back the cleaned microphone.

    The cleaned audio comes out at the canceller's rate (16 kHz for WebRTC, what the VAD wants), in
    whole canceller blocks: up to one block (10 ms) waits for the next microphone frame. While the
    agent has been silent for a second, the microphone itself comes out (its echo is gone, and AEC3's
    output would be the same 8 ms later). A canceller that fails is switched off with one warning and
    the microphone passes through: the conversation goes on, with the barge-in rules alone against
    the echo.
    """

    def __init__(self, canceller: EchoCanceller, learning_s: float = LEARNING_S) -> None:
        self.canceller = canceller
        self.rate = canceller.sample_rate
        self.failed = False
        self.learning_s = learning_s
        # Seconds of audible agent speech the canceller has been given so far.
        self.heard_s = 0.0
        self._lock = threading.Lock()
        self._played: deque[AudioFrame] = deque()
        # A sound device lost or added samples since the last microphone frame (`device_glitched`).
        self._glitched = False
        self._played_resampler: StreamResampler | None = None
        self._mic_resampler: StreamResampler | None = None
        self._render_blocks = Rechunker(canceller.frame_samples, self.rate)
        self._capture_blocks = Rechunker(canceller.frame_samples, self.rate)
        self._double_talk = DoubleTalk.for_blocks(self.rate, canceller.frame_samples)
        # The same stretches through the double-talk witness's linear filter alone (`unsuppressed`).
        self._linear = LinearResidual(self.rate) if self._double_talk.witness is not None else None

    @property
    def learning(self) -> bool:
        """The canceller has not yet heard enough of the agent to have learnt the room."""
        return not self.failed and self.heard_s < self.learning_s

    @property
    def double_talk(self) -> bool:
        """Someone speaks over the agent: the canceller removed little of the last microphone block (`convers.double_talk`)."""
        return not self.failed and self._double_talk.now

    @property
    def clock_drift_ppm(self) -> float | None:
        """How much faster the microphone's clock runs than the speaker's, as the double-talk witness
        follows it (`convers.clock_drift`); None without the witness."""
        return None if self._double_talk.witness is None else self._double_talk.drift_ppm

    def witness_removed_db(self, span_s: float, ago_s: float = 0.0) -> float | None:
        """How much of the microphone the linear echo filter explained as the agent's echo over `span_s`
        of audio that ended `ago_s` ago (dB; `DoubleTalk.witness_removed_db`); None when not at hand."""
        return None if self.failed else self._double_talk.witness_removed_db(span_s, ago_s)

    def unsuppressed(self, audio: AudioFrame, since: AudioFrame | None = None) -> AudioFrame | None:
        """`audio`, a stretch of this canceller's recent output, as the linear filter alone left it: the
        person's voice whole, with some echo (`convers.linear_residual`); from the start of the earlier
        stretch `since` when given; None when that is not at hand."""
        return self._kept(audio, since, microphone=False)

    def microphone(self, audio: AudioFrame, since: AudioFrame | None = None) -> AudioFrame | None:
        """`audio`, a stretch of this canceller's recent output, as the microphone heard it (the agent's
        echo and all); from the start of the earlier stretch `since` when given; None when not at hand."""
        return self._kept(audio, since, microphone=True)

    def _kept(self, audio: AudioFrame, since: AudioFrame | None, microphone: bool) -> AudioFrame | None:
        if self._linear is None or self.failed or audio.sample_rate != self.rate:
            return None
        if since is not None and since.sample_rate != self.rate:
            return None
        read = self._linear.microphone_of if microphone else self._linear.of
        kept = read(audio.pcm, since.pcm if since is not None else None)
        return AudioFrame(kept, self.rate) if kept is not None else None

    def resume_stream(self) -> None:
        """Makes this canceller ready for a new stream from the same room (a page that reconnected):
        drops the played audio still queued, the remainders of half blocks and the resamplers' state
        (the new stream may have another rate), and the double-talk cue's and linear residual's
        recent audio; keeps what was learnt: the canceller's filter and `heard_s`. No audio of the
        old stream is kept here afterwards, apart from the native canceller's own short buffers."""
        with self._lock:
            self._played.clear()
        self._played_resampler = self._mic_resampler = None
        self._render_blocks.reset()
        self._capture_blocks.reset()
        self._double_talk.new_stream()
        if self._linear is not None:
            self._linear.clear()

    def played(self, frame: AudioFrame) -> None:
        """What the speaker played just now (silence included); safe to call from an audio thread."""
        with self._lock:
            self._played.append(frame)

    def device_glitched(self) -> None:
        """The speaker underflowed or the microphone overflowed (PortAudio's stream flags): the echo
        no longer comes where the canceller learnt it, so the room counts as being learnt again for
        RELEARN_S of agent speech, and the double-talk witness must show again that it follows the
        echo. Safe to call from an audio thread."""
        with self._lock:
            self._glitched = True

    def cleaned(self, frame: AudioFrame) -> AudioFrame:
        """The microphone `frame` with the echo of what was played removed, at `self.rate`."""
        with self._lock:
            played, self._played = self._played, deque()
            glitched, self._glitched = self._glitched, False
        if glitched:
            self.heard_s = min(self.heard_s, max(0.0, self.learning_s - RELEARN_S))
            self._double_talk.echo_moved()
        self._mic_resampler = _resampler_for(self._mic_resampler, frame.sample_rate, self.rate)
        mic = self._mic_resampler.push(frame)
        if self.failed:
            return mic
        try:
            for piece in played:
                self._played_resampler = _resampler_for(self._played_resampler, piece.sample_rate, self.rate)
                for block in self._render_blocks.push(self._played_resampler.push(piece)):
                    self.canceller.render(block.pcm)
                    audible = dbfs(block) > _AUDIBLE_DBFS
                    self._double_talk.played(block.pcm, audible)
                    if audible and self.heard_s < self.learning_s:
                        self.heard_s += block.duration_s
            cleaned = []
            for block in self._capture_blocks.push(mic):
                out = self.canceller.capture(block.pcm)
                self._double_talk.heard(block.pcm, out)
                # Once the agent's echo has died away there is nothing to remove, and AEC3's output is
                # the microphone 8 ms late (its internal framing): the person's words would start and end
                # that much later for the VAD. So the microphone itself is handed on then. Switching
                # drops 8 ms of the room, or repeats them when the agent speaks again: both happen
                # while the agent has been silent a second, and its echo starts no sooner than it is played.
                # The canceller still gets every block, so it keeps what it learnt.
                cleaned.append(block.pcm if self._double_talk.echo_gone else out)
                if self._linear is not None:
                    self._linear.add(cleaned[-1], self._double_talk.residual or block.pcm, block.pcm)
            return AudioFrame(b"".join(cleaned), self.rate)
        except Exception as error:  # noqa: BLE001 - a failed canceller must not take the microphone with it
            self.failed = True
            log.warning("echo cancellation failed and is off for this session: %s", error)
            self._capture_blocks.reset()
            return mic


def _resampler_for(current: StreamResampler | None, in_rate: int, out_rate: int) -> StreamResampler:
    """The stream's resampler, a new one when the input rate changed (a new device or hello)."""
    if current is None or current.in_rate != in_rate:
        return StreamResampler(in_rate, out_rate)
    return current


def canceller_factory(settings: Settings) -> Callable[[], EchoCanceller] | None:
    """Makes the configured echo canceller, one per audio stream (each learns its own room); None,
    with a warning, when echo cancellation is off or cannot run here. Optional: the barge-in rules
    still apply without it. A misspelt option is an error, not a reason to go on without."""
    from convers import registry
    from convers.config import ConfigError

    if not settings.echo.enabled:
        return None
    name = settings.echo.provider
    try:
        registry.create("echo", name, settings)  # fails now, once, if it cannot run here
    except ConfigError:
        raise
    except (registry.ProviderUnavailableError, registry.UnknownProviderError, RuntimeError, ValueError) as error:
        log.warning("echo cancellation is off: %s", error)
        return None
    return lambda: registry.create("echo", name, settings)
