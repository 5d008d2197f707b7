"""The options of `ssogen iterate`, the checks of the two config files it passes on, and the run's fingerprint.

The generate and train config files are handed unchanged to each step (`--config FILE`); iterate only decides the
model, the queries and the output folder of every step, so the files must leave those to it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from ssogen.engine.options import canonical_dtype
from ssogen.errors import UserError
from ssogen.fingerprint import json_sha256
from ssogen.generate.config import RUNTIME_KEYS as GENERATE_RUNTIME_KEYS  # generate's own list
from ssogen.io import input_file_problem
from ssogen.settings import command_settings, option
from ssogen.train.config import NOT_FINGERPRINTED as TRAIN_NOT_FINGERPRINTED

# Keys a config file may not set: iterate chooses them per step.
GENERATE_OWNED = {"model": "--model", "out": "--out", "prompts": "--prompts", "limit": "--queries-per-iteration"}
TRAIN_OWNED = {"data": "the iteration's data folder", "model": "the previous iteration's model",
               "out": "the iteration's model folder", "resume_from_checkpoint": "iterate's own resume",
               "overwrite": "iterate's own --overwrite"}
# In the v2 recipe each training step has a fixed objective; these keys would contradict it.
V2_FIXED = ("objective", "no_w", "no_g", "w_detach", "w_placement", "alpha", "lam")
# Options that only describe or measure a run: changing them between resumes is allowed.
NOT_FINGERPRINTED = frozenset({"out", "overwrite", "judge_model", "judge_sample", "dry_run"})


LOOP = "Loop"
STEPS = "Steps (passed to generate, score and train)"
V2 = "Recipe v2 (generator, then plain pair loss)"
JUDGE = "Judge"


@command_settings("ssogen iterate")
class IterateOptions(BaseModel):
    """Every option of `ssogen iterate`; each field is the whole definition of its flag (`ssogen.settings`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf or nan is no setting

    model: str = option(..., "Starting policy π_0: model folder or hub id.", panel=LOOP)
    out: Path = option(..., "Run folder: iter-1/, iter-2/, ..., report.json, plots/.", panel=LOOP,
                        metavar="FOLDER")
    prompts: str | None = option(None, "Queries (any input generate reads).", panel=LOOP,
                                 default_text="the bundled demo queries", min_length=1)
    iterations: int = option(3, "Iterations T.", ge=1, flags=("--iterations", "-T"), panel=LOOP)
    queries_per_iteration: int | None = option(
        None, "Queries per iteration.", ge=1, panel=LOOP,
        default_text="all queries split into T disjoint seeded slices")
    seed: int = option(0, "Seed of the query slices and the judge's sample.", ge=0, lt=2**32, panel=LOOP)
    generate_config: Path | None = option(None, "YAML options for every generate step (as `generate --config`).",
                                          panel=STEPS, metavar="FILE")
    train_config: Path | None = option(None, "YAML options for every train step (as `train --config`).",
                                       panel=STEPS, metavar="FILE")
    filter: Literal["none", "likelihood"] = option(
        "none", "likelihood: score each iteration's data with π_{t-1} and apply the likelihood filter before "
        "training; none: no filter.", panel=STEPS)
    score: bool = option(False, "Score every data folder (on-policy-ness in the report) without filtering.",
                         flags=("--score",), panel=STEPS)
    num_processes: int | None = option(None, "Train through `accelerate launch --num_processes N`.", ge=1,
                                       panel=STEPS)
    accelerate_config: Path | None = option(
        None, "Train through `accelerate launch --config_file FILE` (e.g. configs/accelerate_zero3.yaml).",
        panel=STEPS, metavar="FILE")
    objective: Literal["v1", "v2"] | None = option(None, "Passed to train: v1 or v2.", panel=STEPS,
                                                   default_text="train's")
    no_w: bool = option(False, "Passed to train: ablation W = 1.", flags=("--no-w",), panel=STEPS)
    no_g: bool = option(False, "Passed to train: ablation without G.", flags=("--no-g",), panel=STEPS)
    recipe: Literal["v1", "v2"] = option(
        "v1", "v1: train the policy with SSO on its own data; v2: train a generator (v2 objective), regenerate "
        "with it, train the policy with the plain pair loss.", panel=V2)
    generator_queries: int | None = option(None, "v2: queries of each slice the generator is trained on.", ge=1,
                                           panel=V2, default_text="all")
    generator_train_config: Path | None = option(
        None, "v2: YAML options for the generator's training.", panel=V2, default_text="--train-config",
        metavar="FILE")
    judge_model: str | None = option(None, "Run `ssogen judge` with this model on each iteration's data.",
                                     panel=JUDGE)
    judge_sample: int = option(200, "Pairs the judge compares per iteration.", ge=1, panel=JUDGE)
    overwrite: bool = option(False, "Replace a run of other options in --out.", flags=("--overwrite",))

    @model_validator(mode="after")
    def _compatible(self) -> IterateOptions:
        if self.recipe == "v2":
            for name, flag in (("objective", "--objective"), ("no_w", "--no-w"), ("no_g", "--no-g")):
                if getattr(self, name):
                    raise ValueError(f"{flag} cannot be used with --recipe v2 (the recipe fixes both objectives: "
                                     "v2 for the generator, plain pair loss for the policy)")
        else:
            if self.generator_queries is not None:
                raise ValueError("--generator-queries needs --recipe v2")
            if self.generator_train_config is not None:
                raise ValueError("--generator-train-config needs --recipe v2")
        if self.accelerate_config is not None:
            check_input_file(self.accelerate_config, "--accelerate-config", error=ValueError)
        if self.objective == "v2" and (self.no_w or self.no_g):
            raise ValueError("--no-w / --no-g cannot be used with --objective v2 (v2 has no W or G term)")
        return self

    @property
    def scores(self) -> bool:
        """Whether each data folder is scored (a likelihood filter needs the scores)."""
        return self.score or self.filter == "likelihood"


def parse_options(values: dict[str, Any]) -> IterateOptions:
    """Validate the command line (None = not given); the first problem becomes one line naming the flag."""
    from ssogen.settings_resolution import resolve_settings

    return resolve_settings(IterateOptions, values, accepts_config=False)


def check_input_file(path: Path, flag: str, error: type[Exception] = UserError) -> None:
    """A config file iterate reads, and hands to its steps, named by its flag (iterate takes four of them)."""
    if (problem := input_file_problem(path, "YAML file")) is not None:
        raise error(f"{flag} {path}: {problem}")


def generate_config_values(path: Path | None) -> dict[str, Any]:
    """The generate config file's options (validated as `generate` would), refusing the keys iterate owns."""
    if path is None:
        return {}
    from ssogen.generate.config import RunConfig, resolve_config
    from ssogen.settings_resolution import read_settings_file

    check_input_file(path, "--generate-config")
    values = read_settings_file(RunConfig, path)
    for key, flag in GENERATE_OWNED.items():
        if key in values:
            raise UserError(f"--generate-config {path}: {key!r} is set by iterate for every step (use {flag} of "
                            "ssogen iterate instead)")
    resolve_config({"model": "-", "out": "-"}, path)  # every other value must be valid now, not after hours
    return values


def train_config_values(path: Path | None, flag: str, recipe: str, objective: dict[str, Any] | None = None
                        ) -> dict[str, Any]:
    """The train config file's options (validated as `train` would, with `objective`: the objective flags iterate
    passes to every train step of the v1 recipe), refusing the keys iterate owns."""
    if path is None:
        return {}
    from ssogen.settings import flag_name
    from ssogen.settings_resolution import read_settings_file
    from ssogen.train.config import TrainConfig, build_config

    check_input_file(path, flag)
    values = read_settings_file(TrainConfig, path)
    for key, owner in TRAIN_OWNED.items():
        if key in values:
            raise UserError(f"{flag} {path}: {key!r} is set by iterate for every step ({owner})")
    if recipe == "v2":
        fixed = [key for key in V2_FIXED if key in values]
        if fixed:
            named = ", ".join(flag_name(TrainConfig, key) for key in fixed)  # `lambda: 0.1` sets lam
            raise UserError(f"{flag} {path}: {named} cannot be set with --recipe v2 (the recipe trains the "
                            "generator with --objective v2 and the policy with the plain pair loss)")
    if values.get("lora"):
        raise UserError(f"{flag} {path}: lora is not supported by iterate (the next iteration generates with the "
                        "trained model, which needs full weights, not an adapter)")
    config = build_config({"data": Path("-"), "model": "-", "out": Path("-"), **(objective or {})}, path)
    from ssogen.train.integrations import check_deepspeed
    from ssogen.train.training_args import training_arguments

    check_deepspeed(config)
    training_arguments(config)  # what transformers refuses (optim, scheduler) now, not after the data steps (hours)
    return values


# Keys of the two config files that decide where and how fast a step runs, or what it logs, not what it makes: a
# step resumes across them (generate and train leave them out of their own fingerprints), so the run does too.
TRAIN_RUNTIME_KEYS = TRAIN_NOT_FINGERPRINTED - set(TRAIN_OWNED)  # train's own list, less what iterate sets
_RUNTIME_KEYS = {"generate": GENERATE_RUNTIME_KEYS, "train": TRAIN_RUNTIME_KEYS, "generator_train": TRAIN_RUNTIME_KEYS}


def fingerprint(options: IterateOptions, start_model: str, queries: list[str], configs: dict[str, dict[str, Any]]
                ) -> dict[str, Any]:
    """What decides the data and models of every step. With --queries-per-iteration the slices do not depend on
    --iterations, so a finished run may be extended by more iterations."""
    content = {k: v for k, v in options.model_dump(mode="json").items() if k not in NOT_FINGERPRINTED}
    content["model"] = start_model  # a local folder as an absolute path
    for name in ("generate_config", "train_config", "generator_train_config", "accelerate_config"):
        content.pop(name)  # the files' contents count, not where they lie
    if options.queries_per_iteration is not None:
        content.pop("iterations")
    content["queries_sha256"] = hashlib.sha256("\x00".join(queries).encode()).hexdigest()
    content["configs"] = configs
    if options.accelerate_config is not None:
        content["accelerate_config_sha256"] = hashlib.sha256(options.accelerate_config.read_bytes()).hexdigest()
    return fingerprint_of(content)


def fingerprint_of(content: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint of fingerprinted options (also of those stored by an earlier version, which kept the runtime
    keys of the config files: the same run then resumes)."""
    content = {**content}
    content.pop("prompts", None)  # the queries count (queries_sha256), not where they lie
    if isinstance(content.get("configs"), dict):
        content["configs"] = {name: ({k: _one_spelling(k, v) for k, v in values.items()
                                      if k not in _RUNTIME_KEYS.get(name, ())}
                                     if isinstance(values, dict) else values)
                              for name, values in content["configs"].items()}
    return {"fingerprint": json_sha256(content, default=str), "options": content}


def _one_spelling(key: str, value: Any) -> Any:
    """A generate config's `dtype: half` is float16 (`float`: float32), as generate's own fingerprint has it: the
    other spelling resumes the run. `auto` stays: what it resolves to may differ between iterations' models."""
    return canonical_dtype(value) if key == "dtype" and isinstance(value, str) else value
