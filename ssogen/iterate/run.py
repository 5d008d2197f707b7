"""Run an `ssogen iterate` plan: each step a subprocess of the same `ssogen` command, resumable step by step.

Separate processes because vLLM does not reliably give GPU memory back inside one process, and
because each command already knows how to resume itself: the same command line again continues a killed generate
from its shards and a killed train from its newest complete checkpoint."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from rich.console import Console

from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.shards import ShardStore
from ssogen.errors import STEP_OF_ITERATE_ENV, STOPPED, Interrupted, UserError
from ssogen.fingerprint import check_model_available
from ssogen.formatting import counted
from ssogen.io import read_json_object, write_text_atomic
from ssogen.iterate.options import (
    IterateOptions,
    fingerprint,
    generate_config_values,
    train_config_values,
)
from ssogen.iterate.plan import Iteration, Planner, Step, split_queries
from ssogen.iterate.report import print_report, write_report
from ssogen.iterate.state import RunState
from ssogen.models import resolve_model
from ssogen.ownership import WORK_DIR, claim
from ssogen.runlog import terminal
from ssogen.train.output import TrainOutput

logger = logging.getLogger("ssogen.iterate")
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): the signal a process gets when its parent dies


def finished(step: Step) -> bool:
    """Whether the step's own output says it ran to the end (the state file says from which inputs)."""
    if step.kind == "generate":
        manifest = read_json_object(OutputFolder(step.folder).manifest) or {}
        return manifest.get("status") == "complete"
    if step.kind == "score":
        score = (read_json_object(OutputFolder(step.folder).manifest) or {}).get("score")
        return isinstance(score, dict) and (score.get("filter") is not None) == step.settings["filter"]
    if step.kind == "stats":
        return OutputFolder(step.folder).stats.exists()
    if step.kind == "train":
        return TrainOutput(step.folder).finished()
    judged = OutputFolder(step.folder).read_judge() or {}
    # Iterate judges the dpo config (the report compares it across iterations): a judge.json of another config,
    # from a `ssogen judge --config` run by hand on the folder, is judged again.
    return {k: judged.get(k) for k in step.settings} == step.settings and judged.get("config", "dpo") == "dpo"


def holds_work(step: Step) -> bool:
    """Whether the step's folder holds what other options would throw away: its result, or the rows (generate)
    or checkpoints (train) it saved. generate and train themselves let a run with nothing saved give way."""
    if not step.folder.exists():
        return False
    if finished(step):
        return True
    if step.kind == "generate":
        return ShardStore(step.folder).holds_finished_work()
    return step.kind == "train" and bool(TrainOutput(step.folder).checkpoints())


def _descriptor(stream: Any) -> Any:
    """A stream a child process can inherit (it has a file descriptor), else None (inherit ours)."""
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return stream


def run_subprocess(argv: list[str], stdout: Any = None, stderr: Any = None,
                   env: dict[str, str] | None = None) -> int:
    """Run a step with the terminal attached (`stdout` / `stderr`: the terminal while iterate's own log holds the
    process's descriptors; the step writes its own log). The step runs in a process group of its own, so a signal
    meant for the run reaches it exactly once, from here, whether it was Ctrl-C (the terminal's group) or a `kill
    -INT` of iterate alone (which the step never saw): SIGINT goes to the step's whole group, as a terminal's would,
    SIGTERM to the step (which stops its engines). Then give it time to save. `env`: added to its environment."""
    for stream in (stdout, stderr):
        if stream is not None:
            stream.flush()
    process = subprocess.Popen(argv, stdout=_descriptor(stdout), stderr=_descriptor(stderr),
                               env={**os.environ, **(env or {}), STEP_OF_ITERATE_ENV: "1"}, start_new_session=True,
                               preexec_fn=_stop_with_parent(os.getpid()))
    try:
        return process.wait()
    except STOPPED as exc:
        if isinstance(exc, Interrupted) and exc.signum == signal.SIGTERM:
            process.terminate()
        else:
            _signal_group(process, signal.SIGINT)
        try:
            process.wait(timeout=120)
        except (*STOPPED, subprocess.TimeoutExpired):  # a second Ctrl-C, or a step that hangs
            _signal_group(process, signal.SIGKILL)
            process.wait()
        return 130


