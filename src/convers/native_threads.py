"""Thread counts for the native libraries, set before any of them loads.

On a 2-core machine STT, TTS, the embedder and the LLM run at the same time (speculative STT
overlaps the previous reply's TTS; the embedder writes memory while the LLM streams). A BLAS or
OpenMP pool per library, each sized to every core, makes them preempt each other and every stage
slower; one thread each keeps the stages in parallel instead. Libraries read these variables once,
when they load, so this runs before numpy is imported. A value the user set is kept.
Per-provider counts (onnxruntime, CTranslate2, llama.cpp) come from the `threads` settings.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def limit_native_threads(threads: int = 1, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Sets each unset thread variable to `threads`; returns the values now in effect."""
    env = os.environ if environ is None else environ
    for name in THREAD_VARIABLES:
        env.setdefault(name, str(threads))
    # HF tokenizers spawns its own pool and warns after a fork; one thread is plenty for a sentence.
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return {name: env[name] for name in (*THREAD_VARIABLES, "TOKENIZERS_PARALLELISM")}
