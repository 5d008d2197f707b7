"""`ssogen iterate` end to end on the tiny model (CPU): every step a real `ssogen` subprocess (issue 12 acceptance).

Slow by nature (each step starts a Python process, generate starts an engine): the runs are as small as the loop
allows (3 queries per iteration, 8 new tokens, 2 training steps) and shared by the tests of a module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from ssogen.dataset.folder import OutputFolder
from ssogen.fingerprint import folder_fingerprint

GENERATE_YAML = "max_tokens: 8\nkeep_truncated: true\n"
TRAIN_YAML = ("max_steps: 2\nbatch_size: 2\nlogging_steps: 1\nlr: 0.001\nwarmup_ratio: 0.0\nmax_length: 256\n"
              "max_prompt_length: 192\nsave_steps: 1\n")


def _configs(folder: Path, generate: str = GENERATE_YAML, train: str = TRAIN_YAML) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "generate.yaml").write_text(generate)
    (folder / "train.yaml").write_text(train)
    return ["--generate-config", str(folder / "generate.yaml"), "--train-config", str(folder / "train.yaml")]


def _iterate(*args: str) -> list[str]:
    return [sys.executable, "-m", "ssogen", "iterate", *args]


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _step(out: Path, step: str) -> dict[str, Any] | None:
    state = out / "iterate.json"
    try:
        return _json(state)["steps"].get(step)
    except (OSError, json.JSONDecodeError):
        return None


@pytest.fixture(scope="module")
def killed_and_resumed(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two iterations; the first invocation is killed (SIGKILL to its process group) as soon as iteration 1's
    generation is recorded, the second invocation is the same command and finishes the run."""
    root = tmp_path_factory.mktemp("iterate")
    out = root / "run"
    args = _iterate("--model", str(tiny_model), "--out", str(out), "-T", "2", "--queries-per-iteration", "3",
                    *_configs(root))
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while (_step(out, "iter-1/generate") or {}).get("status") != "done":
        assert first.poll() is None, "iterate ended before its first generation was recorded"
        assert time.monotonic() < deadline, "iteration 1's generation did not finish in time"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    generated = _step(out, "iter-1/generate")
    manifest_before = (out / "iter-1" / "data" / "manifest.json").read_bytes()
    trained_before = (out / "iter-1" / "model" / "metrics.json").exists()
    second = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    return {"out": out, "generated": generated, "manifest_before": manifest_before, "trained_before": trained_before,
            "second": second, "args": args}


def test_layout_of_a_two_iteration_run(killed_and_resumed: dict[str, Any]) -> None:
    out = killed_and_resumed["out"]
    assert {p.name for p in out.iterdir()} == {"iter-1", "iter-2", "iterate.json", "report.json", "plots", "logs",
                                               ".ssogen"}  # .ssogen: the lock and the marker
    assert sorted(p.name for p in (out / ".ssogen").iterdir()) == ["lock", "marker.json"]
    # iterate's own log per invocation (killed, then resumed); each step logs into its own folder.
    logs = sorted((out / "logs").glob("iterate-*.log"), key=lambda log: log.stat().st_mtime)
    assert len(logs) == 2
    # The resumed invocation's log says which steps it kept and which it ran, with their commands.
    resumed = logs[1].read_text()
    assert "iter-1/generate: done in an earlier invocation" in resumed
    assert "iter-2/train: " in resumed and "iter-2/train: done in " in resumed
    assert list((out / "iter-2" / "data" / "logs").glob("generate-*.log"))
    assert list((out / "iter-2" / "model" / "logs").glob("train-*.log"))
    for t in (1, 2):
        folder = out / f"iter-{t}"
        assert {p.name for p in folder.iterdir()} == {"prompts.jsonl", "data", "model"}
        assert len((folder / "prompts.jsonl").read_text().splitlines()) == 3
        assert _json(folder / "data" / "manifest.json")["status"] == "complete"
        assert (folder / "data" / "stats.json").exists() and (folder / "model" / "model.safetensors").exists()
        assert (folder / "model" / "ssogen_train_config.json").exists()
    assert {p.name for p in (out / "plots").iterdir()} == {"lengths.png", "training.png"}
    slices = [set((out / f"iter-{t}" / "prompts.jsonl").read_text().splitlines()) for t in (1, 2)]
    assert not slices[0] & slices[1], "the two iterations' queries must be disjoint"


def test_iteration_two_generates_with_and_is_referenced_to_iteration_one(killed_and_resumed: dict[str, Any],
                                                                         tiny_model: Path) -> None:
    out = killed_and_resumed["out"]
    model_1 = str(out / "iter-1" / "model")
    # The manifests name a local model by its folder name and fingerprint (they are published; paths are not).
    first, second = (_json(out / f"iter-{t}" / "data" / "manifest.json") for t in (1, 2))
    assert (first["model"], first["model_fingerprint"]) == (tiny_model.name, folder_fingerprint(tiny_model))
    assert (second["model"], second["model_fingerprint"]) == ("model", folder_fingerprint(Path(model_1)))
    trained_2 = _json(out / "iter-2" / "model" / "ssogen_train_config.json")
    # `ssogen train`'s reference is the model it starts from: π_1 here, frozen before iteration 2's first step.
    assert trained_2["config"]["model"] == model_1 and trained_2["reference"]["model"] == "starting model"
    assert trained_2["config"]["data"] == str(out / "iter-2" / "data")
    assert _json(out / "iter-1" / "model" / "ssogen_train_config.json")["config"]["model"] == str(tiny_model)


