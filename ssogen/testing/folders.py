"""Hand-built ssogen output folders for the stats, card, publish and score tests (no model needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssogen.dataset.folder import OutputFolder
from ssogen.records import TripletRecord, row_id


def make_record(position: int, prompt: str = "", **fields: Any) -> TripletRecord:
    """A kept row with short distinct responses; override any field."""
    prompt = prompt or f"question {position}"
    values: dict[str, Any] = {
        "id": row_id(prompt, position), "position": position, "prompt": prompt,
        "features": ["Safety", "Accuracy"], "extra": [], "selection_filled": False,
        "selection_mode": "free", "principle_source": "library",
        "system_good": "be good", "system_bad": "be bad",
        "response_good": f"good answer {position}", "response_bad": f"bad answer {position}",
        "response_raw": f"plain answer {position}",
        "finish_reason_good": "stop", "finish_reason_bad": "stop", "finish_reason_raw": "stop",
        "num_tokens_good": 4, "num_tokens_bad": 4, "num_tokens_raw": 4,
        "seed_good": 1, "seed_bad": 2, "seed_raw": 3, "kept": True,
    }
    values.update(fields)
    return TripletRecord(**values)


def write_dataset(out: Path, records: list[TripletRecord], **manifest: Any) -> Path:
    """An output folder as generate leaves it: the four configs and a manifest (status complete by default)."""
    folder = OutputFolder(out)
    folder.write_configs(records)
    data = {"model": "tiny-model", "status": "complete", "seed": 7,
            "sampling": {"temperature": 0.7, "top_p": 0.8, "max_tokens": 64},
            "library": {"name": "default", "version": "1.0", "sha256": "ab" * 32}}
    data.update(manifest)
    folder.write_manifest(data)
    return out
