"""The plan of an `ssogen iterate` run: query slices, and per iteration the steps as `ssogen` command lines.

Pure: nothing here runs a model or writes a file, so the plan can be printed (`--dry-run`) and tested alone.

Layout of DIR (iteration t = 1..T, π_0 = --model, π_t = DIR/iter-t/model):

    DIR/iterate.json              options, fingerprint and the finished steps (the resume state)
    DIR/report.json, DIR/plots/   the report across iterations
    DIR/iter-t/prompts.jsonl      the iteration's queries (a disjoint slice of the input)
    DIR/iter-t/data               generate output with π_{t-1} (v2: with the iteration's generator)
    DIR/iter-t/model              π_t: π_{t-1} trained on data, reference π_{t-1}
  v2 only:
    DIR/iter-t/generator-prompts.jsonl, DIR/iter-t/generator-data, DIR/iter-t/generator
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ssogen.errors import NUM_PROCESSES_ENV, UserError
from ssogen.fingerprint import model_record
from ssogen.formatting import counted
from ssogen.iterate.options import IterateOptions
from ssogen.models import resolve_model

STATE_FILE = "iterate.json"
REPORT_FILE = "report.json"
PLOTS_DIR = "plots"
# Everything iterate writes into DIR; --overwrite removes exactly these (and the iter-* folders), nothing else.
LOGS_DIR = "logs"  # iterate's own logs (each step logs into its own folder)
RUN_OUTPUTS = (STATE_FILE, REPORT_FILE, PLOTS_DIR, LOGS_DIR)
# Engine settings of the generate config that score and judge use too (same machine, same GPUs). dp and
# ray_address only spread the requests over engines: per-request seeds (judge: greedy, seeded by pair and order)
# give the scores and answers of --dp 1, so, as for generate, they are no step setting and never re-run a step.
SHARED_ENGINE_KEYS = ("engine", "tp", "dtype", "gpu_memory_utilization", "kv_cache_gb", "dp", "ray_address")

MODEL_DIR = "model"  # DIR/iter-t/model: π_t, the next iteration's starting model

StepKind = Literal["generate", "score", "stats", "train", "judge"]


@dataclass
class Step:
    """One subprocess. `id` names it in the state file; `folder` is what it writes."""

    id: str
    kind: StepKind
    folder: Path
    argv: list[str]
    model: str  # the model the step loads (generate, score, train); the judge model for judge
    reads: Path | None = None  # the data folder it reads (score, stats, train, judge)
    settings: dict[str, Any] = field(default_factory=dict)  # what a finished step must match to be reused
    # Ids of the earlier steps whose results this one uses: a step is reused only while those are unchanged.
    inputs: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # added to the step process's environment


@dataclass
class Iteration:
    """Iteration t: its queries, its steps, and the paths inside its folder DIR/iter-t (named here only)."""

    number: int
    folder: Path
    queries: list[str]
    generator_queries: list[str]
    steps: list[Step]
    start_model: str  # π_{t-1}

    @property
    def prompts(self) -> Path:
        return self.folder / "prompts.jsonl"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def model_out(self) -> Path:  # π_t
        return self.folder / MODEL_DIR

    @property
    def generator_prompts(self) -> Path:
        return self.folder / "generator-prompts.jsonl"

    @property
    def generator_data(self) -> Path:
        return self.folder / "generator-data"

    @property
    def generator(self) -> Path:
        return self.folder / "generator"


def split_queries(queries: list[str], iterations: int, per_iteration: int | None, seed: int) -> list[list[str]]:
    """Disjoint slices: the queries shuffled with the seed, then cut into equal parts (or N each)."""
    order = list(range(len(queries)))
    random.Random(seed).shuffle(order)
    if per_iteration is not None:
        if per_iteration * iterations > len(queries):
            raise UserError(f"--queries-per-iteration {per_iteration} x --iterations {iterations} needs "
                            f"{per_iteration * iterations} queries; the input has {len(queries)}")
        return [[queries[i] for i in order[t * per_iteration:(t + 1) * per_iteration]] for t in range(iterations)]
    if len(queries) < iterations:
        raise UserError(f"--iterations {iterations}: the input has only {counted(len(queries), 'query', 'queries')}")
    bounds = [round(t * len(queries) / iterations) for t in range(iterations + 1)]
    return [[queries[i] for i in order[bounds[t]:bounds[t + 1]]] for t in range(iterations)]


def ssogen_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ssogen", *args]


def train_command(options: IterateOptions, *args: str) -> list[str]:
    """`ssogen train ...`, through `accelerate launch` when --num-processes or --accelerate-config is given."""
    if options.num_processes is None and options.accelerate_config is None:
        return ssogen_command("train", *args)
    # --quiet: a failed train step's own line is the error; accelerate would add its CalledProcessError traceback
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]
    if options.accelerate_config is not None:
        launch += ["--config_file", str(options.accelerate_config.resolve())]
    if options.num_processes is not None:
        launch += ["--num_processes", str(options.num_processes)]
    return [*launch, "-m", "ssogen", "train", *args]


def _engine_flags(generate_values: dict[str, Any], *, with_engine: bool = True) -> list[str]:
    flags: list[str] = []
    for key in SHARED_ENGINE_KEYS:
        if generate_values.get(key) is not None and (with_engine or key != "engine"):  # null: the default
            flags += ["--" + key.replace("_", "-"), str(generate_values[key])]
    return flags


class Planner:
    """Builds the steps of each iteration from the options and the two config files' values."""

    def __init__(self, options: IterateOptions, generate_values: dict[str, Any], train_values: dict[str, Any],
                 generator_train_values: dict[str, Any]) -> None:
        self.options = options
        self.out = options.out.resolve()
        self.generate_values = generate_values
        self.train_values = train_values
        self.generator_train_values = generator_train_values
        self.model_writers: dict[str, str] = {}  # model folder -> id of the train step that wrote it
        # The judge's record (a local judge's fingerprint reads its weight files), made once for all iterations:
        # the judge is one model for the whole run.
        self._judge_record: dict[str, str] | None = None
        # A local folder as an absolute path (the steps' records then hold where it is); a hub id as given.
        local = Path(options.model).expanduser()
        self.start_model = str(local.resolve()) if local.exists() else options.model

    def _generate(self, step_id: str, model: str, prompts: Path, folder: Path) -> Step:
        # The slice is a JSONL file of `prompt` rows: a --config's prompt_field and split were for the input.
        argv = ssogen_command("generate", "--model", model, "--prompts", str(prompts), "--prompt-field", "prompt",
                              "--split", "train", "--out", str(folder))
        if self.options.generate_config is not None:
            argv += ["--config", str(self.options.generate_config.resolve())]
        return Step(step_id, "generate", folder, argv, model)

    def _data_steps(self, prefix: str, model: str, prompts: Path, folder: Path, *, filtered: bool,
                    score_model: str | None = None) -> list[Step]:
        """generate, optionally score (and filter), then stats: the data folder made ready for the report.
        `score_model` (default: the generating model) is the model whose log-probs the scores are."""
        steps = [self._generate(f"{prefix}generate", model, prompts, folder)]
        if self.options.scores:
            score_model = score_model or model
            argv = ssogen_command("score", str(folder), "--model", score_model,
                                  *_engine_flags(self.generate_values))
            likelihood = filtered and self.options.filter == "likelihood"
            if likelihood:
                argv += ["--filter", "likelihood"]
            steps.append(Step(f"{prefix}score", "score", folder, argv, score_model, folder, {"filter": likelihood}))
        steps.append(Step(f"{prefix}stats", "stats", folder, ssogen_command("stats", str(folder)), model, folder))
        return steps

    def _train(self, step_id: str, data: Path, model: str, folder: Path, config: Path | None,
               values: dict[str, Any], objective_flags: list[str]) -> Step:
        args = ["--data", str(data), "--model", model, "--out", str(folder)]
        if config is not None:
            args += ["--config", str(config.resolve())]
        if "final_eval" not in values:  # reward accuracies of P1/P2/P3 on all rows, for the report
            args.append("--final-eval")
        args += objective_flags
        n = self.options.num_processes  # train checks that accelerate started that many processes
        return Step(step_id, "train", folder, train_command(self.options, *args), model, data,
                    env={NUM_PROCESSES_ENV: str(n)} if n is not None else {})

    def _objective_flags(self) -> list[str]:
        o = self.options
        return ([f"--objective={o.objective}"] if o.objective else []) + (["--no-w"] if o.no_w else []) \
            + (["--no-g"] if o.no_g else [])

    def _judge(self, step_id: str, data: Path) -> Step:
        o = self.options
        assert o.judge_model is not None
        judge_ref = resolve_model(o.judge_model, flag="--judge-model")
        # A local judge by its absolute path, as the starting model: the commands hold no path relative to here.
        judge_model = str(Path(judge_ref.path).resolve()) if judge_ref.local else judge_ref.name
        argv = ssogen_command("judge", str(data), "--judge-model", judge_model, "--sample", str(o.judge_sample),
                              "--seed", str(o.seed), *_engine_flags(self.generate_values))
        # As judge.json records the judge: a local one by its folder name and fingerprint (a changed judge re-runs).
        if self._judge_record is None:
            self._judge_record = {f"judge_{key}": value for key, value in model_record(judge_ref).items()}
        judge = self._judge_record
        return Step(step_id, "judge", data, argv, judge_model, data,
                    {**judge, "sample": o.judge_sample, "seed": o.seed})

    def iteration(self, number: int, queries: list[str]) -> Iteration:
        o = self.options
        start = self.start_model if number == 1 else str(self.out / f"iter-{number - 1}" / MODEL_DIR)
        generator_queries: list[str] = []
        if o.recipe == "v2":
            generator_queries = queries[:o.generator_queries] if o.generator_queries else list(queries)
        iteration = Iteration(number, self.out / f"iter-{number}", queries, generator_queries, [], start)
        data, model_out, prompts = iteration.data, iteration.model_out, iteration.prompts
        steps: list[Step] = []
        if o.recipe == "v2":
            gen_data, generator = iteration.generator_data, iteration.generator
            steps += self._data_steps("generator-", start, iteration.generator_prompts, gen_data, filtered=True)
            config = o.generator_train_config or o.train_config
            values = self.generator_train_values if o.generator_train_config else self.train_values
            steps.append(self._train("generator-train", gen_data, start, generator, config, values,
                                     ["--objective=v2"]))
            # The generator answers every query of the slice under the same library and generate options; scores
            # of this data measure on-policy-ness against the policy that learns from it, not the generator.
            steps += self._data_steps("", str(generator), prompts, data, filtered=False, score_model=start)
            # The policy learns the plain pair L(x, y+, y-); DPO as in the paper's code unless the file names a loss.
            policy_flags = ["--objective=v1", "--no-w", "--no-g"]
            policy_flags += [] if "loss_type" in self.train_values else ["--loss=dpo"]
            steps.append(self._train("train", data, start, model_out, o.train_config, self.train_values,
                                     policy_flags))
        else:
            steps += self._data_steps("", start, prompts, data, filtered=True)
            steps.append(self._train("train", data, start, model_out, o.train_config, self.train_values,
                                     self._objective_flags()))
        if o.judge_model is not None:
            steps.append(self._judge("judge", data))
        for step in steps:
            step.id = f"iter-{number}/{step.id}"
        self._link(steps)
        iteration.steps = steps
        return iteration

    def _link(self, steps: list[Step]) -> None:
        """Each step's inputs: the steps that wrote the data folder it reads and the one that trained its model."""
        data_writers: dict[Path, list[str]] = {}
        for step in steps:
            inputs = list(data_writers.get(step.reads, [])) if step.reads is not None else []
            if step.kind in ("generate", "score", "train") and step.model in self.model_writers:
                inputs.append(self.model_writers[step.model])
            step.inputs = inputs
            if step.kind in ("generate", "score"):
                data_writers.setdefault(step.folder, []).append(step.id)
            if step.kind == "train":
                self.model_writers[str(step.folder)] = step.id