def test_kill_between_generate_and_train_resumes_without_generating_again(killed_and_resumed: dict[str, Any]) -> None:
    out = killed_and_resumed["out"]
    assert not killed_and_resumed["trained_before"], "the kill came too late to test anything"
    # The resumed invocation ran no engine request for iteration 1's data: generate was not started again.
    assert (out / "iter-1" / "data" / "manifest.json").read_bytes() == killed_and_resumed["manifest_before"]
    assert _step(out, "iter-1/generate") == killed_and_resumed["generated"]
    assert "done iter-1/generate (kept from an earlier invocation)" in killed_and_resumed["second"].stdout
    # ...while iteration 2's data was generated now, by the engine.
    assert _json(out / "iter-2" / "data" / "manifest.json")["requests_this_invocation"] == {"selection": 3,
                                                                                            "sampling": 9}


def test_a_third_invocation_runs_nothing(killed_and_resumed: dict[str, Any]) -> None:
    out = killed_and_resumed["out"]
    state = _json(out / "iterate.json")
    again = subprocess.run(killed_and_resumed["args"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("(kept from an earlier invocation)") == 6
    assert _json(out / "iterate.json")["steps"] == state["steps"]
    # The dry run marks the steps a run would keep (it listed them all as to be run).
    plan = subprocess.run([*killed_and_resumed["args"], "--dry-run"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "400"})
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert plan.stdout.count("(done: kept)") == 6 and _json(out / "iterate.json")["steps"] == state["steps"]


def test_changed_option_is_refused_unless_overwrite(killed_and_resumed: dict[str, Any]) -> None:
    args = [*killed_and_resumed["args"], "--no-w"]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "holds an iterate run with other options (changed: no_w)" in refused.stderr
    assert "--overwrite" in refused.stderr


def test_report_numbers_match_the_iteration_folders(killed_and_resumed: dict[str, Any]) -> None:
    out = killed_and_resumed["out"]
    report = _json(out / "report.json")
    assert report["recipe"] == "v1" and [e["iteration"] for e in report["iterations"]] == [1, 2]
    for entry in report["iterations"]:
        folder = out / f"iter-{entry['iteration']}"
        rows = pq.read_table(OutputFolder(folder / "data").config_file("triplets")).to_pylist()
        kept = [r for r in rows if r["kept"]]
        data = entry["data"]
        assert (data["rows"], data["kept"], data["dropped"]) == (len(rows), len(kept), len(rows) - len(kept))
        for variant in ("good", "bad", "raw"):
            assert data["mean_tokens"][variant] == pytest.approx(
                sum(r[f"num_tokens_{variant}"] for r in kept) / len(kept))
        assert data["chosen_rejected_length_ratio"] == pytest.approx(
            sum(r["num_tokens_good"] for r in kept) / sum(r["num_tokens_bad"] for r in kept))
        assert data["on_policy"] is None  # not scored in this run
        metrics = _json(folder / "model" / "metrics.json")
        last = [e for e in metrics["log_history"] if "loss" in e][-1]
        training = entry["training"]
        assert training["final_loss"] == last["loss"] and training["steps"] == 2
        assert training["source"] == "final_eval"
        for pair in ("p1", "p2", "p3"):
            assert training["accuracy"][pair] == metrics["final_eval"][f"rewards/{pair}/accuracy"]
        assert training["mean_W"] == metrics["final_eval"]["W"] and 0.5 <= training["mean_W"] < 1
        # The report (local) names the model folder; the manifest (published) its fingerprint.
        assert folder_fingerprint(Path(entry["generated_with"])) == _json(folder / "data" / "manifest.json")[
            "model_fingerprint"]
    table = killed_and_resumed["second"].stdout
    assert "ssogen iterate: report (recipe v1)" in table and "mean tokens y+" in table


def test_a_training_killed_after_a_checkpoint_resumes_from_it(killed_and_resumed: dict[str, Any]) -> None:
    """The state of a run killed inside iteration 2's training, after its last checkpoint was written: the final
    outputs are not there yet and the step is recorded as running. (Runs last: it changes the shared run.)"""
    out = killed_and_resumed["out"]
    model = out / "iter-2" / "model"
    for name in ("metrics.json", "ssogen_train_config.json"):
        (model / name).unlink()
    state = _json(out / "iterate.json")
    state["steps"]["iter-2/train"]["status"] = "running"
    (out / "iterate.json").write_text(json.dumps(state))
    resumed = subprocess.run(killed_and_resumed["args"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # The same train command line again: train itself resumes from its newest complete checkpoint.
    assert "--resume-from-checkpoint" not in resumed.stdout
    # A note, so on stderr: stdout carries a command's summary only.
    assert f"resuming the run in {model} from checkpoint-2" in resumed.stderr
    assert "resuming the run in" not in resumed.stdout
    assert _json(out / "iterate.json")["steps"]["iter-2/train"]["status"] == "done"
    metrics = _json(model / "metrics.json")
    assert [e["step"] for e in metrics["log_history"] if "loss" in e] == [1, 2]  # from the checkpoint's history
