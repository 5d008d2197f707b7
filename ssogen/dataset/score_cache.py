"""Which finished scores `ssogen score` may reuse. Finished rows are appended (fsynced) to
OUT/.ssogen/score/<key>/scores-<n>.jsonl, where the key hashes the model's identity and the tokenization settings,
and every cached row carries a hash of its texts and the dtype the engine ran at, so a rerun scores only what is
missing and never reuses a score of other text, another model or another precision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssogen.dataset.score_requests import CONVENTION, SCORED
from ssogen.dataset.shards import ShardStore
from ssogen.engine.options import canonical_dtype
from ssogen.fingerprint import json_sha256
from ssogen.models import ModelRef
from ssogen.records import TripletRecord

Scores = dict[str, dict[str, float | None]]  # the seven log-probs of a row, by row id


def row_text_hash(record: TripletRecord) -> str:
    """What a cached score depends on in the row: the query, both system prompts, the three responses and which of
    them were cut at the token limit (a cut response is scored without the end-of-turn token)."""
    cut = "".join("1" if getattr(record, f"finish_reason_{v}") == "length" else "0" for v in ("good", "bad", "raw"))
    parts = [record.prompt, record.system_good, record.system_bad, record.response_good, record.response_bad,
             record.response_raw, cut]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def cache_line(record: TripletRecord, dtype: str | None, lp: dict[str, float | None] | None,
               max_model_len: int | None) -> dict[str, Any]:
    """The cache's line for a scored row; `dtype`: the one the engine ran at (float32, bfloat16 or float16, never
    auto; None, a line no run reuses, when the engine did not say). `lp` None: the row is too long for
    `max_model_len`, which the line names so that a larger one scores it again (its scores are null: the
    likelihood filter drops it as unscored)."""
    line: dict[str, Any] = {"id": record.id, "text": row_text_hash(record), "dtype": dtype}
    if lp is None:
        return {**line, "lp": dict.fromkeys((name for name, _, _ in SCORED), None), "max_model_len": max_model_len}
    return {**line, "lp": lp}


def cache_key(model_id: str, tokenizer: Any, system_supported: bool) -> str:
    from ssogen.chat import chat_template_text, end_of_turn

    parts = {"model": model_id, "system_supported": system_supported, "end_of_turn": list(end_of_turn(tokenizer).ids),
             "template": hashlib.sha256(chat_template_text(tokenizer).encode()).hexdigest(),
             "convention": CONVENTION, "format": 2}
    return json_sha256(parts)[:24]


@dataclass(frozen=True)
class ScoreSetup:
    """What scoring with one model needs before any engine: the cache key and the chat template's behaviour."""

    key: str
    system_supported: bool
    end_of_turn: dict[str, Any]


def score_setup(fingerprint: str, tokenizer: Any) -> ScoreSetup:
    """`fingerprint`: the digest of the model's `model_fingerprint`."""
    from ssogen.chat import end_of_turn, supports_system_role

    system_supported = supports_system_role(tokenizer)
    return ScoreSetup(cache_key(fingerprint, tokenizer, system_supported), system_supported,
                      end_of_turn(tokenizer).as_dict())


def earlier_setup(manifest: dict[str, Any], model: ModelRef, fingerprint: Callable[[], str]) -> ScoreSetup | None:
    """The setup of the folder's last score when it was made with these very model files (a local folder with
    the same fingerprint, asked of `fingerprint` only then) and this version's conventions; None otherwise (then
    the tokenizer decides)."""
    earlier = manifest.get("score")
    if not model.local or not isinstance(earlier, dict) or earlier.get("convention") != CONVENTION:
        return None
    cache, turn_end = earlier.get("cache"), earlier.get("end_of_turn")
    if earlier.get("model_fingerprint") != fingerprint() or not isinstance(cache, str) \
            or not isinstance(turn_end, dict) or not isinstance(earlier.get("system_role_supported"), bool):
        return None
    return ScoreSetup(Path(cache).name, earlier["system_role_supported"], turn_end)


def _check_score_record(record: dict[str, Any]) -> None:
    if not isinstance(record.get("text"), str) or not isinstance(record.get("lp"), dict) \
            or set(record["lp"]) != {name for name, _, _ in SCORED}:
        raise ValueError("needs text and lp with the seven scores")


def cached_scores(store: ShardStore, targets: list[TripletRecord], max_model_len: int | None,
                  dtype: str | None, *, any_length: bool = False) -> Scores:
    """Scores in the cache whose row texts are unchanged, by row id (a line of another shape is one clear line).

    Only scores made at `dtype`, the dtype the engine runs at (`ssogen.engine.dtypes`; None: not known before the
    engine loads, so none), count, so that one filter never compares float32 scores with bfloat16 ones; `--dtype
    auto` and the dtype it resolves to share their scores. A row left unscored as too long counts only under the
    --max-model-len it was too long for (absent: the model's own), so that a larger one scores it; `any_length`:
    under any (a rewrite of the data files keeps what the last score decided, `kept_scores`)."""
    cached = store.load("scores", _check_score_record)
    found: Scores = {}
    for record in targets:
        entry = cached.get(record.id)
        if dtype is None or entry is None or entry.get("text") != row_text_hash(record) or _line_dtype(entry) != dtype:
            continue
        if not any_length and all(value is None for value in entry["lp"].values()) \
                and entry.get("max_model_len") != max_model_len:
            continue
        found[record.id] = entry["lp"]
    return found


def _line_dtype(entry: dict[str, Any]) -> str | None:
    """The dtype a cache line's scores were made at. Lines written before the dtype was resolved name --dtype as
    typed: a precision's other name (half, float) is that precision, but "auto" (or no dtype: auto) matches none,
    so those rows are scored again once. An auto line does not say what auto resolved to where it was written
    (float32 on a CPU, the model's bfloat16 on a GPU; a folder, or a stopped run, may move between machines), so
    honouring it could put scores of two precisions into one filter; scoring the rows again costs one run."""
    dtype = entry.get("dtype", "auto")
    return canonical_dtype(dtype) if isinstance(dtype, str) and dtype != "auto" else None
