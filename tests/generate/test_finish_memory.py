"""The end of `generate` reads the saved rows back a batch at a time: it never holds every row's record."""

from __future__ import annotations

import json
import tracemalloc
from functools import partial
from pathlib import Path

import pytest

from ssogen.dataset import card, configs, triplet_files
from ssogen.dataset.shard_index import SavedRecords
from ssogen.dataset.shards import ShardStore
from ssogen.generate import finish
from ssogen.generate.config import RunConfig
from ssogen.generate.plan import plan_run
from ssogen.generate.run import run_generate
from ssogen.testing.folders import make_record


def _saved_run(tiny_model: Path, tmp_path: Path, name: str, rows: int, text: int) -> tuple[RunConfig, int]:
    """A run whose shards hold every row (responses of `text` characters), as a killed-at-the-end run leaves it;
    the bytes of its saved rows."""
    prompts = tmp_path / f"{name}.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i}?"}) + "\n" for i in range(rows)))
    config = RunConfig(model=str(tiny_model), out=str(tmp_path / name), prompts=str(prompts), max_tokens=8,
                       keep_truncated=True, engine="transformers")
    plan = plan_run(config)
    store = ShardStore(config.out)
    store.prepare(plan.fingerprint(), overwrite=False)
    features = [feature.name for feature in plan.library.features[:2]]
    for row in plan.rows:
        store.append("rows", [make_record(row.position, row.prompt, features=features, response_good="g" * text,
                                          response_bad="b" * text, response_raw="r" * text).model_dump()])
    store.close()
    return config, sum(path.stat().st_size for path in store.dir.glob("rows-*.jsonl"))


def test_finishing_a_saved_run_holds_a_batch_of_rows_not_every_row(tiny_model: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Batches of 20 rows, in the pair configs' and the card's reads of the triplets too: 800 rows are many batches.
    monkeypatch.setattr(finish, "BATCH_ROWS", 20)
    monkeypatch.setattr(configs, "READ_BACK_ROWS", 20)
    monkeypatch.setattr(card, "rows_at", partial(triplet_files.rows_at, size=20))
    run_generate(_saved_run(tiny_model, tmp_path, "warm", 20, 10)[0])  # the imports' memory is not the rows'
    config, saved = _saved_run(tiny_model, tmp_path, "large", 800, 12000)
    tracemalloc.start()
    try:
        result = run_generate(config)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.manifest["configs"]["triplets"] == 800
    assert result.manifest["tokens_total"] == 800 * 12
    # Every record held at once was about the rows' bytes (30 MB here); a batch of 20 is a twentieth of it.
    assert peak < saved / 4, (peak, saved)


def test_a_dry_run_of_a_resume_counts_the_saved_rows_without_holding_them(tiny_model: Path, tmp_path: Path) -> None:
    from ssogen.generate.dry_run import request_counts

    config, saved = _saved_run(tiny_model, tmp_path, "large", 400, 12000)
    plan = plan_run(config)
    tracemalloc.start()
    try:
        counts = request_counts(plan, resumes=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (counts.done, counts.selection, counts.sampling) == (400, 0, 0)
    assert peak < saved / 4, (peak, saved)  # loading every record took about the rows' bytes


def test_finishing_a_saved_run_parses_each_saved_row_once(tiny_model: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Each pass over the saved rows parsed and validated every line again (~1 s per 20k rows): the triplets are
    # built, and the summary and stats counted, on one pass; the pair configs come from the triplets' files.
    monkeypatch.setattr(finish, "BATCH_ROWS", 20)
    config, _ = _saved_run(tiny_model, tmp_path, "once", 50, 10)
    read: list[str] = []
    real_read = SavedRecords.read
    monkeypatch.setattr(SavedRecords, "read", lambda self, ids: read.extend(ids) or real_read(self, ids))
    result = run_generate(config.model_copy(update={"test_size": 0.2}))
    assert sorted(read) == sorted(row.id for row in plan_run(config).rows), f"{len(read)} reads of 50 saved rows"
    assert result.manifest["configs"] == {"triplets": 50, "dpo": 50, "sso": 50, "reward": 50, "pairs": 150}
    assert result.manifest["summary"]["rows"] == 50 and result.manifest["tokens_total"] == 50 * 12
