"""DoubleTalk: tells from what the echo canceller removed whether someone speaks over the agent.

Once it has learnt a room, WebRTC AEC3 takes 50-70 dB of the agent's echo out of the microphone
(`convers bench echo`). A person speaking over the agent comes through far less changed: its
suppressor thins them by 3-12 dB, not 60. So when the agent has been speaking for a while and the
cleaned audio of the last ~30 ms is within `MAX_REMOVED_DB` of what the microphone heard, and well
above the cleaned audio's own floor (the room's noise, which passes through unchanged), there is
more than echo in the room. That is the classic double-talk test of echo cancellers, read from the
outside of one. AEC3 alone also lets the agent's echo through now and then for a few tenths of a
second, which that test takes for a person; so a second, purely linear filter (Speex's,
`convers.linear_echo`) must agree: it too removed under `MAX_WITNESS_REMOVED_DB`. Without that
witness (libspeexdsp missing) there is no cue at all, and the VAD alone pauses the agent.

Why it exists: the VAD on the cleaned audio hears such a person late, because the suppressor thins
their first syllables most. Measured on simulated rooms (150 a level, the packaged voice, a person
over the agent; not the rooms `convers bench echo` reports on), the first VAD frame at 0.5 came
206 ms (p50) after the person's first sample at echo 0 dB and 143 ms at -5 dB.

What the suppressor thins first is what its test looks at, so AEC3 is allowed to remove up to
40 dB (`MAX_REMOVED_DB`; it removes 55-85 dB of the echo alone). The linear witness, which never
suppresses, tells the two apart, but on its own it also passes the quiet gaps between the agent's
words, where the reverberation tail is all there is and little of it is removed. So the witness's
residual must also be loud: within `LOUD_DB` of the loudest microphone window of the last
`FLOOR_S`, as a person next to the device is and a fading tail is not. Measured on 10 minutes of
`convers bench echo`'s rooms a level (a person over the agent 62 times; false alarms over the agent
alone, counted with the arbiter's 2.3 s of hold and rest): AEC3's test at 25 dB with the VAD's
score at 0.2 on the cleaned frame (the rule before) first fired p50 211 ms after the person's first
sample at 0 dB; this rule at 90 / 57 / 50 ms at 0 / -5 / -10 dB, with no false alarm at any level,
and with a speaker that distorts (tanh, which a linear filter cannot follow) at 78 / 44 ms and 0 / 1
false alarms at 0 / -10 dB. Without AEC3's test that speaker raised 2 false alarms, with the loud
test at 15 dB 3-4.

Not trusted while the witness does not follow the room's echo (`witness_follows_echo`): its test
("removed little") means a person only where it removes a lot of the agent's echo alone. A
microphone and a speaker on two clocks (a USB microphone, a Bluetooth speaker) drift apart by tens of
parts per million, and the echo's delay moves with them: AEC3 follows that (53 dB removed at 100 ppm,
59 dB at none, simulated rooms of `convers bench echo --clock-drift`), Speex's filter did not (the
median it removed of 4 s of the agent's speech fell from 45 dB to 17 dB at 10 ppm, 9 dB at 30 ppm
and 3 dB at 100 ppm). Then every moment of the agent's voice passed its test, and at 100 ppm the
cue paused the agent for its own voice 55-69 times in 10 minutes a level. Now the witness reads what
was played on the microphone's clock once it has measured the drift (`convers.clock_drift`; 13-90 s
of the agent's speech), and until then the cue asks for the witness to have removed
`MIN_WITNESS_FOLLOWS_DB` (median) of the last `WITNESS_FOLLOWS_S` of the agent's speech, the level
under which its own test calls a moment "removed little"; without that the cue stays off, and the
VAD alone pauses the agent, as without a witness. Room noise that the echo does not stand far above
does the same (at -45 dBFS of noise and an echo 10 dB under the agent's output: 7-10 dB), as does a
speaker that distorts at times (tanh, drive 2.5: 12-16 dB, down to 3 dB in a stretch).

Not trusted right after the agent starts speaking again after a silence (`SETTLE_S`): until its echo
has reached the microphone, the window holds little but the room's fading tail. On 10 minutes of
`convers bench echo` a level (0, -5, -10 dB) the rule raised 33-34 false alarms a level within the
agent's first 0.2 s of speech and none from 0.3 s on. (The first form of the cue, without the
loudness test, raised its false alarms 0.5-1 s into a reply, and waited a whole second.)
"""

from __future__ import annotations

import logging
import math
from collections import deque
from itertools import islice

import numpy as np

from convers.audio import float32_to_pcm16, mean_square, pcm16_to_float32
from convers.clock_drift import TAPS, ClockReader, DriftEstimator
from convers.linear_echo import LinearEchoFilter

log = logging.getLogger(__name__)

