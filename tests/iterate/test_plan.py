"""The plan and the resume state of `ssogen iterate`, without running any step: slices, command lines, options
passed through, what invalidates what, and what a folder of another run does to a new one."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ssogen.errors import NUM_PROCESSES_ENV, UserError
from ssogen.iterate.options import (
    TRAIN_OWNED,
    fingerprint,
    generate_config_values,
    parse_options,
    train_config_values,
)
from ssogen.iterate.plan import Planner, Step, split_queries
from ssogen.iterate.state import RunState

QUERIES = [f"question number {i}?" for i in range(10)]


def options(tmp_path: Path, **values: Any) -> Any:
    return parse_options({"model": "org/policy", "out": tmp_path / "run", **values})


def plan(tmp_path: Path, iterations: int = 2, train_values: dict[str, Any] | None = None, **values: Any) -> list[Any]:
    o = options(tmp_path, iterations=iterations, **values)
    planner = Planner(o, {"engine": "vllm", "tp": 2}, train_values or {}, {})
    slices = split_queries(QUERIES, iterations, o.queries_per_iteration, o.seed)
    return [planner.iteration(t + 1, s) for t, s in enumerate(slices)]


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_slices_are_disjoint_seeded_and_cover_the_queries() -> None:
    slices = split_queries(QUERIES, 3, None, seed=0)
    assert [len(s) for s in slices] == [3, 4, 3]
    assert sorted(q for s in slices for q in s) == sorted(QUERIES)
    assert split_queries(QUERIES, 3, None, seed=0) == slices != split_queries(QUERIES, 3, None, seed=1)
    fixed = split_queries(QUERIES, 2, 4, seed=0)
    assert [len(s) for s in fixed] == [4, 4] and not set(fixed[0]) & set(fixed[1])
    # With N per iteration, an extra iteration only appends a slice: the earlier ones stay the same.
    assert split_queries(QUERIES, 1, 4, seed=0) == fixed[:1]


def test_too_few_queries_are_refused() -> None:
    with pytest.raises(UserError, match="needs 12 queries; the input has 10"):
        split_queries(QUERIES, 3, 4, seed=0)
    with pytest.raises(UserError, match="--iterations 11: the input has only 10 queries$"):
        split_queries(QUERIES, 11, None, seed=0)
    with pytest.raises(UserError, match="--iterations 2: the input has only 1 query$"):  # was "1 queries"
        split_queries(QUERIES[:1], 2, None, seed=0)


def test_iteration_two_generates_scores_and_trains_from_iteration_one(tmp_path: Path) -> None:
    first, second = plan(tmp_path, filter="likelihood", no_w=True, objective="v1")
    out = (tmp_path / "run").resolve()
    assert [s.kind for s in second.steps] == ["generate", "score", "stats", "train"]
    generate, score, stats, train = second.steps
    model_1 = str(out / "iter-1" / "model")
    assert generate.argv[:4] == [sys.executable, "-m", "ssogen", "generate"]
    assert flag_value(generate.argv, "--model") == model_1 == flag_value(score.argv, "--model")
    assert flag_value(generate.argv, "--out") == str(out / "iter-2" / "data")
    assert flag_value(generate.argv, "--prompts") == str(out / "iter-2" / "prompts.jsonl")
    assert flag_value(generate.argv, "--split") == "train"  # the slice is a file: a config's split is the input's
    assert flag_value(score.argv, "--filter") == "likelihood" and flag_value(score.argv, "--tp") == "2"
    assert flag_value(train.argv, "--model") == model_1 and flag_value(train.argv, "--data") == str(out / "iter-2"
                                                                                                    / "data")
    assert {"--objective=v1", "--no-w", "--final-eval"} <= set(train.argv) and "--no-g" not in train.argv
    assert flag_value(first.steps[0].argv, "--model") == "org/policy"  # a hub id stays as given
    # What each step is made from: a redone step invalidates exactly these.
    assert generate.inputs == ["iter-1/train"] and score.inputs == ["iter-2/generate", "iter-1/train"]
    assert stats.inputs == ["iter-2/generate", "iter-2/score"]
    assert train.inputs == ["iter-2/generate", "iter-2/score", "iter-1/train"]


def test_config_files_pass_through_and_final_eval_respects_the_file(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text("max_tokens: 8\n")
    (tmp_path / "t.yaml").write_text("max_steps: 2\n")
    (step, *_), = [it.steps for it in plan(tmp_path, iterations=1, generate_config=tmp_path / "g.yaml")]
    assert flag_value(step.argv, "--config") == str((tmp_path / "g.yaml").resolve())
    (*_, train), = [it.steps for it in plan(tmp_path, iterations=1, train_config=tmp_path / "t.yaml",
                                             train_values={"final_eval": False})]
    assert flag_value(train.argv, "--config") == str((tmp_path / "t.yaml").resolve())
    assert "--final-eval" not in train.argv


def test_num_processes_trains_through_accelerate_launch(tmp_path: Path) -> None:
    (*_, train), = [it.steps for it in plan(tmp_path, iterations=1, num_processes=4)]
    assert train.argv[:10] == [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--num_processes", "4",
                               "-m", "ssogen", "train", "--data"]
    assert train.env == {NUM_PROCESSES_ENV: "4"}  # the step checks that it runs in 4 processes
    (tmp_path / "zero3.yaml").write_text("distributed_type: DEEPSPEED\n")
    (*_, train), = [it.steps for it in plan(tmp_path, iterations=1, accelerate_config=tmp_path / "zero3.yaml")]
    assert train.argv[2:8] == ["accelerate.commands.launch", "--quiet", "--config_file", str(tmp_path / "zero3.yaml"),
                               "-m", "ssogen"]
    assert train.env == {}  # accelerate's config decides the processes: nothing to check against


def test_a_local_judge_is_handed_to_its_step_by_its_absolute_path(tmp_path: Path, tiny_model: Path) -> None:
    import os

    relative = os.path.relpath(tiny_model)  # as typed: ../models/tiny
    (*_, judge), = [it.steps for it in plan(tmp_path, iterations=1, judge_model=relative)]
    assert flag_value(judge.argv, "--judge-model") == judge.model == str(tiny_model.resolve())


def test_a_local_judge_s_files_are_hashed_once_for_all_iterations(tmp_path: Path, tiny_model: Path,
                                                                  weight_hashes: list[Path]) -> None:
    from ssogen import fingerprint

    hashed = weight_hashes
    iterations = plan(tmp_path, iterations=3, judge_model=str(tiny_model))
    judges = [step for iteration in iterations for step in iteration.steps if step.kind == "judge"]
    assert hashed == [tiny_model.resolve()]
    assert len(judges) == 3 and len({json.dumps(j.settings, sort_keys=True) for j in judges}) == 1
    assert judges[0].settings["judge_model_fingerprint"] == fingerprint.folder_fingerprint(tiny_model)


def test_a_judge_step_counts_as_finished_only_on_the_dpo_config(tmp_path: Path) -> None:
    """Iterate's judge step judges dpo; a judge.json of the pairs or reward config, from a `ssogen judge` run by
    hand on the iteration's data, is not its result (the report would show it as the iteration's accuracy)."""
    from ssogen.dataset.folder import OutputFolder
    from ssogen.iterate.run import finished

    settings = {"judge_model": "judge", "sample": 200, "seed": 0}
    step = Step("iter-1/judge", "judge", tmp_path, [], "judge", tmp_path, settings)
    for config, done in (("dpo", True), (None, True), ("pairs", False), ("reward", False)):
        written = {**settings, "metrics": {}} | ({} if config is None else {"config": config})
        OutputFolder(tmp_path).write_judge(written)
        assert finished(step) is done, config
    OutputFolder(tmp_path).write_judge({**settings, "config": "dpo", "sample": 100, "metrics": {}})
    assert not finished(step)


def test_recipe_v2_trains_a_generator_then_the_policy_on_its_data(tmp_path: Path) -> None:
    (iteration,) = plan(tmp_path, iterations=1, recipe="v2", generator_queries=4, score=True,
                        judge_model="judge-model")
    out = (tmp_path / "run").resolve() / "iter-1"
    assert [s.id for s in iteration.steps] == [
        "iter-1/generator-generate", "iter-1/generator-score", "iter-1/generator-stats", "iter-1/generator-train",
        "iter-1/generate", "iter-1/score", "iter-1/stats", "iter-1/train", "iter-1/judge"]
    steps = {s.id.split("/")[1]: s for s in iteration.steps}
    assert len(iteration.generator_queries) == 4 and iteration.generator_queries == iteration.queries[:4]
    assert flag_value(steps["generator-generate"].argv, "--model") == "org/policy"
    assert flag_value(steps["generator-train"].argv, "--out") == str(out / "generator")
    assert "--objective=v2" in steps["generator-train"].argv
    assert flag_value(steps["generate"].argv, "--model") == str(out / "generator")
    assert flag_value(steps["score"].argv, "--model") == "org/policy"  # on-policy-ness against the policy
    assert "--filter" not in steps["score"].argv
    policy = steps["train"].argv
    assert flag_value(policy, "--model") == "org/policy" and flag_value(policy, "--data") == str(out / "data")
    assert {"--objective=v1", "--no-w", "--no-g", "--loss=dpo"} <= set(policy)
    assert steps["generate"].inputs == ["iter-1/generator-train"]
    assert flag_value(steps["judge"].argv, "--judge-model") == "judge-model"
    (iteration,) = plan(tmp_path, iterations=1, recipe="v2", train_values={"loss_type": "ipo"})
    assert "--loss=dpo" not in iteration.steps[-1].argv  # the file's loss wins


@pytest.mark.parametrize("values, message", [
    ({"recipe": "v2", "no_w": True}, "--no-w cannot be used with --recipe v2"),
    ({"generator_queries": 3}, "--generator-queries needs --recipe v2"),
    ({"objective": "v2", "no_g": True}, "--no-w / --no-g cannot be used with --objective v2"),
    ({"filter": "other"}, "--filter"),
])
def test_incompatible_options_give_one_line(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message.replace("/", ".")):
        options(tmp_path, **values)


@pytest.mark.parametrize("text, message", [
    ("model: x\n", "'model' is set by iterate"),
    ("limit: 3\n", "use --queries-per-iteration"),
    ("temperature: -1\n", r"g\.yaml:1: temperature: Input should be greater than or equal to 0"),
])
def test_generate_config_is_checked_before_anything_runs(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "g.yaml").write_text(text)
    with pytest.raises(UserError, match=message):
        generate_config_values(tmp_path / "g.yaml")


@pytest.mark.parametrize("text, recipe, message", [
    ("out: x\n", "v1", "'out' is set by iterate"),
    ("lora: true\n", "v1", "lora is not supported"),
    ("no_w: true\n", "v2", "--no-w cannot be set with --recipe v2"),
    ("alpha: 0.3\n", "v2", "--alpha cannot be set with --recipe v2"),
    ("lr: -1\n", "v1", r"t\.yaml:1: lr: Input should be greater than 0"),
    # What only transformers checks came after the data steps (hours on a real model).
    ("lr: 1.0e-6\noptim: notanoptim\n", "v1", r"invalid training option \(.*t\.yaml:2: optim\): notanoptim is "),
    ("scheduler: bogus\n", "v2", r"invalid training option \(.*t\.yaml:1: scheduler\): bogus is not"),
    ("deepspeed: zero3.json\n", "v1", r"t\.yaml:1: deepspeed: needs the deepspeed package"),
])
def test_train_config_is_checked_before_anything_runs(tmp_path: Path, text: str, recipe: str, message: str) -> None:
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(UserError, match=message):
        train_config_values(tmp_path / "t.yaml", "--train-config", recipe)


def test_the_bundled_train_config_for_recipe_v2_without_the_lines_the_readme_names(tmp_path: Path) -> None:
    bundled = (Path(__file__).parents[2] / "configs" / "train.yaml").read_text()
    (tmp_path / "t.yaml").write_text(bundled)
    with pytest.raises(UserError, match="--objective, --w-placement, --alpha, --lambda cannot be set with --recipe "
                                        "v2"):  # each at once, by its flag (`lambda:` sets the field lam)
        train_config_values(tmp_path / "t.yaml", "--train-config", "v2")
    kept = [line for line in bundled.splitlines()
            if line.split(":")[0] not in ("objective", "loss", "alpha", "lambda", "w-placement")]
    (tmp_path / "t.yaml").write_text("\n".join(kept) + "\n")
    assert train_config_values(tmp_path / "t.yaml", "--train-config", "v2")["lr"] == 5.0e-7  # taken


def test_a_train_config_option_that_iterate_s_objective_flags_make_void_is_refused_at_once(tmp_path: Path) -> None:
    """`iterate --no-w` with `alpha:` in the train config used to fail in the first train step, after generating."""
    (tmp_path / "t.yaml").write_text("alpha: 0.3\n")
    with pytest.raises(UserError, match=r"--alpha cannot be used with --no-w"):
        train_config_values(tmp_path / "t.yaml", "--train-config", "v1", {"no_w": True})
    assert train_config_values(tmp_path / "t.yaml", "--train-config", "v1", {"no_g": True}) == {"alpha": 0.3}


def test_fingerprint_ignores_the_judge_and_counts_config_contents(tmp_path: Path) -> None:
    base = fingerprint(options(tmp_path), "m", QUERIES, {"train": {}})["fingerprint"]
    assert fingerprint(options(tmp_path, judge_model="j", judge_sample=5), "m", QUERIES,
                       {"train": {}})["fingerprint"] == base
    assert fingerprint(options(tmp_path), "m", QUERIES, {"train": {"lr": 1.0}})["fingerprint"] != base
    assert fingerprint(options(tmp_path), "m", QUERIES[1:], {"train": {}})["fingerprint"] != base
    assert fingerprint(options(tmp_path, iterations=2), "m", QUERIES, {"train": {}})["fingerprint"] != base
    per = [fingerprint(options(tmp_path, iterations=t, queries_per_iteration=2), "m", QUERIES, {})["fingerprint"]
           for t in (2, 3)]
    assert per[0] == per[1]  # with N per iteration, more iterations extend the same run



def test_the_prompts_path_and_runtime_keys_of_the_config_files_do_not_stop_a_resume(tmp_path: Path) -> None:
    """dp, memory and logging keys decide where and how fast a step runs, not what it makes: generate and train
    resume across them, and so does the run (also one an earlier version started, which fingerprinted them)."""
    from ssogen.generate.config import NOT_FINGERPRINTED as GENERATE_NOT_FINGERPRINTED
    from ssogen.iterate.options import GENERATE_RUNTIME_KEYS, TRAIN_RUNTIME_KEYS
    from ssogen.train.config import NOT_FINGERPRINTED as TRAIN_NOT_FINGERPRINTED

    assert GENERATE_RUNTIME_KEYS <= GENERATE_NOT_FINGERPRINTED and TRAIN_RUNTIME_KEYS <= TRAIN_NOT_FINGERPRINTED
    # The train keys that iterate does not set itself are all runtime keys (the fused and stacked kernels were
    # missing: toggling one in --train-config was refused as another run, though train resumes across it).
    assert TRAIN_NOT_FINGERPRINTED - TRAIN_RUNTIME_KEYS <= set(TRAIN_OWNED)
    configs = {"generate": {"temperature": 0.7, "dp": 1}, "train": {"lr": 1e-6, "save_steps": 10}}
    first = fingerprint(options(tmp_path), "m", QUERIES, configs)
    moved = fingerprint(options(tmp_path), "m", QUERIES, {"generate": {"temperature": 0.7, "dp": 2, "kv_cache_gb": 4},
                                                          "train": {"lr": 1e-6, "gradient_checkpointing": True,
                                                                    "fused_norms": False, "fused_rotary": False,
                                                                    "stacked_projections": False}})
    assert moved["fingerprint"] == first["fingerprint"]
    elsewhere = options(tmp_path, prompts=str(tmp_path / "moved.jsonl"))  # the same queries from another path
    assert fingerprint(elsewhere, "m", QUERIES, configs)["fingerprint"] == first["fingerprint"]
    assert fingerprint(options(tmp_path), "m", QUERIES, {"generate": {"temperature": 0.8, "dp": 1},
                                                         "train": {"lr": 1e-6}})["fingerprint"] != first["fingerprint"]
    # A state file written before: its digest covered the whole configs, dp included.
    content = {**first["options"], "configs": configs, "prompts": "queries.jsonl"}
    old = {"fingerprint": hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest(),
           "options": content}
    out = tmp_path / "run"
    RunState(out).open(old, overwrite=False)
    assert RunState(out).open(moved, overwrite=False) is True
    _finish_a_step(out, moved)
    with pytest.raises(UserError, match="changed: configs"):
        RunState(out).open(fingerprint(options(tmp_path), "m", QUERIES, {"generate": {"temperature": 0.8}}),
                           overwrite=False)

def _fp(name: str) -> dict[str, Any]:
    return {"fingerprint": name, "options": {"seed": name}}


def _finish_a_step(out: Path, run_fingerprint: dict[str, Any]) -> None:
    """iter-1/generate recorded as done in the run in `out`: other options would make its data inconsistent (a
    run with nothing done gives way to them)."""
    state = RunState(out)
    state.open(run_fingerprint, overwrite=False)
    step = Step("iter-1/generate", "generate", out / "iter-1" / "data", [], "m")
    state.mark_running(step, [])
    state.mark_done(step, 1.0)


def test_state_refuses_other_runs_and_overwrite_removes_only_its_own_files(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert RunState(out).open(_fp("a"), overwrite=False) is False
    (out / "iter-1" / "data").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    assert RunState(out).open(_fp("a"), overwrite=False) is True
    _finish_a_step(out, _fp("a"))
    with pytest.raises(UserError, match=r"other options \(changed: seed\)"):
        RunState(out).open(_fp("b"), overwrite=False)
    assert RunState(out).open(_fp("b"), overwrite=True) is False
    assert sorted(p.name for p in out.iterdir()) == ["iterate.json", "notes.txt"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.parquet").write_text("")
    with pytest.raises(UserError, match="holds no ssogen iterate run"):
        RunState(foreign).open(_fp("a"), overwrite=True)


def test_a_state_write_cut_short_by_a_kill_is_cleared_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    RunState(out).open(_fp("a"), overwrite=False)
    torn = [out / ".iterate.json.1f2b0e8e.tmp", out / ".report.json.00ff00ff.tmp"]  # kill -9 mid-write
    for path in torn:
        path.write_text("{")
    (out / ".notes.txt.tmp").write_text("mine")  # not a write of iterate's
    assert RunState(out).open(_fp("a"), overwrite=False) is True
    assert not any(path.exists() for path in torn) and (out / ".notes.txt.tmp").exists()
    # Killed during the very first write, before iterate.json existed: the folder is still iterate's.
    first = tmp_path / "first"
    first.mkdir()
    (first / ".iterate.json.abcd1234.tmp").write_text("{")
    assert RunState(first).open(_fp("a"), overwrite=False) is False
    assert sorted(p.name for p in first.iterdir()) == ["iterate.json"]


def test_a_train_config_fixed_before_any_train_step_finished_is_taken(tmp_path: Path) -> None:
    """The first train step failed on a bad value in --train-config: the fixed file used to be refused as another
    run (only --overwrite, which generates all the data again, helped). Now the data steps are kept and the train
    steps start again; once a train step is done, a changed train config is refused as before."""
    out = tmp_path / "run"

    def run_fingerprint(train: dict[str, Any], generate: dict[str, Any] | None = None) -> dict[str, Any]:
        return fingerprint(options(tmp_path), "m", QUERIES, {"generate": generate or {}, "train": train})

    state = RunState(out)
    state.open(run_fingerprint({"scheduler": "foo"}), overwrite=False)
    generate = Step("iter-1/generate", "generate", tmp_path, [], "m")
    train = Step("iter-1/train", "train", tmp_path, [], "m", inputs=["iter-1/generate"])
    state.mark_running(generate, [])
    state.mark_done(generate, 1.0)
    state.mark_running(train, [])  # then it failed
    fixed = RunState(out)
    assert fixed.open(run_fingerprint({"scheduler": "linear"}), overwrite=False, steps=[generate, train]) is True
    assert fixed.restarted == [train.id] and fixed.is_done(generate) and fixed.entry(train) is None
    # The generate config is not the train config; the refusal names the key ("configs" alone said nothing).
    with pytest.raises(UserError, match=r"changed: configs\.generate\.temperature\)"):
        RunState(out).open(run_fingerprint({"scheduler": "linear"}, {"temperature": 0.5}), overwrite=False,
                           steps=[generate, train])
    fixed.mark_running(train, [])
    fixed.mark_done(train, 1.0)
    with pytest.raises(UserError, match=r"changed: configs\.train\.scheduler\)"):
        RunState(out).open(run_fingerprint({"scheduler": "cosine"}), overwrite=False, steps=[generate, train])


def test_redoing_a_step_invalidates_what_was_built_on_it(tmp_path: Path) -> None:
    state = RunState(tmp_path / "run")
    state.open(_fp("a"), overwrite=False)
    generate = Step("iter-1/generate", "generate", tmp_path, [], "m")
    train = Step("iter-1/train", "train", tmp_path, [], "m", inputs=["iter-1/generate"])
    judge = Step("iter-1/judge", "judge", tmp_path, [], "j", settings={"sample": 5}, inputs=["iter-1/generate"])
    for step in (generate, train, judge):
        state.mark_running(step, [])
        assert not state.is_done(step) and state.matches(step)
        state.mark_done(step, 1.0)
    assert all(state.is_done(s) for s in (generate, train, judge))
    assert not state.is_done(Step("iter-1/judge", "judge", tmp_path, [], "j", settings={"sample": 6},
                                  inputs=["iter-1/generate"]))
    state.mark_running(generate, [])
    state.mark_done(generate, 1.0)
    assert state.is_done(generate) and not state.is_done(train) and not state.matches(judge)
    reopened = RunState(tmp_path / "run")
    reopened.open(_fp("a"), overwrite=False)
    assert json.loads((tmp_path / "run" / "iterate.json").read_text())["steps"] == reopened.data["steps"]
    assert reopened.is_done(generate) and not reopened.is_done(train)


def test_score_and_judge_steps_get_the_generate_configs_dp_and_it_reruns_no_finished_step(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text("dp: 2\nray_address: auto\ntp: 1\nkv_cache_gb: null\n")
    o = options(tmp_path, iterations=1, score=True, judge_model="judge-model", generate_config=tmp_path / "g.yaml")
    steps = Planner(o, generate_config_values(o.generate_config), {}, {}).iteration(1, QUERIES).steps
    by_kind = {s.kind: s for s in steps}
    for kind in ("score", "judge"):
        argv = by_kind[kind].argv
        assert flag_value(argv, "--dp") == "2" and flag_value(argv, "--ray-address") == "auto", argv
        assert flag_value(argv, "--tp") == "1" and "--kv-cache-gb" not in argv  # a null is the default
    assert "--dp" not in by_kind["generate"].argv  # generate reads it from its --config
    # Where the engines run is no step setting: steps finished at --dp 1 are reused at --dp 2 (as generate's
    # fingerprint leaves dp out), so a run started before dp was passed on resumes without redoing anything.
    state = RunState(tmp_path / "run")
    state.open(_fp("a"), overwrite=False)
    dp1 = Planner(options(tmp_path, iterations=1, score=True, judge_model="judge-model"), {}, {}, {})
    for step in dp1.iteration(1, QUERIES).steps:
        assert "--dp" not in step.argv
        state.mark_running(step, step.argv)
        state.mark_done(step, 1.0)
    assert all(state.is_done(step) for step in steps)


def test_the_report_counts_the_steps_trained_not_the_last_logged_one(tmp_path: Path) -> None:
    """With --logging-steps 10 a 25-step run logs its loss at steps 10 and 20: the report's `steps` is 25 (from
    metrics.json, or the run's closing log entry for runs that predate it), and the loss says its step."""
    from ssogen.iterate.report import training_summary

    history = [{"loss": 0.7, "step": 10}, {"loss": 0.6, "step": 20}, {"train_loss": 0.65, "step": 25}]
    (tmp_path / "metrics.json").write_text(json.dumps({"log_history": history}))
    assert training_summary(tmp_path) | {"accuracy": None} == {
        "steps": 25, "final_loss": 0.6, "final_loss_step": 20, "accuracy": None, "mean_W": None,
        "source": "last_log"}
    (tmp_path / "metrics.json").write_text(json.dumps({"steps": 26, "log_history": history}))
    assert training_summary(tmp_path)["steps"] == 26  # type: ignore[index]


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_to_iterate_alone_reaches_the_running_step_once(tmp_path: Path, name: str) -> None:
    """`kill` or `kill -INT` of iterate's own process: the step it runs gets the signal passed on and stops (saving
    its work) instead of running on to its end (SIGINT: iterate then said "interrupted" about a step that had
    finished) or for two minutes and then being killed, engines and all. The step runs in a process group of its
    own, so a terminal's Ctrl-C, which reaches only iterate's group now, also comes to it once, from iterate."""
    import signal

    from ssogen.errors import Interrupted
    from ssogen.iterate.run import run_subprocess

    got = tmp_path / "got"
    step = (f"import os, pathlib, signal, sys, time\n"
            f"def stop(signum, _):\n"
            f"    with open({str(got)!r}, 'a') as f: f.write(signal.Signals(signum).name + ' '"
            " + os.environ['SSOGEN_STEP_OF_ITERATE'] + ';')\n"
            "    time.sleep(1); sys.exit(130)\n"
            f"signal.signal(signal.{name}, stop)\n"
            "print('ready', flush=True); time.sleep(60)\n")

    def interrupted(*_: object) -> None:
        raise Interrupted(getattr(signal, name))  # what the CLI's handler raises in iterate

    previous = signal.signal(signal.SIGALRM, interrupted)
    signal.setitimer(signal.ITIMER_REAL, 2.0)  # the step has set its handler by then
    try:
        assert run_subprocess([sys.executable, "-c", step], stdout=open(os.devnull, "w")) == 130
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert got.read_text() == f"{name} 1;"  # once; and the step knows it is one: iterate prints the resume line


