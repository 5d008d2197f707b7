"""The options of `ssogen iterate`, the checks of the two config files it passes on, and the run's fingerprint.

The generate and train config files are handed unchanged to each step (`--config FILE`); iterate only decides the
model, the queries and the output folder of every step, so the files must leave those to it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ssogen.errors import UserError

# Keys a config file may not set: iterate chooses them per step.
GENERATE_OWNED = {"model": "--model", "out": "--out", "prompts": "--prompts", "limit": "--queries-per-iteration"}
TRAIN_OWNED = {"data": "the iteration's data folder", "model": "the previous iteration's model",
               "out": "the iteration's model folder", "resume_from_checkpoint": "iterate's own resume"}
# In the v2 recipe each training step has a fixed objective; these keys would contradict it.
V2_FIXED = ("objective", "no_w", "no_g", "w_detach", "w_placement")
# Options that only describe or measure a run: changing them between resumes is allowed.
NOT_FINGERPRINTED = frozenset({"out", "overwrite", "judge_model", "judge_sample", "dry_run"})


class IterateOptions(BaseModel):
    """Every option of `ssogen iterate` (names as the long flags with '_' for '-')."""

    model_config = ConfigDict(extra="forbid")

    model: str
    out: Path
    prompts: str | None = Field(None, description="queries; None = the bundled demo queries")
    iterations: int = Field(3, ge=1)
    queries_per_iteration: int | None = Field(None, ge=1)
    seed: int = Field(0, description="seed of the query slices and the judge's sample")
    generate_config: Path | None = None
    train_config: Path | None = None
    generator_train_config: Path | None = None
    filter: Literal["none", "likelihood"] = "none"
    score: bool = False
    num_processes: int | None = Field(None, ge=1)
    accelerate_config: Path | None = None
    objective: Literal["v1", "v2"] | None = None
    no_w: bool = False
    no_g: bool = False
    recipe: Literal["v1", "v2"] = "v1"
    generator_queries: int | None = Field(None, ge=1)
    judge_model: str | None = None
    judge_sample: int = Field(200, ge=1)
    overwrite: bool = False

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
        if self.accelerate_config is not None and not self.accelerate_config.is_file():
            raise ValueError(f"{self.accelerate_config}: no such file")
        if self.objective == "v2" and (self.no_w or self.no_g):
            raise ValueError("--no-w / --no-g cannot be used with --objective v2 (v2 has no W or G term)")
        return self

    @property
    def scores(self) -> bool:
        """Whether each data folder is scored (a likelihood filter needs the scores)."""
        return self.score or self.filter == "likelihood"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_options(values: dict[str, Any]) -> IterateOptions:
    """Validate the command line; the first problem becomes one line naming the flag."""
    from pydantic import ValidationError

    try:
        return IterateOptions.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        where = f"{_flag(str(first['loc'][0]))}: " if first["loc"] else ""
        raise UserError(f"ssogen iterate: {where}{message}") from None


def generate_config_values(path: Path | None) -> dict[str, Any]:
    """The generate config file's options (validated as `generate` would), refusing the keys iterate owns."""
    if path is None:
        return {}
    from ssogen.generate.config import RunConfig, resolve_config
    from ssogen.settings import read_settings_file

    values = read_settings_file(RunConfig, path)
    for key, flag in GENERATE_OWNED.items():
        if key in values:
            raise UserError(f"--generate-config {path}: {key!r} is set by iterate for every step (use {flag} of "
                            "ssogen iterate instead)")
    resolve_config({"model": "-", "out": "-"}, path)  # every other value must be valid now, not after hours
    return values


def train_config_values(path: Path | None, flag: str, recipe: str) -> dict[str, Any]:
    """The train config file's options (validated as `train` would), refusing the keys iterate owns."""
    if path is None:
        return {}
    from ssogen.settings import read_settings_file
    from ssogen.train.config import TrainConfig, build_config

    values = read_settings_file(TrainConfig, path)
    for key, owner in TRAIN_OWNED.items():
        if key in values:
            raise UserError(f"{flag} {path}: {key!r} is set by iterate for every step ({owner})")
    if recipe == "v2":
        fixed = [key for key in V2_FIXED if key in values]
        if fixed:
            raise UserError(f"{flag} {path}: {fixed[0]!r} cannot be set with --recipe v2 (the recipe trains the "
                            "generator with --objective v2 and the policy with the plain pair loss)")
    if values.get("lora"):
        raise UserError(f"{flag} {path}: lora is not supported by iterate (the next iteration generates with the "
                        "trained model, which needs full weights, not an adapter)")
    build_config({"data": Path("-"), "model": "-", "out": Path("-")}, path)
    return values


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
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    return {"fingerprint": digest, "options": content}