# The span judged: about one VAD frame (32 ms for Silero), in canceller blocks.
WINDOW_S = 0.03
# The canceller removed less than this from the window: not (only) the agent's echo.
MAX_REMOVED_DB = 40.0
# ... and the cleaned window is this far above the quietest cleaned window of the last FLOOR_S.
ABOVE_FLOOR_DB = 10.0
FLOOR_S = 2.0
# The agent has been speaking this long since its last silence of SILENCE_S or more.
SETTLE_S = 0.5
SILENCE_S = 0.3
# ... and the linear witness removed less than this from the same window ...
MAX_WITNESS_REMOVED_DB = 10.0
# ... and what it left is within this of the loudest microphone window of the last FLOOR_S: a voice
# near the device, not the agent's fading reverberation between two words.
LOUD_DB = 10.0
# Played blocks kept for the witness when the microphone falls behind: beyond this they are dropped
# (its filter follows a shifted alignment within a second or two).
MAX_QUEUED_S = 0.3
# On a real machine the speaker's callback runs ahead of the microphone's: its stream opens sooner and
# keeps its device buffer full, so more blocks are played than heard (through PulseAudio, 130-210 ms
# more, `convers bench pulse-room`). Paired in order, each microphone block then met a played block
# older than the echo it held, which a filter that only looks back cannot explain: the witness removed
# 0 dB of the agent's echo and agreed with every false alarm of AEC3's test. So when played blocks have
# stayed queued after every pairing for this long, the oldest are dropped until the least of those
# queues is none: the microphone then meets the newest block played, and its echo, which cannot be
# heard before it is played, lies in the filter's tail. The least, not the latest: the speaker's
# callbacks come in bursts (up to 160 ms ahead there), which do not shift the alignment. Nor does a
# least queue up to MAX_LEAD_S: that is also how late the event loop got to the microphone, which
# varies with the machine's load, and every drop makes the filter learn a new alignment, while an
# echo that comes later than the devices' own latency (40-60 ms there) is still in the filter's tail.
LEAD_WINDOW_S = 1.0
MAX_LEAD_S = 0.03
# The agent silent this long: the room's echo of it has died away, the linear filter is not run.
WITNESS_IDLE_S = 1.0
# The witness must have removed this much (dB, the median block) of the agent's echo over the last
# WITNESS_FOLLOWS_S of its speech for the cue to trust it, and heard at least WITNESS_FOLLOWS_MIN_S of it.
# Once it has learnt a room on one clock it removes 17-46 dB (rolling 4 s medians); on two clocks,
# before it reads on the microphone's, 10 ppm apart 14-17 dB, 30 ppm 7-9 dB, 100 ppm 2-4 dB.
MIN_WITNESS_FOLLOWS_DB = 10.0
WITNESS_FOLLOWS_S = 4.0
WITNESS_FOLLOWS_MIN_S = 1.0
# The most the microphone's and the speaker's clocks are taken to differ (a drift measured beyond is
# not followed further): consumer audio devices are within about 100 ppm of their nominal rate.
MAX_DRIFT = 1e-3
# A drift measured under this is one clock read with noise (+-0.7 ppm seen on one): the witness then
# reads what was played as it is, whole band and all. Speex follows 2 ppm by itself (the echo moves
# a sample in half a minute).
MIN_DRIFT = 2e-6
# How far back `witness_removed_db` can look: the longest utterance (`turns.max_utterance_s`, 30 s)
# with its pre-roll and the silence that ended it.
HISTORY_S = 35.0


def _db(energy: float) -> float:
    return 10 * math.log10(max(energy, 1e-12))


