"""`ssogen score`'s cache is keyed on the dtype the engine runs at, not on --dtype as typed: `auto` and the dtype
it resolves to share their scores, and every score of one run (so of one filter) is of one precision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssogen.dataset import score as score_module
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.score import score_folder
from ssogen.engine.options import EngineOptions
from ssogen.testing.folders import write_dataset
from tests.dataset.test_score import max_diff, reference_logprobs, tiny_rows


def cache_lines(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for path in sorted((out / ".ssogen" / "score").glob("*/scores-*.jsonl"))
            for line in path.read_text().splitlines()]


def rewrite_cache(out: Path, change: dict[str, object], *, drop_last: bool = False) -> None:
    """The cache as another version, or an interrupted run, left it: each line changed (a None value: the key
    removed), the last one maybe gone."""
    paths = sorted((out / ".ssogen" / "score").glob("*/scores-*.jsonl"))
    for path in paths:
        lines = [{**json.loads(line), **change} for line in path.read_text().splitlines()]
        lines = lines[:-1] if drop_last and path == paths[-1] else lines
        path.write_text("".join(json.dumps({k: v for k, v in line.items() if v is not None}) + "\n"
                                for line in lines))


def test_auto_and_the_dtype_it_resolves_to_share_their_scores(tiny_model: Path, tmp_path: Path) -> None:
    """On the CPU --dtype auto is float32: a rerun with --dtype float32 (or float) scored every row again."""
    out = write_dataset(tmp_path / "out", tiny_rows()[:3])
    first = score_folder(out, str(tiny_model), engine="transformers")  # --dtype auto
    assert (first.from_cache, first.scored_now) == (0, 3)
    for spelling in ("float32", "float", "auto"):
        again = score_folder(out, str(tiny_model), engine="transformers", engine_options=EngineOptions(dtype=spelling))
        assert (again.from_cache, again.scored_now) == (3, 0), spelling
    assert {line["dtype"] for line in cache_lines(out)} == {"float32"}  # what the engine ran at, not "auto"
    score = json.loads((out / "manifest.json").read_text())["score"]
    assert score["dtype"] == "float32" and score["engine_settings"]["dtype"] == "float32"
    # Another precision is scored again, as before.
    half = score_folder(out, str(tiny_model), engine="transformers", engine_options=EngineOptions(dtype="bfloat16"))
    assert (half.from_cache, half.scored_now) == (0, 3)


def test_cache_lines_that_say_auto_are_scored_again(tiny_model: Path, tmp_path: Path) -> None:
    """An "auto" line (or one naming no dtype) does not say which precision auto was where it was written: scored
    again once. A precision's other name (float) is that precision: kept."""
    out = write_dataset(tmp_path / "out", tiny_rows()[:3])
    score_folder(out, str(tiny_model), engine="transformers")
    rewrite_cache(out, {"dtype": "float"})
    assert score_folder(out, str(tiny_model), engine="transformers").from_cache == 3
    for old in ("auto", None):
        rewrite_cache(out, {"dtype": old})
        again = score_folder(out, str(tiny_model), engine="transformers")
        assert (again.from_cache, again.scored_now) == (0, 3), old
        assert [line.get("dtype") for line in cache_lines(out)][-3:] == ["float32"] * 3  # the rows scored now


def test_an_engine_at_another_dtype_than_expected_keeps_one_precision(tiny_model: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The dtype guessed before the engine loads (here: bfloat16, as on a GPU) is not what the loaded engine runs
    at (float32): the bfloat16 scores found with the guess are dropped, every row is scored at float32."""
    out = write_dataset(tmp_path / "out", tiny_rows()[:3])
    score_folder(out, str(tiny_model), engine="transformers", engine_options=EngineOptions(dtype="bfloat16"))
    rewrite_cache(out, {}, drop_last=True)  # a stopped run: one row left to score, so the engine loads
    monkeypatch.setattr(score_module, "expected_dtype", lambda kind, model, options: "bfloat16")
    report = score_folder(out, str(tiny_model), engine="transformers")  # auto: float32 on this CPU
    assert (report.from_cache, report.scored_now) == (0, 3)
    records = [r for r in OutputFolder(out).read_triplets() if r.kept]
    assert max_diff(records, reference_logprobs(tiny_model, records)) < 1e-4  # float32 values, none of bfloat16
    assert [line["dtype"] for line in cache_lines(out)][-3:] == ["float32"] * 3
    assert json.loads((out / "manifest.json").read_text())["score"]["dtype"] == "float32"


def test_a_manifest_names_the_settings_of_another_precision_no_more(tiny_model: Path, tmp_path: Path) -> None:
    """Every row from the cache: the earlier run's engine settings are carried only when that run made scores of
    this precision."""
    out = write_dataset(tmp_path / "out", tiny_rows()[:2])
    score_folder(out, str(tiny_model), engine="transformers")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["score"]["engine_settings"]["dtype"] = "bfloat16"  # as a run at bfloat16 of other rows would leave it
    (out / "manifest.json").write_text(json.dumps(manifest))
    again = score_folder(out, str(tiny_model), engine="vllm")
    assert again.from_cache == 2
    score = json.loads((out / "manifest.json").read_text())["score"]
    assert score["dtype"] == "float32" and score["engine_settings"] is None and score["engine"] == "vllm"
