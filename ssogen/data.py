"""Bundled data files (the demo queries)."""

from __future__ import annotations

import json
from pathlib import Path

DEMO_QUERIES = Path(__file__).parent / "data" / "demo_queries.jsonl"


def demo_queries() -> list[str]:
    """The bundled demo user queries, in file order."""
    with DEMO_QUERIES.open(encoding="utf-8") as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]