class DoubleTalk:
    """Fed every block the canceller renders and captures, in order; `now` says whether a person speaks over the agent."""

    def __init__(self, block_s: float, witness: LinearEchoFilter | None) -> None:
        self.block_s = block_s
        self.witness = witness
        window = max(1, round(WINDOW_S / block_s))
        self._mic: deque[float] = deque(maxlen=window)
        self._cleaned: deque[float] = deque(maxlen=window)
        self._residual: deque[float] = deque(maxlen=window)
        # Played blocks not yet paired with the microphone block that heard them, oldest first.
        self._queued: deque[bytes] = deque(maxlen=max(1, round(MAX_QUEUED_S / block_s)))
        # How many played blocks stayed queued after each of the latest pairings.
        self._leads: deque[int] = deque(maxlen=max(1, round(LEAD_WINDOW_S / block_s)))
        self._max_lead = round(MAX_LEAD_S / block_s)
        # How often played blocks were dropped to keep up with the speaker (a figure for benchmarks).
        self.realignments = 0
        self._windows: deque[float] = deque(maxlen=max(1, round(FLOOR_S / block_s)))
        # The microphone's windows over the same span, for the loudness of what the witness left.
        self._mic_windows: deque[float] = deque(maxlen=max(1, round(FLOOR_S / block_s)))
        # How long the agent has been speaking since its last long silence; how long it has been quiet.
        self._speaking_s = 0.0
        self._quiet_s = math.inf
        self.now = False
        # What the linear witness left of the latest microphone block (the block itself while it
        # rests: the agent's echo has died away); None without a witness.
        self.residual: bytes | None = None
        # The microphone's and the witness's residual energy of each block, newest last.
        self._history: deque[tuple[float, float]] = deque(maxlen=max(1, round(HISTORY_S / block_s)))
        # What the witness removed of each block (dB) while the agent spoke, newest last.
        self._removed_while_speaking: deque[float] = deque(maxlen=max(1, round(WITNESS_FOLLOWS_S / block_s)))
        self._follows_min_blocks = round(WITNESS_FOLLOWS_MIN_S / block_s)
        self._said_not_following = False
        # The witness reads what was played on the microphone's clock (`convers.clock_drift`): how
        # much faster that clock runs (samples per sample: 1e-4 is 100 ppm), as measured so far.
        self.drift = 0.0
        # Until a drift is found the witness is given each played block as it is. From then on it is
        # read between samples, `_lag` samples later: the interpolation needs TAPS / 2 samples past
        # each one, and a reading a hair faster than the blocks come (a drift below zero) takes a
        # block early. Without that block of slack the next microphone block found nothing queued
        # and was paired with silence, which moved the echo by a block (the witness then removed
        # 1 dB of it for seconds).
        frame = witness.frame_samples if witness is not None else 0
        self._lag = TAPS // 2 + 1 + frame
        self._reader = ClockReader(history=self._lag)
        self._between_samples = False
        self._estimator = DriftEstimator(witness.sample_rate) if witness is not None else None

    @classmethod
    def for_blocks(cls, sample_rate: int, frame_samples: int) -> DoubleTalk:
        """A detector with its linear witness when libspeexdsp is here; without it the cue stays off."""
        try:
            witness = LinearEchoFilter(sample_rate, frame_samples)
        except (ImportError, RuntimeError) as error:
            log.info("no double-talk cue (the VAD alone pauses the agent): %s", error)
            witness = None
        return cls(frame_samples / sample_rate, witness)

    def new_stream(self) -> None:
        """A new connection feeds the same room: its queued blocks, window and timers start again as
        after a long silence of the agent, so the cue waits for SETTLE_S of its speech. The witness
        keeps the room it learnt (only its delay may differ, which it follows), and with it what it removed
        of the agent's echo of late (`witness_follows_echo`), and the floor keeps
        the room's noise levels (no audio; they roll out within FLOOR_S): a fresh floor would be set
        by whoever speaks first, and a person speaking from the start would never stand above it."""
        for blocks in (self._mic, self._cleaned, self._residual):
            blocks.clear()
        self._history.clear()
        self._queued.clear()
        self._leads.clear()
        # The drift is the devices' own and stays; where the new stream's audio lies is measured anew.
        self._reader = ClockReader(history=self._lag)
        self._between_samples = False
        if self._estimator is not None:
            self._estimator.clear()
        self._speaking_s = 0.0
        self._quiet_s = math.inf
        self.now = False
        self.residual = None

    def witness_removed_db(self, span_s: float, ago_s: float = 0.0) -> float | None:
        """How much of the microphone the linear witness explained as the agent's echo over the `span_s`
        of audio that ended `ago_s` ago, in dB (0 where the agent's echo had died away); None without a
        witness or without audio of that span."""
        if self.witness is None:
            return None
        skip = round(ago_s / self.block_s)
        blocks = list(islice(reversed(self._history), skip, skip + max(1, round(span_s / self.block_s))))
        if not blocks:
            return None
        return _db(sum(mic for mic, _ in blocks)) - _db(sum(residual for _, residual in blocks))

    @property
    def witness_follows_echo(self) -> bool:
        """The linear witness removes most of the agent's echo (MIN_WITNESS_FOLLOWS_DB over the last
        WITNESS_FOLLOWS_S of its speech), so a moment it removed little of is more than echo."""
        removed = self._removed_while_speaking
        if len(removed) < self._follows_min_blocks:
            return False
        follows = float(np.median(removed)) >= MIN_WITNESS_FOLLOWS_DB
        if not follows and not self._said_not_following and len(removed) == removed.maxlen:
            self._said_not_following = True
            log.info("the linear echo filter does not follow this room's echo (%.0f dB removed; a microphone and "
                     "speaker on two clocks, or a noisy room?): the double-talk cue is off while it does not",
                     float(np.median(removed)))
        return follows

    @property
    def echo_gone(self) -> bool:
        """The agent has been silent for WITNESS_IDLE_S: no echo of it is left in the room."""
        return self._quiet_s >= WITNESS_IDLE_S

    def _align(self) -> None:
        """Drops the played blocks that have stayed queued after every pairing of the last LEAD_WINDOW_S, when more than MAX_LEAD_S (see there)."""
        self._leads.append(len(self._queued))
        if len(self._leads) == self._leads.maxlen and (surplus := min(self._leads)) > self._max_lead:
            for _ in range(surplus):
                self._queued.popleft()
            self._leads.clear()
            self.realignments += 1

    def echo_moved(self) -> None:
        """The echo's delay against what was played jumped (a realignment here, or a sound device that
        lost samples): what the witness removed before no longer says how well it follows, as it
        learns anew; and the echo's delays before and after the jump do not line up for the drift."""
        self._removed_while_speaking.clear()
        if self._estimator is not None:
            self._estimator.clear()

    @property
    def drift_ppm(self) -> float:
        """How much faster the microphone's clock runs than the speaker's, as followed now (ppm)."""
        return self.drift * 1e6

    def _follow_clock(self, mic: bytes, reference: np.ndarray) -> None:
        """Measures the drift left in the reading of what was played, and reads on corrected by it."""
        estimator = self._estimator
        if estimator is None:
            return
        if not estimator.add(pcm16_to_float32(mic).astype(np.float64), reference):
            return
        left = estimator.drift()
        if left is not None:
            self.drift = float(np.clip(self.drift + left, -MAX_DRIFT, MAX_DRIFT))
            estimator.clear()

    def played(self, pcm: bytes, audible: bool) -> None:
        """One block the speaker played; `audible`: the agent's voice, not silence (as `echo_cancelling` counts it)."""
        if self.witness is not None:
            self._queued.append(pcm)
        if audible:
            if self._quiet_s >= SILENCE_S:
                self._speaking_s = 0.0
            self._quiet_s = 0.0
        else:
            self._quiet_s += self.block_s
        self._speaking_s += self.block_s

    def heard(self, mic: bytes, cleaned: bytes) -> None:
        """One microphone block and what the canceller made of it."""
        if self.witness is None:
            return
        # The n-th microphone block heard the n-th played block (the filter finds the room's delay),
        # as read on the microphone's clock.
        count = len(mic) // 2
        if not self._between_samples and abs(self.drift) >= MIN_DRIFT:
            self._between_samples = True
            self._reader.skip(-self._lag)
        step = 1 / (1 + self.drift) if self._between_samples else 1.0
        realigned = self.realignments
        while self._reader.ahead() < count * step + (TAPS / 2 if self._between_samples else 0):
            if self._queued:
                self._reader.feed(pcm16_to_float32(self._queued.popleft()))
                self._align()
            elif self._between_samples:
                # Read faster than the blocks come (the microphone's clock is the slower, and the two
                # streams' blocks come in step): the reading steps back a block, which the filter
                # learns as the echo coming a block later (as it does after `_align`).
                self._reader.skip(-count)
                self.realignments += 1
            else:
                self._reader.feed(np.zeros(count))  # nothing played yet to pair with
        if realigned != self.realignments:
            self.echo_moved()
        mic_energy = mean_square(mic)
        if not self.echo_gone:
            reference = self._reader.read(count, step)
            played = float32_to_pcm16(reference.astype(np.float32))
            self.residual = self.witness.residual(mic, played)
            residual_energy = mean_square(self.residual)
            self._follow_clock(mic, reference)
        else:
            # The agent has been silent long enough that no echo is left: the filter (most of this
            # detector's cost) rests and keeps the room it learnt; the cue is off until SETTLE_S anyway.
            self._reader.skip(count * step)
            if self._estimator is not None:
                self._estimator.skip(count)
            self.residual = mic
            residual_energy = mic_energy
        self._residual.append(residual_energy)
        self._history.append((mic_energy, residual_energy))
        self._mic.append(mic_energy)
        self._cleaned.append(mean_square(cleaned))
        mic_db = _db(sum(self._mic))
        cleaned_db = _db(sum(self._cleaned))
        residual_db = _db(sum(self._residual))
        self._windows.append(cleaned_db)
        self._mic_windows.append(mic_db)
        settled = self._quiet_s < SILENCE_S and self._speaking_s >= SETTLE_S
        if settled:
            self._removed_while_speaking.append(_db(mic_energy) - _db(residual_energy))
        self.now = (
            settled
            and len(self._mic) == self._mic.maxlen
            and cleaned_db - mic_db > -MAX_REMOVED_DB
            and cleaned_db > min(self._windows) + ABOVE_FLOOR_DB
            and residual_db - mic_db > -MAX_WITNESS_REMOVED_DB
            and residual_db > max(self._mic_windows) - LOUD_DB
            and self.witness_follows_echo  # last: the median is the dearest test
        )
