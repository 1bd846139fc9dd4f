"""What a turn event's audio is asked of the linear echo filter: how much of it the agent's own echo explains.

Once the canceller has learnt a room, WebRTC AEC3's suppressor still lets a moment of the agent's
echo through now and then, which the VAD hears as speech. Speex's linear filter beside it (the
double-talk witness, `convers.double_talk`) models the same echo without suppressing anything: of
such a moment it removes 20 dB or more, of a person over the agent a few dB at most (they are not
in what was played). The arbiter reads that figure (`BargeInPolicy.echo_witness_removed_db`) at a
speech onset, over the last `ONSET_WITNESS_S`, before a cut, over the voice so far, and at a turn's
end, over the whole utterance. The session (engine/session/voice.py) and `convers bench echo` ask it
alike.
"""

from __future__ import annotations

from collections.abc import Callable

from convers.engine.listening.turn_taking import SpeechOnset, TurnEvent, UserTurnEnded

# The span of the microphone judged at a speech onset: the VAD reaches its start threshold 60-120 ms
# into a voice.
ONSET_WITNESS_S = 0.1

# The transport's `echo_removed_db(span_s, ago_s)`.
RemovedDb = Callable[[float, float], float | None]


def event_echo_removed_db(removed_db: RemovedDb | None, event: TurnEvent, now: float) -> float | None:
    """How much of an onset's or an ended utterance's audio the linear filter explained as the
    agent's echo (dB), `now` being the clock of the latest microphone audio; None for other events
    or without a filter."""
    if removed_db is None:
        return None
    if isinstance(event, SpeechOnset):
        return removed_db(ONSET_WITNESS_S, 0.0)
    if isinstance(event, UserTurnEnded):
        return removed_db(event.ended_at - event.started_at, max(0.0, now - event.ended_at))
    return None


def voice_echo_removed_db(removed_db: RemovedDb | None, voice_s: float, judging: bool, learning: bool) -> float | None:
    """How much of the voice so far the linear filter explained as the agent's echo, asked only when
    the arbiter reads it before a cut: speech over the agent is being judged and the canceller has
    learnt the room (while it learns, the filter is learning too). None otherwise."""
    if removed_db is None or not judging or learning:
        return None
    return removed_db(voice_s, 0.0)
