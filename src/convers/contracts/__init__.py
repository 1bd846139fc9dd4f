"""One Protocol per concern. Providers implement these; the engine only ever sees these."""

from convers.contracts.audio import AudioFormat, AudioFrame
from convers.contracts.embedder import Embedder
from convers.contracts.llm import ChatMessage, LanguageModel, LlmError
from convers.contracts.memory import (
    ConversationMemory,
    MemoryHit,
    MemoryStore,
    MemoryTurn,
)
from convers.contracts.provider import Availability, ProviderClass
from convers.contracts.stt import (
    SpeechStream,
    SpeechToText,
    StreamingSpeechToText,
    Transcript,
)
from convers.contracts.tool import Tool
from convers.contracts.transport import (
    InboundAudio,
    InboundEvent,
    InboundPlayed,
    InboundText,
    Transport,
)
from convers.contracts.tts import TextToSpeech
from convers.contracts.vad import Vad

__all__ = [
    "AudioFormat",
    "AudioFrame",
    "Availability",
    "ChatMessage",
    "ConversationMemory",
    "Embedder",
    "InboundAudio",
    "InboundEvent",
    "InboundPlayed",
    "InboundText",
    "LanguageModel",
    "LlmError",
    "MemoryHit",
    "MemoryStore",
    "MemoryTurn",
    "ProviderClass",
    "SpeechStream",
    "SpeechToText",
    "StreamingSpeechToText",
    "TextToSpeech",
    "Tool",
    "Transcript",
    "Transport",
    "Vad",
]
