"""One way to open an ONNX model for the built-in providers: CPU only, a fixed thread budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_session(model_path: Path, threads: int, *, memory_pattern: bool = True) -> Any:
    """An onnxruntime InferenceSession on the CPU using `threads` threads, quiet unless it fails.

    Every provider gets an explicit budget because on 2 cores STT, TTS, VAD and the LLM otherwise
    each start a thread per core and fight ("Threads" in docs/benchmarks.md).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    options.log_severity_level = 3
    # The memory pattern pre-plans a run's buffers from the shapes seen before: right for fixed-size
    # inputs (VAD frames, Whisper's 30 s window), a leak in steps for inputs of every length.
    options.enable_mem_pattern = memory_pattern
    return onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
