"""AgentTurn: one agent turn as the client hears it, and what of it stays in the history."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from convers.contracts.llm import ChatMessage
from convers.engine.barge_in.arbiter import played_to_end
from convers.engine.reply.streamer import ReplyProgress, heard_text
from convers.events import TurnMetrics


@dataclass
class AgentTurn:
    """The agent turn the client is hearing or about to hear (a `ReplyView` for the barge-in arbiter)."""

    turn: int
    progress: ReplyProgress
    metrics: TurnMetrics
    task: asyncio.Task[None] | None
    history_index: int | None = None
    played_ms: float = 0.0
    settled: bool = False

    @classmethod
    def starting(cls, turn: int, now: float) -> AgentTurn:
        """A new agent turn whose timeline starts `now`, its reply task not yet made."""
        metrics = TurnMetrics(turn=turn)
        metrics.mark("turn_start", now)
        return cls(turn=turn, progress=ReplyProgress(turn=turn), metrics=metrics, task=None)

    @property
    def generating(self) -> bool:
        """The reply task is still producing text or audio."""
        return self.task is not None and not self.task.done()

    @property
    def audio_ms(self) -> float:
        return self.progress.audio_ms

    @property
    def audible(self) -> bool:
        """Generating, or audio sent that the client has not finished playing."""
        return self.generating or not played_to_end(self.played_ms, self.progress.audio_ms)

    @property
    def played_ms_if_cut(self) -> float:
        """How far the client played a turn it did not play to the end; 0 for one played whole."""
        return 0.0 if played_to_end(self.played_ms, self.progress.audio_ms) else self.played_ms

    def unheard_text(self) -> str:
        """The chunks the client had not finished playing (what a restart says again)."""
        return self.progress.unspoken_text(self.played_ms)

    def said_text(self) -> str:
        """Everything the agent has put into words in this turn so far (what its echo can repeat)."""
        return self.progress.text

    def kept_text(self, voiced: bool) -> str:
        """What of a cut turn the user got: every word in text; in voice, the words played."""
        progress = self.progress
        if not voiced:
            return progress.text  # in text every generated word was shown
        if not played_to_end(self.played_ms, progress.audio_ms) or not progress.generation_done:
            return heard_text(progress, self.played_ms)
        return progress.text

    def enter_in(self, history: list[ChatMessage]) -> None:
        """The fully generated turn joins the history; its entry stands unless a barge-in cuts it."""
        history.extend(self.progress.tool_messages)  # the calls and results, so later turns can refer to them
        if self.progress.text:
            history.append(ChatMessage("assistant", self.progress.text))
            self.history_index = len(history) - 1

    def keep_in(self, history: list[ChatMessage], text: str) -> None:
        """Puts `text` in place of the turn's history entry (or removes it when nothing was heard)."""
        if self.history_index is not None:
            if text:
                history[self.history_index] = ChatMessage("assistant", text)
            else:
                del history[self.history_index]
        elif text:
            history.append(ChatMessage("assistant", text))

