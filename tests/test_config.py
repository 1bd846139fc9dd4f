"""Settings: precedence of file, environment and flags, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from convers.config import ConfigError, load_settings, parse_assignment, settings_as_toml


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[llm]\ntemperature = 0.1\nmax_tokens = 100\nmodel = "from-file"\n\n[turns]\nend_of_turn_silence_s = 0.8\n')
    return path


def test_defaults_without_any_source(tmp_path: Path) -> None:
    settings = load_settings(environ={"CONVERS_DATA_DIR": str(tmp_path)})
    assert settings.llm.provider == "auto"
    assert settings.turns.end_of_turn_silence_s == 0.5
    assert settings.data_path == tmp_path


def test_file_then_environment_then_flags(config_file: Path) -> None:
    environ = {"CONVERS_LLM__MAX_TOKENS": "200", "CONVERS_LLM__MODEL": "from-env"}
    settings = load_settings(config_file, cli={"llm.model": "from-flag"}, environ=environ)
    assert settings.llm.temperature == 0.1  # file only
    assert settings.llm.max_tokens == 200  # environment beats file
    assert settings.llm.model == "from-flag"  # flag beats both
    assert settings.turns.end_of_turn_silence_s == 0.8


def test_config_file_in_the_data_dir_is_found(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[agent]\nname = "Robin"\n')
    settings = load_settings(cli={"data_dir": str(tmp_path)}, environ={})
    assert settings.agent.name == "Robin"


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ({"environ": {"CONVERS_LLM__TEMPRATURE": "0.3"}}, "llm.temprature: unknown setting (from environment variable CONVERS_LLM__TEMPRATURE)"),
        ({"environ": {"CONVERS_LLM__TEMPERATURE": "hot"}}, "llm.temperature = 'hot'"),
        ({"cli": {"llm.temperature": 7}}, "llm.temperature = 7: Input should be less than or equal to 2"),
        ({"cli": {"server.port": 70000}}, "server.port = 70000"),
        ({"cli": {"turns.end_of_turn_silence": 1}}, "turns.end_of_turn_silence: unknown setting (from command line)"),
    ],
)
def test_bad_values_name_the_key_and_the_source(source: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=source.get("environ", {}), cli=source.get("cli"))
    assert needle in str(caught.value)


def test_typo_in_the_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[memory]\nrecal_k = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "memory.recal_k: unknown setting" in str(caught.value) and str(path) in str(caught.value)


def test_broken_toml_and_missing_file_are_clear(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[llm\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("llm.temperature=0.2", ("llm.temperature", 0.2)), ("barge_in.enabled=false", ("barge_in.enabled", False)),
     ("agent.name=Robin", ("agent.name", "Robin"))],
)
def test_set_assignments_parse(text: str, expected: tuple) -> None:
    assert parse_assignment(text) == expected


def test_set_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignment("llm.temperature")


def test_shown_settings_are_valid_toml_that_loads_back(tmp_path: Path) -> None:
    original = load_settings(cli={"llm.temperature": 0.25, "agent.name": "Robin"}, environ={})
    path = tmp_path / "shown.toml"
    path.write_text(settings_as_toml(original))
    assert load_settings(path, environ={}) == original


def test_auto_llm_prefers_a_running_server_then_a_downloaded_gguf(tmp_path: Path) -> None:
    import importlib.util

    from convers.app.wiring import provider_name
    from convers.packaged_models import SMOLLM2
    from tests.llm_server import ScriptedLlmServer

    in_process = importlib.util.find_spec("xllamacpp") is not None
    # A configured server is the person's choice even while it does not answer (the error says so).
    down = load_settings(environ={}, cli={"data_dir": str(tmp_path), "llm.base_url": "http://127.0.0.1:9"})
    assert provider_name("llm", down) == "openai"
    # Nothing configured and no server on the usual ports (none runs in CI): the packaged model talks.
    nothing = load_settings(environ={}, cli={"data_dir": str(tmp_path)})
    assert provider_name("llm", nothing) == ("llama-cpp" if in_process and SMOLLM2.folder() else "openai")
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    with_file = load_settings(environ={}, cli={"data_dir": str(tmp_path), "llm.model_path": str(gguf)})
    assert provider_name("llm", with_file) == ("llama-cpp" if in_process else "openai")
    with ScriptedLlmServer().running_in_thread() as server:
        served = load_settings(
            environ={}, cli={"data_dir": str(tmp_path), "llm.base_url": server.base_url, "llm.model_path": str(gguf)}
        )
        assert provider_name("llm", served) == "openai"


def test_a_misspelt_provider_option_is_an_error_naming_it_and_its_source(tmp_path: Path) -> None:
    from convers.config import ConfigError
    from convers.providers.vad.webrtc import WebRtcVad

    settings = load_settings(environ={}, cli={"data_dir": str(tmp_path), "vad.options.agressiveness": 3})
    with pytest.raises(ConfigError) as error:
        WebRtcVad.from_settings(settings)
    message = str(error.value)
    assert "vad.options.agressiveness" in message and "webrtc has no such option" in message
    assert "from command line" in message and "aggressiveness" in message  # the options it does have
    config = tmp_path / "config.toml"
    config.write_text('[vad.options]\naggressiveness = 9\n')
    with pytest.raises(ConfigError, match=r"vad.options.aggressiveness = 9: .*less than or equal to 3 \(from config file"):
        WebRtcVad.from_settings(load_settings(config, environ={}))
    assert WebRtcVad.from_settings(load_settings(environ={}, cli={"vad.options.aggressiveness": 1}))._vad is not None