def _stop_with_parent(parent: int) -> Callable[[], None] | None:
    """For the step's child process before it runs the step: SIGTERM when iterate dies, however it dies (Linux:
    PR_SET_PDEATHSIG), so a step in its own process group does not outlive a killed iterate (`kill -9` of the
    group, a closed terminal) but stops as on `kill`, saving its work. None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # iterate died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def _signal_group(process: subprocess.Popen[Any], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(process.pid, signum)


class IterateRun:
    """The resolved run: options, config values, slices and the plan of every iteration."""

    def __init__(self, options: IterateOptions) -> None:
        from ssogen.generate.inputs import read_prompts

        self.options = options
        self.out = options.out.resolve()
        # A mistyped --model fails now, not in the first step after --out was taken (it then held other options).
        self.model = resolve_model(options.model)
        self.generate_values = generate_config_values(options.generate_config)
        objective = {"objective": options.objective, "no_w": options.no_w or None, "no_g": options.no_g or None}
        self.train_values = train_config_values(options.train_config, "--train-config", options.recipe, objective)
        self.generator_train_values = train_config_values(options.generator_train_config,
                                                          "--generator-train-config", options.recipe)
        read = read_prompts(options.prompts, prompt_field=self.generate_values.get("prompt_field", "prompt"),
                            split=self.generate_values.get("split", "train"))
        self.queries = [row.text for row in read.rows]
        self.source = read.source
        slices = split_queries(self.queries, options.iterations, options.queries_per_iteration, options.seed)
        if options.generator_queries is not None and options.generator_queries > min(len(s) for s in slices):
            raise UserError(f"--generator-queries {options.generator_queries}: an iteration has only "
                            f"{counted(min(len(s) for s in slices), 'query', 'queries')}")
        planner = Planner(options, self.generate_values, self.train_values, self.generator_train_values)
        self.iterations = [planner.iteration(t + 1, queries) for t, queries in enumerate(slices)]
        self.fingerprint = fingerprint(options, planner.start_model, self.queries, {
            "generate": self.generate_values, "train": self.train_values,
            "generator_train": self.generator_train_values})


def write_prompts(path: Path, queries: list[str]) -> None:
    """The slice as JSONL with a `prompt` field, written whole then renamed (generate reads it by position)."""
    text = "".join(json.dumps({"prompt": q}, ensure_ascii=False) + "\n" for q in queries)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    write_text_atomic(path, text)


def run_step(step: Step, state: RunState, console: Console) -> bool:
    """Run one step unless it is done; True when it ran now."""
    if state.matches(step) and finished(step):
        if not state.is_done(step):  # finished, but the run was stopped before it could record that
            state.mark_done(step, 0.0)
        console.print(f"[green]done[/] {step.id} (kept from an earlier invocation)", highlight=False)
        logger.info("%s: done in an earlier invocation", step.id)
        return False
    argv = list(step.argv)
    if step.kind in ("generate", "train") and step.folder.exists() and not state.matches(step):
        # Made from other inputs (an earlier step was redone): nothing in it can be reused.
        shutil.rmtree(step.folder)
    state.mark_running(step, argv)
    console.rule(f"[bold]{step.id}", align="left")
    console.print("$ " + shlex.join(argv), markup=False, highlight=False, soft_wrap=True)
    logger.info("%s: %s (its own log is in %s/logs)", step.id, shlex.join(argv), step.folder)
    started = time.monotonic()
    code = run_subprocess(argv, *terminal(), env=step.env)
    if code == 130 and finished(step):  # the signal came as the step ended: its result is whole, as a rerun sees
        state.mark_done(step, time.monotonic() - started)
        logger.info("%s: done (the interrupt came as it finished)", step.id)
        raise UserError(f"interrupted as {step.id} finished (recorded as done); run the same command again to go "
                        "on", exit_code=130)
    if code != 0:
        state.mark_stopped(step, code)
    if code == 130:
        raise UserError(f"interrupted during {step.id}; finished work is saved: run the same command again to "
                        "resume", exit_code=130)
    if code != 0:
        raise UserError(f"{step.id} failed (exit {code}; its error is above); finished steps are kept: fix the "
                        "cause and run the same command again", exit_code=code if code in (1, 2) else 1)
    if not finished(step):
        raise UserError(f"{step.id} exited 0 but {step.folder} holds no finished result", exit_code=1)
    seconds = time.monotonic() - started
    state.mark_done(step, seconds)
    logger.info("%s: done in %.1f s", step.id, seconds)
    return True


def print_plan(run: IterateRun, console: Console, kept: Collection[str] = ()) -> None:
    """The slices and every step's command; `kept`: the ids of the steps a run now would keep (done already)."""
    o = run.options
    console.print(f"{counted(len(run.queries), 'query', 'queries')} from {run.source}; "
                  f"{counted(len(run.iterations), 'iteration')} "
                  f"(recipe {o.recipe}) into {run.out}", highlight=False, markup=False)
    for iteration in run.iterations:
        extra = f", generator on {len(iteration.generator_queries)}" if o.recipe == "v2" else ""
        console.rule(f"iter-{iteration.number}: {counted(len(iteration.queries), 'query', 'queries')}{extra}",
                     align="left")
        for step in iteration.steps:
            done = " (done: kept)" if step.id in kept else ""
            console.print(f"{step.id}{done}: {shlex.join(step.argv)}", markup=False, highlight=False,
                          soft_wrap=True)


