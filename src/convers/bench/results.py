"""Where every benchmark writes its JSON result."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path("bench") / "results"


def write_json_result(result: dict[str, Any], out: Path | None, kind: str) -> Path:
    """Writes `result` to `out`, or to bench/results/KIND-<UTC time>.json; returns the path."""
    if out is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        out = RESULTS_DIR / f"{kind}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return out
