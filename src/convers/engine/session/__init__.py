"""The session: one conversation with one client, its history, and the agent turns it runs."""

from convers.engine.parts import SessionOptions, SessionParts
from convers.engine.session.agent_turn import AgentTurn
from convers.engine.session.session import Session

__all__ = ["AgentTurn", "Session", "SessionOptions", "SessionParts"]