def _note(text: str) -> None:
    """A note for the user goes to stderr, as every command's notes do (the terminal's while iterate's log holds
    descriptor 2), and into the log once it is open; stdout carries the steps and the report."""
    stream = terminal()[1] or sys.stderr
    stream.write(text + "\n")
    stream.flush()
    logger.info("%s", text)


def run_iterate(options: IterateOptions, console: Console, *, dry_run: bool = False,
                log: Callable[[Path], AbstractContextManager[Any]] | None = None) -> None:
    """Plan, then (unless `dry_run`) claim --out (its lock, for the whole run: one iterate per folder) and run
    every step not done yet; `log(out)` is entered once the folder is claimed (the CLI writes iterate's own log
    there)."""
    run = IterateRun(options)
    state = RunState(run.out)
    steps = [step for iteration in run.iterations for step in iteration.steps]
    if dry_run:  # an --out the run would refuse is refused here too
        if state.check(run.fingerprint, overwrite=options.overwrite, steps=steps, saved=holds_work) != "start":
            state.data = state.stored()  # read only; the steps that other options start again are not kept
            state.data["steps"] = {k: v for k, v in (state.data.get("steps") or {}).items() if k not in state.redone}
        print_plan(run, console, {s.id for s in steps if state.data and state.is_done(s) and finished(s)})
        return
    check_model_available(run.model)  # a hub id: unknown, or the hub unreachable, is one line now
    # A refusal comes before the lock's files are written.
    state.check(run.fingerprint, overwrite=options.overwrite, steps=steps, saved=holds_work)
    with claim(run.out / WORK_DIR, label=f"--out {run.out}", command="ssogen iterate", kind="iterate") as left:
        if left is not None:
            _note(left.takeover_note())
        resumed = state.open(run.fingerprint, overwrite=options.overwrite, steps=steps, saved=holds_work)
        with log(run.out) if log is not None else contextlib.nullcontext():
            _run_iterations(run, state, resumed, console)


def _run_iterations(run: IterateRun, state: RunState, resumed: bool, console: Console) -> None:
    options = run.options
    console.print(f"{'resuming' if resumed else 'starting'} {counted(len(run.iterations), 'iteration')} in "
                  f"{run.out}", highlight=False, markup=False)
    if state.restarted:
        _note(f"note: {', '.join(state.changed)} changed while no step it decides had finished or saved anything: "
              f"{', '.join(state.restarted)} start{'s' if len(state.restarted) == 1 else ''} again with the new "
              "options (the finished steps before them are kept)")
    done: list[Iteration] = []
    try:
        for iteration in run.iterations:
            write_prompts(iteration.prompts, iteration.queries)
            if options.recipe == "v2":
                write_prompts(iteration.generator_prompts, iteration.generator_queries)
            for step in iteration.steps:
                run_step(step, state, console)
            done.append(iteration)
            report = write_report(run.out, done, options)
            print_report(report, console)
    except STOPPED:  # between two steps (inside one, run_step reports it)
        raise UserError(f"interrupted; finished steps are recorded in {state.path}: run the same command again to "
                        "resume", exit_code=130) from None
