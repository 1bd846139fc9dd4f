"""SHA-256 checks of model files before they are loaded, remembered so each file is hashed once.

Models reach convers from places it does not control: registry packages that repackage someone
else's weights, and `convers models pull`. A file is loaded only after its SHA-256 matched the one
recorded for it. Hashing 140 MB takes about half a second, so a match is remembered in
DATA_DIR/models/verified.json under the file's path, size and modification time: a file that is
replaced or changed is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from convers.contracts.provider import RANK_USER_MODEL, AutoChoice
from convers.private_files import write_json_atomically

if TYPE_CHECKING:
    from convers.config import Settings

log = logging.getLogger(__name__)

RECORD_NAME = "verified.json"
CHUNK_BYTES = 1 << 20


class ModelFileError(ValueError):
    """A model file is missing, unreadable or not the file that was recorded; the message names it and the fix."""


def sha256_of(path: Path) -> str:
    """The file's SHA-256 as lowercase hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _identity(path: Path) -> str:
    """What must stay the same for a remembered match to hold: size and modification time."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _sha256_in(record: dict[str, dict[str, str]], path: Path) -> str:
    """The file's SHA-256: the one `record` holds for it while its size and modification time are
    those recorded with it, else hashed now and put in `record`. Raises OSError (FileNotFoundError
    for a missing file) when it cannot be read."""
    identity = _identity(path)
    key = str(path.resolve())
    remembered = record.get(key)
    if isinstance(remembered, dict) and remembered.get("identity") == identity and remembered.get("sha256"):
        return str(remembered["sha256"])
    digest = sha256_of(path)
    record[key] = {"identity": identity, "sha256": digest}
    return digest


class VerifiedFiles:
    """Checks files against expected SHA-256 values and remembers the matches in a JSON record.

    The record is a cache, never a source of truth: an unreadable or unwritable record only means
    the files are hashed again next time.
    """

    def __init__(self, record_path: Path | None) -> None:
        self.record_path = record_path

    def check(self, expected: Mapping[Path, str], fix: str) -> None:
        """Raises ModelFileError for the first file that is missing or whose hash is not the expected one.

        `fix` tells the user what to do about it ("reinstall the package with ...").
        """
        record = self._read()
        before = dict(record)
        for path, sha256 in expected.items():
            try:
                actual = _sha256_in(record, path)
            except FileNotFoundError:
                raise ModelFileError(f"model file {path} is missing; {fix}") from None
            except OSError as error:
                raise ModelFileError(f"model file {path} cannot be read ({error.strerror or error}); {fix}") from None
            if actual != sha256:
                record.pop(str(path.resolve()), None)
                self._write(record)
                raise ModelFileError(
                    f"model file {path} has SHA-256 {actual}, expected {sha256}: it is corrupt or not the "
                    f"file convers was built for, so it is not loaded; {fix}"
                )
        if record != before:
            self._write(record)

    def sha256(self, path: Path) -> str:
        """The file's SHA-256, remembered as `check` remembers a match. Raises OSError when it cannot be read."""
        record = self._read()
        before = dict(record)
        digest = _sha256_in(record, path)
        if record != before:
            self._write(record)
        return digest

    def _read(self) -> dict[str, dict[str, str]]:
        if self.record_path is None:
            return {}
        try:
            data = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, record: dict[str, dict[str, str]]) -> None:
        if self.record_path is None:
            return
        try:
            write_json_atomically(self.record_path, record)
        except OSError as error:  # a read-only data directory: hash again next time
            log.debug("cannot remember verified model files in %s: %s", self.record_path, error)


def verified_files(data_path: Path) -> VerifiedFiles:
    """The record of verified model files of this data directory."""
    return VerifiedFiles(data_path / "models" / RECORD_NAME)


@dataclass(frozen=True)
class ModelSource:
    """One place a provider may load its model from: a label for people, its `auto` rank, and the path or the problem."""

    label: str
    rank: int
    path: Path | None = None
    problem: str | None = None
    # There (or asked for in settings) but unusable: a wrong checksum, a missing companion file.
    # Passing over such a source is worth a warning; passing over one that is simply absent is not.
    broken: bool = False

    @property
    def usable(self) -> bool:
        return self.path is not None and self.problem is None


def configured_file_source(path: Path, setting: str, expected: str) -> ModelSource:
    """A model file named in the settings (`setting`): usable when it is a file, else broken, saying
    what to point it at (`expected`)."""
    path = path.expanduser()
    label = f"configured model {path}"
    if path.is_file():
        return ModelSource(label, RANK_USER_MODEL, path)
    return ModelSource(label, RANK_USER_MODEL, problem=f"{setting} {path} is not a file: {expected}", broken=True)


def pulled_file_source(
    settings: Settings, checks: VerifiedFiles, path: Path, label: str, kind: str, missing: str
) -> ModelSource:
    """A model file `convers models pull KIND` wrote: usable once it matches the SHA-256 the pull
    recorded, broken when it does not, absent (`missing` says what to run) when it is not there."""
    from convers.downloads import pulled_checksums

    if not path.is_file():
        return ModelSource(label, RANK_USER_MODEL, problem=missing)
    try:
        checks.check(pulled_checksums(settings, [path]), fix=f"run `convers models pull {kind} --force`")
    except ModelFileError as error:
        return ModelSource(label, RANK_USER_MODEL, problem=str(error), broken=True)
    return ModelSource(label, RANK_USER_MODEL, path)


def first_usable(sources: Sequence[ModelSource]) -> ModelSource | None:
    """The first source, in the provider's order of preference, that can be loaded."""
    return next((source for source in sources if source.usable), None)


def problems(sources: Sequence[ModelSource]) -> str:
    """Why none of `sources` can be loaded, in one line."""
    return "; ".join(source.problem or f"{source.label}: not there" for source in sources)


def describe_choice(sources: Sequence[ModelSource], chosen: ModelSource) -> str:
    """The chosen source's label, with every broken source passed over for it and why."""
    broken = [f"{source.label}: {source.problem}" for source in sources[: sources.index(chosen)] if source.broken]
    return chosen.label + (f" (passed over {'; '.join(broken)})" if broken else "")


def auto_choice_from(sources: Sequence[ModelSource], rank_when_none: int) -> AutoChoice:
    """How a provider whose model comes from `sources` takes part in `auto`: the rank of its first usable
    source, or `rank_when_none` (unusable) with every source's problem."""
    source = first_usable(sources)
    if source is None:
        return AutoChoice(rank_when_none, False, problems(sources))
    return AutoChoice(source.rank, True, describe_choice(sources, source))


def warn_passed_over(sources: Sequence[ModelSource], chosen: ModelSource, provider: str) -> None:
    """Logs each broken source that ranks before the one `provider` loads instead."""
    for source in sources[: sources.index(chosen)]:
        if source.broken:
            log.warning("%s passes over %s: %s", provider, source.label, source.problem)
