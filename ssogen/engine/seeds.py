"""Per-request seeds, so that a request's sample depends on what it is, not on when or beside what it runs."""

from __future__ import annotations

import hashlib


def derive_seed(run_seed: int, row_id: str, purpose: str) -> int:
    """A seed from (run seed, row id, purpose): independent of batching, chunking and resuming. 31 bits, the
    range every engine takes."""
    digest = hashlib.sha256(f"{run_seed}\x00{row_id}\x00{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
