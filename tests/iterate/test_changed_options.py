"""A rerun of `ssogen iterate` with other options: taken while no step they decide finished or saved anything
(a run that failed on them, say out of memory or on a bad value, has nothing of those steps to lose: generate's
and train's own "gives way" rule), refused once such a step holds work, and never blocked by the memory and
placement keys that generate and train leave out of their own fingerprints. Until then any change after a failed
step was refused unless --overwrite (only a train config changed before any train step finished was taken)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ssogen.errors import UserError
from ssogen.iterate.options import fingerprint, parse_options
from ssogen.iterate.plan import Planner, Step, split_queries
from ssogen.iterate.state import RunState

GENERATE_YAML = "max_tokens: 8\nkeep_truncated: true\n"
TRAIN_YAML = "max_steps: 2\nbatch_size: 2\nlr: 0.001\nwarmup_ratio: 0.0\nmax_length: 256\nmax_prompt_length: 192\n"
QUERIES = [f"question number {i}?" for i in range(10)]


def _steps(out: Path) -> dict[str, Any]:
    steps: dict[str, Any] = json.loads((out / "iterate.json").read_text(encoding="utf-8"))["steps"]
    return steps


def test_a_run_whose_first_generate_failed_takes_the_corrected_command(tiny_model: Path, tmp_path: Path) -> None:
    """The first generate fails on a bad --max-model-len (only the model, read by the step, says so). The corrected
    config, with a memory key added and --score besides, used to be refused as another run; now it runs the loop."""
    out, gen, train = tmp_path / "run", tmp_path / "generate.yaml", tmp_path / "train.yaml"
    train.write_text(TRAIN_YAML)
    args = [sys.executable, "-m", "ssogen", "iterate", "--model", str(tiny_model), "--out", str(out), "-T", "1",
            "--queries-per-iteration", "3", "--generate-config", str(gen), "--train-config", str(train)]

    def iterate(config: str, *extra: str) -> subprocess.CompletedProcess[str]:
        gen.write_text(GENERATE_YAML + config)
        return subprocess.run([*args, *extra], capture_output=True, text=True, timeout=600)

    failed = iterate("max_model_len: 100000\n")
    assert failed.returncode == 2 and "iter-1/generate failed" in failed.stderr, failed.stderr[-2000:]
    assert _steps(out)["iter-1/generate"]["status"] == "failed"
    fixed = iterate("gpu_memory_utilization: 0.5\n", "--score")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert ("note: configs.generate.max_model_len, score changed while no step it decides had finished or saved "
            "anything: iter-1/generate starts again with the new options") in fixed.stderr
    assert {name: entry["status"] for name, entry in _steps(out).items()} == {
        f"iter-1/{step}": "done" for step in ("generate", "score", "stats", "train")}
    # Now that the steps hold work, a change they were made with is refused, naming them and the way out.
    refused = iterate("gpu_memory_utilization: 0.5\ntemperature: 0.5\n", "--score")
    assert refused.returncode == 2
    assert ("(changed: configs.generate.temperature); iter-1/generate, iter-1/score, iter-1/stats and 1 more hold "
            "work done with the old ones; use --overwrite") in refused.stderr
    # Memory, placement and chunking never block a resume: everything is kept.
    again = iterate("kv_cache_gb: 1\nchunk_size: 2\n", "--score")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("(kept from an earlier invocation)") == 4 and "note:" not in again.stderr
    from ssogen.iterate.run import holds_work

    assert all(holds_work(step) for step in _plan(tmp_path, out, gen, train, score=True)[0])


def _plan(tmp_path: Path, out: Path, gen: Path | None = None, train: Path | None = None, iterations: int = 1,
          train_values: dict[str, Any] | None = None, **values: Any) -> tuple[list[Step], dict[str, Any]]:
    """The steps and the fingerprint of a run of these options (the queries of this module)."""
    o = parse_options({"model": "org/policy", "out": out, "iterations": iterations, "generate_config": gen,
                       "train_config": train, **values})
    planner = Planner(o, {}, {}, {})
    slices = split_queries(QUERIES, iterations, o.queries_per_iteration, o.seed)
    steps = [step for t, s in enumerate(slices) for step in planner.iteration(t + 1, s).steps]
    return steps, fingerprint(o, "org/policy", QUERIES, {"generate": {}, "train": train_values or {}})


def _record(state: RunState, step: Step, status: str = "done") -> None:
    state.mark_running(step, step.argv)
    if status == "done":
        state.mark_done(step, 1.0)
    else:
        state.mark_stopped(step, 1)


def test_a_change_is_taken_only_while_no_step_it_decides_is_done(tmp_path: Path) -> None:
    out = tmp_path / "run"
    steps, first = _plan(tmp_path, out, iterations=2, score=True)
    by_id = {step.id: step for step in steps}
    state = RunState(out)
    state.open(first, overwrite=False, steps=steps)
    _record(state, by_id["iter-1/generate"])
    _record(state, by_id["iter-1/score"], "failed")
    # --filter goes into the score steps, and through them into everything built on their data: iteration 1's
    # generate stays done; its score (failed) starts again.
    filtered, changed = _plan(tmp_path, out, iterations=2, score=True, filter="likelihood")
    taken = RunState(out)
    assert taken.open(changed, overwrite=False, steps=filtered) is True
    assert taken.changed == ["filter"] and taken.restarted == ["iter-1/score"]
    assert taken.redone == [s.id for s in filtered if s.id != "iter-1/generate"]
    assert taken.is_done(by_id["iter-1/generate"]) and taken.entry(by_id["iter-1/score"]) is None
    for name in ("iter-1/score", "iter-1/stats", "iter-1/train"):
        _record(taken, {s.id: s for s in filtered}[name])
    # Iteration 1 is trained: --no-w would train iteration 2 otherwise than iteration 1 was.
    with pytest.raises(UserError, match=r"\(changed: no_w\); iter-1/train holds work done with the old ones; use "
                                        r"--overwrite"):
        RunState(out).check(_plan(tmp_path, out, iterations=2, score=True, filter="likelihood", no_w=True)[1],
                            overwrite=False, steps=filtered)
    # Dropping --score (its steps are in the stored run only) is refused too: the score step is done.
    plain, unscored = _plan(tmp_path, out, iterations=2)
    with pytest.raises(UserError, match=r"\(changed: filter, score\); iter-1/stats, iter-1/train, iter-1/score hold"):
        RunState(out).check(unscored, overwrite=False, steps=plain)


def test_rows_or_checkpoints_a_step_saved_are_not_thrown_away_for_other_options(tmp_path: Path) -> None:
    """A train step that failed after saving a checkpoint: a changed train config was taken, and the step's folder,
    checkpoints and all, removed as made from other inputs (train itself refuses another configuration there)."""
    from ssogen.iterate.run import holds_work

    out = tmp_path / "run"
    steps, first = _plan(tmp_path, out, score=True, train_values={"lr": 0.001})
    by_id = {step.id: step for step in steps}
    state = RunState(out)
    state.open(first, overwrite=False, steps=steps)
    _record(state, by_id["iter-1/generate"])
    _record(state, by_id["iter-1/score"])
    _record(state, by_id["iter-1/stats"])
    _record(state, by_id["iter-1/train"], "failed")
    checkpoint = by_id["iter-1/train"].folder / "checkpoint-1"
    checkpoint.mkdir(parents=True)
    lower = _plan(tmp_path, out, score=True, train_values={"lr": 0.0001})[1]
    with pytest.raises(UserError, match=r"\(changed: configs\.train\.lr\); iter-1/train holds work done with the "
                                        "old ones"):
        RunState(out).check(lower, overwrite=False, steps=steps, saved=holds_work)
    checkpoint.rmdir()  # nothing saved: the step gives way
    assert RunState(out).check(lower, overwrite=False, steps=steps, saved=holds_work) == "changed"
    # A generate step that saved rows before it failed (a shard of finished records) keeps them the same way.
    fresh = tmp_path / "fresh"
    steps, first = _plan(tmp_path, fresh)
    state = RunState(fresh)
    state.open(first, overwrite=False, steps=steps)
    _record(state, steps[0], "failed")
    shard = steps[0].folder / ".ssogen" / "sampling-1.jsonl"
    shard.parent.mkdir(parents=True)
    shard.write_text('{"id": "r1"}\n')
    seed = _plan(tmp_path, fresh, seed=1)[1]
    with pytest.raises(UserError, match=r"\(changed: seed\); iter-1/generate holds work"):
        RunState(fresh).check(seed, overwrite=False, steps=steps, saved=holds_work)
    shard.write_text("")
    assert RunState(fresh).check(seed, overwrite=False, steps=steps, saved=holds_work) == "changed"
