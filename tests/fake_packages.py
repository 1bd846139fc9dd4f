"""Installed-looking model packages made of a few small files, for trust tests that must not hash 140 MB.

`fake_package(root, files)` writes a package folder under `root` (put `root` on sys.path with
`monkeypatch.syspath_prepend`) and returns the PackagedModel that records the SHA-256 of each file,
exactly as convers/packaged_models.py does for the real packages.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from convers.packaged_models import PackagedModel


def fake_package(root: Path, files: dict[str, bytes], subfolder: str = "model") -> PackagedModel:
    # A fresh module name each time: importlib caches what it found under a name.
    module = f"convers_fake_models_{uuid.uuid4().hex[:8]}"
    package = root / module
    (package / subfolder).mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, content in files.items():
        (package / subfolder / name).write_bytes(content)
    return PackagedModel(
        name=f"fake model (package {module})",
        distribution=f"{module.replace('_', '-')}==0.0.0",
        module=module,
        subfolder=subfolder,
        files={name: hashlib.sha256(content).hexdigest() for name, content in files.items()},
    )


def flip_one_byte(path: Path) -> None:
    """Changes the middle byte of `path`: same size, different content (a bit rot or a tampered file)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