def test_an_interrupted_step_of_iterate_leaves_the_resume_line_to_iterate(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The step says what it saved (iterate cannot: a checkpoint, rows) but not how to resume, which is iterate's
    command: its "to resume" line is left out, and its "the same command" (read as the step's own `ssogen train
    ...`) names the iterate command. iterate's lines follow (tests/iterate/test_interrupted_iterate.py)."""
    import typer

    from ssogen.cli.common import user_errors

    @user_errors
    def interrupted() -> None:
        raise UserError("interrupted; the same command resumes from checkpoint-2", exit_code=130)

    for inside_iterate, shown in (("", True), ("1", False)):
        monkeypatch.setenv("SSOGEN_STEP_OF_ITERATE", inside_iterate)
        with pytest.raises(typer.Exit):
            interrupted()
        err = capsys.readouterr().err
        assert "error: interrupted" in err and ("\nto resume: ssogen" in err) == shown, err
        resumes = "the same ssogen iterate command" if inside_iterate else "the same command"
        assert f"error: interrupted; {resumes} resumes from checkpoint-2\n" in err, err



def test_a_step_of_iterate_stopped_by_a_full_disk_names_the_iterate_command(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A full disk's advice ("run the same command again") in a step of iterate read as the step's own command too;
    outside iterate it is unchanged."""
    import errno

    import typer

    from ssogen.cli.common import user_errors

    @user_errors
    def disk_full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/shard.jsonl")

    for inside_iterate, resumes in (("", "the same command"), ("1", "the same ssogen iterate command")):
        monkeypatch.setenv("SSOGEN_STEP_OF_ITERATE", inside_iterate)
        with pytest.raises(typer.Exit):
            disk_full()
        err = capsys.readouterr().err
        assert f"run {resumes} again (finished work is kept)" in err, err

def test_a_second_iterate_on_the_same_folder_is_refused_naming_the_first(tiny_model: Path, tmp_path: Path) -> None:
    """iterate took no lock: two of them in one --out ran the same steps into the same folders."""
    import io
    import signal

    from rich.console import Console

    from ssogen.iterate.run import run_iterate
    from tests.test_lock import _hold

    out = tmp_path / "run"
    holder = _hold(out / ".ssogen" / "lock")  # the first iterate, busy in a step
    try:
        with pytest.raises(UserError, match=rf"^--out {out}: in use by process {holder.pid} ") as info:
            run_iterate(options(tmp_path, model=str(tiny_model)), Console(file=io.StringIO()))
        assert info.value.exit_code == 1
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert sorted(p.name for p in out.iterdir()) == [".ssogen"]  # the second one wrote nothing


def test_the_folders_of_iterate_and_of_generate_refuse_each_other(tmp_path: Path) -> None:
    from ssogen.dataset.shards import ShardStore
    from ssogen.ownership import WORK_DIR, claim

    run = tmp_path / "run"
    with claim(run / WORK_DIR, label="--out run", command="ssogen iterate", kind="iterate"):
        RunState(run).open(_fp("a"), overwrite=False)
    with pytest.raises(UserError, match="holds a run of ssogen iterate, not a dataset folder of ssogen generate"):
        ShardStore(run).check(_fp("a"), overwrite=True)
    data = tmp_path / "data"
    with claim(data / WORK_DIR, label="--out data", command="ssogen generate", kind="dataset"):
        (data / "README.md").write_text("card")
    with pytest.raises(UserError, match="holds a dataset folder of ssogen generate, not a run of ssogen iterate"):
        RunState(data).check(_fp("a"), overwrite=True)
    # --overwrite of an iterate run keeps its lock and marker, as in the other commands' folders.
    RunState(run).open(_fp("b"), overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [".ssogen", "iterate.json"]


@pytest.mark.parametrize("code, status", [(2, "failed"), (130, "interrupted")])
def test_a_step_that_stops_is_recorded_as_stopped(tmp_path: Path, code: int, status: str) -> None:
    """iterate.json kept `running` for a step that had failed or been interrupted."""
    import io

    from rich.console import Console

    from ssogen.iterate.run import run_step

    state = RunState(tmp_path / "run")
    state.open(_fp("a"), overwrite=False)
    step = Step("iter-1/stats", "stats", tmp_path / "data", [sys.executable, "-c", f"raise SystemExit({code})"], "m")
    with pytest.raises(UserError) as info:
        run_step(step, state, Console(file=io.StringIO()))
    assert info.value.exit_code == code
    entry = json.loads(state.path.read_text())["steps"][step.id]
    assert entry["status"] == status and entry["exit_code"] == code and not state.is_done(step)
    assert state.matches(step)  # its inputs and settings stay: the rerun resumes it


def test_a_step_stops_when_iterate_is_killed(tmp_path: Path) -> None:
    """A step runs in a process group of its own: `kill -9` of iterate's group (or a closed terminal) would leave it
    running, holding its GPUs. It gets SIGTERM when iterate dies, and stops as on `kill`."""
    import signal
    import subprocess
    import time

    got = tmp_path / "got"
    step = (f"import pathlib, signal, sys, time\n"
            f"def stop(*_): pathlib.Path({str(got)!r}).write_text('SIGTERM'); sys.exit(130)\n"
            "signal.signal(signal.SIGTERM, stop)\nprint('ready', flush=True)\ntime.sleep(60)\n")
    iterate = ("import sys\nfrom ssogen.iterate.run import run_subprocess\n"
               "run_subprocess([sys.executable, '-c', sys.argv[1]])\n")
    parent = subprocess.Popen([sys.executable, "-c", iterate, step], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
    os.killpg(parent.pid, signal.SIGKILL)  # iterate's group: the step is not in it
    parent.wait()
    deadline = time.monotonic() + 20
    while not got.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got.read_text() == "SIGTERM"


def test_the_loop_runs_three_iterations_by_default_as_the_paper_does(tmp_path: Path) -> None:
    assert options(tmp_path).iterations == 3  # SPEC §2.3: T = 3


def test_iterate_s_notes_go_to_stderr_and_its_report_into_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The README: stdout carries a command's summary, notes go to stderr, and the log holds the summary. iterate
    printed its notes on stdout and its report on the terminal only (its log held the step lines alone)."""
    import io

    from rich.console import Console

    from ssogen.iterate import run as iterate_run
    from ssogen.runlog import command_log

    run = iterate_run.IterateRun(options(tmp_path, iterations=1))
    state = RunState(run.out)
    state.open(run.fingerprint, overwrite=False)
    state.changed, state.restarted = ["configs.train.lr"], ["iter-1/train"]  # a train config fixed after the first
    # train step failed
    report = {"recipe": "v1", "iterations": [{"iteration": 1, "queries": len(run.queries)}],
              "plots": ["plots/lengths.png"]}
    monkeypatch.setattr(iterate_run, "run_step", lambda *args: False)
    monkeypatch.setattr(iterate_run, "write_report", lambda *args: report)
    stdout, log = io.StringIO(), tmp_path / "iterate.log"
    with command_log(log, "iterate", capture_fds=False, import_transformers=False):
        iterate_run._run_iterations(run, state, True, Console(file=stdout, width=200))
    err = capsys.readouterr().err
    assert "note: configs.train.lr changed while no step it decides had finished or saved anything: iter-1/train" in err
    assert "configs.train.lr" not in stdout.getvalue() and "ssogen iterate: report" in stdout.getvalue()
    logged = log.read_text(encoding="utf-8")
    assert "ssogen iterate: report (recipe v1)" in logged and "plots: plots/lengths.png" in logged
    assert "note: configs.train.lr changed" in logged


def test_a_generate_config_naming_its_dtype_another_way_resumes_the_run(tmp_path: Path) -> None:
    """generate resumes a run across `dtype: half` and `float16` (its fingerprint holds the precision); iterate
    refused the same change as `changed: configs.generate.dtype`. A run stored with the other spelling (by an
    earlier version too: stored options are fingerprinted again under this rule) resumes; another precision is
    still refused."""
    out = tmp_path / "run"

    def run_fingerprint(dtype: str) -> dict[str, Any]:
        return fingerprint(options(tmp_path), "m", QUERIES, {"generate": {"dtype": dtype}, "train": {}})

    assert RunState(out).open(run_fingerprint("half"), overwrite=False) is False
    assert RunState(out).open(run_fingerprint("float16"), overwrite=False) is True
    assert RunState(out).open(run_fingerprint("half"), overwrite=False) is True
    _finish_a_step(out, run_fingerprint("half"))
    with pytest.raises(UserError, match=r"changed: configs\.generate\.dtype\)"):
        RunState(out).open(run_fingerprint("bfloat16"), overwrite=False)
