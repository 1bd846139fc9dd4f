"""Profile: validated on load, a broken file is a clear error and never overwritten, rendered for the prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from convers.cli import main
from convers.memory.profile import Profile, ProfileError, ProfileFile


def test_missing_file_is_an_empty_profile(tmp_path: Path) -> None:
    profile = ProfileFile(tmp_path / "profile.json").load()
    assert profile.is_empty() and profile.render() == ""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"name": "Sam", "favourite": "tea"}', "favourite"),
        ('{"name": "   "}', "name"),
        ('{"people": [{"note": "sister"}]}', "people.0.name"),
        ('{"preferences": "tea"}', "preferences"),
    ],
)
def test_broken_file_is_a_clear_error_and_is_never_overwritten(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "profile.json"
    path.write_text(text)
    file = ProfileFile(path)
    with pytest.raises(ProfileError) as caught:
        file.load()
    assert str(path) in str(caught.value) and problem in str(caught.value)
    with pytest.raises(ProfileError):
        file.save(Profile(name="Sam"))
    with pytest.raises(ProfileError):
        file.update("name", "Sam")
    assert path.read_text() == text


def test_set_keys_and_render(tmp_path: Path) -> None:
    file = ProfileFile(tmp_path / "profile.json")
    file.update("name", "Sam")
    file.update("preferences", "short answers; tea, not coffee")
    file.update("people.Ana", "sister, lives in Lisbon")
    file.update("notes", '["training for a half marathon"]')
    text = file.load().render()
    assert text.splitlines() == [
        "Name: Sam",
        "Preferences: short answers; tea, not coffee",
        "People in their life: Ana (sister, lives in Lisbon)",
        "Note: training for a half marathon",
    ]
    file.update("people.ana", "")  # removes Ana, whatever the case
    assert file.load().people == []
    with pytest.raises(ProfileError, match="unknown profile key 'age'"):
        file.update("age", "40")
    saved = json.loads((tmp_path / "profile.json").read_text())
    assert saved["name"] == "Sam" and saved["updated"]


def test_cli_profile_set_and_show(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--data-dir", str(tmp_path), "profile", "set", "name", "Sam"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["--data-dir", str(tmp_path), "profile", "show"])
    assert result.output.strip() == "Name: Sam"
    (tmp_path / "profile.json").write_text('{"name": 5}')
    result = runner.invoke(main, ["--data-dir", str(tmp_path), "profile", "show"])
    assert result.exit_code != 0 and "profile.json is invalid" in result.output


def test_cli_profile_edit_validates_what_the_editor_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "fake-editor.py"
    script.write_text(
        "import json, sys\n"
        "path = sys.argv[1]\n"
        "data = json.load(open(path))\n"
        "data['name'] = 'Samantha'\n"
        "json.dump(data, open(path, 'w'))\n"
    )
    import sys

    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    monkeypatch.delenv("VISUAL", raising=False)
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "profile", "edit"])
    assert result.exit_code == 0, result.output
    assert ProfileFile(tmp_path / "profile.json").load().name == "Samantha"
