"""The self-signed certificate: its names, its key's permissions, and when it is made again."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509

from convers.transports.browser import tls


def names(path: Path) -> tuple[set[str], set[str]]:
    return tls.certificate_names(x509.load_pem_x509_certificate(path.read_bytes()))


def test_certificate_names_localhost_loopback_and_lan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "lan_addresses", lambda: ["192.168.1.20", "10.0.0.7"])
    paths = tls.ensure_certificate(tmp_path / "tls")
    dns, ips = names(paths.cert)
    assert dns == {"localhost"}
    assert ips == {"127.0.0.1", "192.168.1.20", "10.0.0.7"}
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600


def test_bound_host_is_named_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "lan_addresses", lambda: [])
    paths = tls.ensure_certificate(tmp_path, extra_hosts=["0.0.0.0", "convers.lan", "172.16.0.2"])
    assert names(paths.cert) == ({"localhost", "convers.lan"}, {"127.0.0.1", "172.16.0.2"})


def test_reused_while_addresses_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "lan_addresses", lambda: ["192.168.1.20"])
    first = tls.ensure_certificate(tmp_path).cert.read_bytes()
    assert tls.ensure_certificate(tmp_path).cert.read_bytes() == first


def test_remade_when_lan_address_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "lan_addresses", lambda: ["192.168.1.20"])
    first = tls.ensure_certificate(tmp_path).cert.read_bytes()
    monkeypatch.setattr(tls, "lan_addresses", lambda: ["192.168.7.3"])
    paths = tls.ensure_certificate(tmp_path)
    assert paths.cert.read_bytes() != first
    assert names(paths.cert)[1] == {"127.0.0.1", "192.168.7.3"}


def test_remade_when_expiring_or_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "lan_addresses", lambda: [])
    first = tls.ensure_certificate(tmp_path).cert.read_bytes()
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=tls.VALIDITY_DAYS - 10)
    second = tls.ensure_certificate(tmp_path, now=later).cert.read_bytes()
    assert second != first
    (tmp_path / tls.CERT_FILE).write_text("garbage")
    assert tls.ensure_certificate(tmp_path).cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE")


def test_lan_addresses_exclude_loopback() -> None:
    assert all(not a.startswith("127.") for a in tls.lan_addresses())


def test_user_certificate_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        tls.check_user_certificate(tmp_path / "nope.pem", tmp_path / "key.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a cert")
    with pytest.raises(ValueError, match="not a PEM certificate"):
        tls.check_user_certificate(bad, bad)
