"""LearningSpeech: which audio a turn spoken over the agent while the echo canceller learns is read from.

While the canceller learns a room, its suppressor thins a voice over the agent until Whisper cannot
read it, and cuts it into pieces the VAD hears apart. Such a turn is transcribed from the linear echo
filter's residual of the same stretch (`convers.linear_residual`, the transport's
`echo_unsuppressed`), and pieces the arbiter joins (`SuspectEcho.since`) are read as one, from the
start of the first. The session (engine/session/voice.py) and `convers bench echo` use it alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from convers.contracts.audio import AudioFrame
from convers.engine.barge_in.arbiter import SuspectEcho

log = logging.getLogger(__name__)

# The transport's `echo_unsuppressed`: a stretch of its cleaned audio (from the start of an earlier
# one) through the linear filter alone, or None.
Unsuppress = Callable[[AudioFrame, AudioFrame | None], AudioFrame | None]


class LearningSpeech:
    """Follows one listener's utterances; `ended` says what to transcribe instead of the cleaned audio."""

    def __init__(self) -> None:
        # The utterance under way began over the agent while the canceller learnt.
        self._began_over_learning = False

    def onset(self, over_agent_while_learning: bool) -> None:
        """An utterance began (over the agent, while the canceller learnt, or not)."""
        self._began_over_learning = over_agent_while_learning

    def ended(self, audio: AudioFrame, suspect: SuspectEcho | None, unsuppress: Unsuppress | None) -> AudioFrame | None:
        """The utterance ended with cleaned `audio` (`suspect`: the arbiter's `ended_suspect`): the audio
        to transcribe instead, or None to transcribe `audio` itself."""
        began, self._began_over_learning = self._began_over_learning, False
        if not began or unsuppress is None:
            return None
        try:
            return unsuppress(audio, suspect.since if suspect is not None else None)
        except Exception as error:  # noqa: BLE001 - a better reading is optional: the cleaned audio still is one
            log.warning("no unsuppressed audio for speech over the agent: %s", error)
            return None
