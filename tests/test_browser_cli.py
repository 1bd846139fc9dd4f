"""`convers serve` and `convers token` from the command line (nothing is actually served)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from convers.cli import main
from convers.transports.browser.auth import token_path


def test_no_auth_refused_on_all_interfaces(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "serve", "--host", "0.0.0.0", "--no-auth"])
    assert result.exit_code == 2
    assert "--no-auth is refused" in result.output
    assert not token_path(tmp_path).exists()


def test_cert_without_key_refused(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "serve", "--cert", str(cert)])
    assert result.exit_code == 2 and "--cert and --key go together" in result.output


def test_token_show_and_rotate(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["--data-dir", str(tmp_path), "token", "show"]).output.strip()
    again = runner.invoke(main, ["--data-dir", str(tmp_path), "token", "show"]).output.strip()
    rotated = runner.invoke(main, ["--data-dir", str(tmp_path), "token", "rotate"]).output.strip()
    assert first == again and len(first) >= 40
    assert rotated != first
    assert token_path(tmp_path).read_text().strip() == rotated
