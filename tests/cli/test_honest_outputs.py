"""What a user sees and publishes after a real run (issue 9, items 7-10): every input lies under a stand-in home
folder; `ssogen generate` runs as its own process on vLLM, then `score`, `judge` and `stats` run on the folder.

* No file that `push-to-hub` would upload names a local path (the home folder or the output folder).
* The card has the license, the splits, the dataset_info block and example rows; the test split loads as a
  DatasetDict and shares no query with train.
* The summary counts the rows taken under --limit, measures tokens/s over engine time, warns about truncation
  and random feature fill, and says what to run next.
* stdout carries the summary only; vLLM's warnings reach stderr, everything (its info lines, tqdm bars, C++ and
  Python warnings) reaches OUT/logs/generate-<UTC time>.log, which is never uploaded."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.dataset.publishable import check_publishable, files_to_upload
from ssogen.principles import BUNDLED_DIR
from ssogen.templating import BUNDLED_TEMPLATES
from ssogen.testing.folders import row_counts

QUERIES = [f"How do I look after plant number {i}?" for i in range(28)]
# The same question at two positions: both rows must land in one split.
QUERIES[5] = QUERIES[2]


@pytest.fixture(scope="module")
def run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("honest")
    home = root / "home" / "alice"
    model = home / "models" / "tiny"
    shutil.copytree(tiny_model, model)
    (home / "data").mkdir(parents=True)
    prompts = home / "data" / "queries.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUERIES))
    (home / "libs").mkdir()
    library = home / "libs" / "my-lib.yaml"
    shutil.copy(BUNDLED_DIR / "default.yaml", library)
    templates = home / "tpl"
    templates.mkdir()
    for name in ("system.jinja", "judge.jinja"):
        shutil.copy(BUNDLED_TEMPLATES / name, templates / name)
    out = root / "out"
    argv = ["generate", "--model", str(model), "--prompts", str(prompts), "--principles", str(library),
            "--templates", str(templates), "--out", str(out), "--limit", "12", "--max-tokens", "8",
            "--keep-truncated", "--test-size", "0.25", "--license", "cc-by-4.0", "--seed", "3"]
    generated = subprocess.run([sys.executable, "-m", "ssogen", *argv], capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "200"}, timeout=600, check=False)
    assert generated.returncode == 0, generated.stderr[-3000:]
    runner = CliRunner()
    for args in (["score", str(out), "--model", str(model), "--engine", "transformers"],
                 ["judge", str(out), "--judge-model", str(model), "--engine", "transformers", "--sample", "2",
                  "--max-tokens", "4", "--templates", str(templates)],
                 ["stats", str(out), "--no-plots"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args[0], result.output)
    return {"root": root, "home": home, "out": out, "model": model, "generated": generated}


def _front_matter(card: str) -> dict[str, Any]:
    return yaml.safe_load(card.split("---\n")[1])


def test_no_published_file_names_a_local_path(run: dict[str, Any]) -> None:
    out, home, root = run["out"], run["home"], run["root"]
    uploaded = files_to_upload(out)
    names = {f.path_in_repo for f in uploaded}
    assert {"README.md", "manifest.json", "config.resolved.yaml", "library.yaml", "stats.json", "judge.json"} <= names
    assert not any(name.startswith("logs/") for name in names)
    # Both splits go up, and the folder passes push-to-hub's checks with them.
    assert {f"data/{c}/{s}-00000-of-00001.parquet" for c in ("triplets", "dpo") for s in ("train", "test")} <= names
    assert check_publishable(out) == row_counts(out)
    for file in uploaded:
        text = file.local_path.read_bytes().decode("utf-8", errors="replace")
        for local in {str(root), str(root.resolve()), str(home), "/alice"}:
            assert local not in text, (file.path_in_repo, local)
    # The logs do name local paths (the search above can find them): that is why they stay local.
    log = next((out / "logs").glob("generate-*.log")).read_text()
    assert str(home) in log
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["model"], manifest["model_origin"]) == ("tiny", "local folder")
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["model_fingerprint"])
    assert manifest["library"]["origin"] == "file my-lib.yaml" and "source" not in manifest["library"]
    # The library by name, version and hash: the hash is that of the user's file, and the card shows all three.
    bundled = yaml.safe_load((BUNDLED_DIR / "default.yaml").read_text())
    digest = hashlib.sha256((home / "libs" / "my-lib.yaml").read_bytes()).hexdigest()
    assert (manifest["library"]["name"], manifest["library"]["version"], manifest["library"]["sha256"]) == (
        bundled["name"], str(bundled["version"]), digest)
    assert f"{bundled['name']} {bundled['version']} (sha256 `{digest}`)" in (out / "README.md").read_text()
    assert manifest["prompts"]["source"] == "queries.jsonl" and manifest["prompts"]["origin"] == "local file"
    assert manifest["templates"]["origin"] == "--templates"
    assert manifest["score"]["model"] == "tiny" and manifest["score"]["model_fingerprint"] == \
        manifest["model_fingerprint"]
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert (resolved["model"], resolved["out"], resolved["principles"], resolved["prompts"], resolved["templates"]) \
        == ("tiny", ".", "library.yaml", "queries.jsonl", "tpl")
    judged = json.loads((out / "judge.json").read_text())
    assert judged["judge_model"] == "tiny" and judged["template"]["file"] == "judge.jinja"


def test_card_declares_license_splits_features_and_shows_examples(run: dict[str, Any]) -> None:
    import datasets

    out = run["out"]
    card = (out / "README.md").read_text()
    header = _front_matter(card)
    assert header["license"] == "cc-by-4.0"
    dpo = next(c for c in header["configs"] if c["config_name"] == "dpo")
    assert [f["split"] for f in dpo["data_files"]] == ["train", "test"]
    info = {entry["config_name"]: entry for entry in header["dataset_info"]}
    assert set(info) == {"triplets", "dpo", "sso", "reward", "pairs"}
    # The features block is the one `datasets` writes for these files.
    for config, entry in info.items():
        schema = pq.read_schema(out / "data" / config / "train-00000-of-00001.parquet")
        assert datasets.Features._from_yaml_list(entry["features"]) == datasets.Features.from_arrow_schema(schema)
    loaded = datasets.load_dataset(str(out), "dpo", cache_dir=str(out / ".ssogen" / "hf-cache"))
    assert set(loaded) == {"train", "test"}
    assert [s["num_examples"] for s in info["dpo"]["splits"]] == [len(loaded["train"]), len(loaded["test"])]
    train_queries = {row[-1]["content"] for row in loaded["train"]["prompt"]}
    test_queries = {row[-1]["content"] for row in loaded["test"]["prompt"]}
    assert train_queries and test_queries and not train_queries & test_queries
    # `pairs`: the three SSO pairs of each of those rows, in the same split.
    pairs = datasets.load_dataset(str(out), "pairs", cache_dir=str(out / ".ssogen" / "hf-cache"))
    assert [len(pairs[s]) for s in ("train", "test")] == [3 * len(loaded[s]) for s in ("train", "test")]
    assert {row[-1]["content"] for row in pairs["test"]["prompt"]} == test_queries
    triplets = datasets.load_dataset(str(out), "triplets", cache_dir=str(out / ".ssogen" / "hf-cache"))
    assert len(set(triplets["test"]["prompt"])) == 3  # round(0.25 x 11 distinct queries among the 12 rows taken)
    # The query asked twice (rows 2 and 5) is in one split with both of its rows.
    assert sorted([triplets[split]["prompt"].count(QUERIES[2]) for split in ("train", "test")]) == [0, 2]
    assert "## Examples" in card and card.count("### Example ") == 3
    assert "The `test` split holds 25% of the queries" in card


def test_summary_counts_taken_rows_engine_time_and_says_what_next(run: dict[str, Any]) -> None:
    out, model = run["out"], run["model"]
    stdout = run["generated"].stdout
    assert "12 / 0 (--limit 12: the first 12 of 28 input rows read)" in stdout
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert (summary["rows_in"], summary["rows_read"], summary["input_rows"]) == (12, 12, 28)
    # tokens/s over the engine's time only: loading the model is in the wall time, not in the rate.
    assert 0 < summary["generation_time_s"] < summary["wall_time_s"]
    assert summary["tokens_per_s"] == pytest.approx(summary["tokens_generated"] / summary["generation_time_s"],
                                                    rel=0.01)  # both numbers are rounded in the manifest
    assert f"ssogen stats {out}" in stdout and f"ssogen score {out} --model {model}" in stdout
    assert f"ssogen train --data {out} --model {model} --out {out}-model" in stdout
    # Random tiny weights ramble to the token limit and name no feature: both warnings, on stderr.
    stderr = run["generated"].stderr
    assert "warning: 12 of 12 rows (100%) have a response cut at --max-tokens 8" in stderr
    assert "warning: feature selection fell back to a random pick for 12 of 12 rows (100%)" in stderr
    assert "warning" not in stdout.lower()


def test_stdout_has_the_summary_the_log_has_everything(run: dict[str, Any]) -> None:
    out, generated = run["out"], run["generated"]
    logs = sorted((out / "logs").iterdir())
    assert [re.sub(r"\d{8}T\d{6}Z", "T", p.name) for p in logs] == [
        "generate-T.log", "judge-T.log", "score-T.log", "stats-T.log"]
    log = logs[0].read_text()
    # vLLM's info lines and its tqdm bar are in the log only; its warnings are in the log and on stderr.
    assert "INFO vllm." in log and "Loading safetensors checkpoint shards" in log
    assert "WARNING vllm." in log and "warning [vllm]: " in generated.stderr
    for stream in (generated.stdout, generated.stderr):
        assert "Loading safetensors" not in stream and "INFO" not in stream
    assert "ssogen generate: out" in generated.stdout and "generate ━" not in generated.stdout  # bar: stderr
    assert "ssogen generate: out" in log and re.search(r"INFO ssogen: finished in [\d.]+ s$", log.rstrip())
    # `stats --json` in a process of its own: stdout is the JSON and nothing else.
    stats = subprocess.run([sys.executable, "-m", "ssogen", "stats", str(out), "--json", "--no-plots"],
                           capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(stats.stdout)["funnel"]["rows_in"] == 12
    score_log = next(p for p in logs if p.name.startswith("score-")).read_text()
    assert re.search(r"rows scored: [\d.]+ rows/s", score_log) and "finished in" in score_log
