"""The optional held-out split of an output folder (`generate --test-size F`).

Rows are split by query, not by row: every row whose prompt text is the same lands in the same split, so no
query is in both. The distinct prompts of *all* generated rows (dropped ones included) are sorted, shuffled
with the run seed, and the first round(F x distinct prompts) of them form the test split (at least one, and at
least one left for train). Because the draw covers every generated row, a later filter (`ssogen score --filter
likelihood`) keeps each query in its split; the share of test rows among the *kept* pairs is therefore about F,
not exactly F."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TRAIN, TEST = "train", "test"
SPLITS = (TRAIN, TEST)


class SplitSpec(BaseModel):
    """How the rows were split; stored in the manifest as `split`, so `score` can re-split the same way."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    test_size: float = Field(gt=0.0, lt=1.0)
    seed: int = 0
    by: str = "prompt text"

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> SplitSpec | None:
        """The split a manifest records, or None (one train split)."""
        stored = manifest.get("split")
        return cls.model_validate(stored) if isinstance(stored, dict) else None


def test_prompts(prompts: Iterable[str], spec: SplitSpec) -> frozenset[str]:
    """The prompt texts of the test split (a pure function of the set of prompts, the size and the seed)."""
    distinct = sorted(set(prompts))
    if len(distinct) < 2:
        return frozenset()  # one query cannot be split without leaving a split empty
    count = min(max(1, round(spec.test_size * len(distinct))), len(distinct) - 1)
    random.Random(spec.seed).shuffle(distinct)
    return frozenset(distinct[:count])
