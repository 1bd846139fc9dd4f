"""Builds concrete providers and sessions from settings: the one place that knows them all."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from convers import registry
from convers.config import Settings
from convers.contracts.transport import Transport
from convers.engine.prompt import PromptBuilder, load_persona
from convers.engine.session import Session, SessionOptions, SessionParts
from convers.events import EventLog

log = logging.getLogger(__name__)


def build(kind: str, settings: Settings, name: str | None = None) -> Any:
    """The provider of `kind` named in settings (or `name`), constructed from settings."""
    section = getattr(settings, kind)
    return registry.create(kind, name or section.provider, settings)


def session_options(settings: Settings, greet: bool = True) -> SessionOptions:
    return SessionOptions(
        agent_name=settings.agent.name,
        rolling_chars=settings.memory.rolling_chars,
        max_tokens=settings.llm.max_tokens,
        temperature=settings.llm.temperature,
        greet=greet,
        turns=settings.turns,
        barge_in=settings.barge_in,
    )


def event_log(settings: Settings, session_id: str) -> EventLog:
    path: Path | None = None
    if settings.events.enabled:
        path = settings.data_path / "events" / f"{session_id}.jsonl"
    return EventLog(path)


def make_session(
    settings: Settings, transport: Transport, parts: SessionParts, session_id: str, greet: bool = True
) -> Session:
    from convers.audio import resample

    prompt = PromptBuilder(
        persona=load_persona(settings.agent.persona_file, settings.agent.name),
        rolling_chars=settings.memory.rolling_chars,
    )
    return Session(
        transport,
        parts,
        prompt,
        event_log(settings, session_id),
        resample,
        options=session_options(settings, greet=greet),
        session_id=session_id,
    )
