"""CLI command of the online loop (`ssogen iterate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ssogen.cli.common import console, user_errors

_LOOP = "Loop"
_STEPS = "Steps (passed to generate, score and train)"
_V2 = "Recipe v2 (generator, then plain pair loss)"
_JUDGE = "Judge"


@user_errors
def iterate(
    model: Annotated[str, typer.Option(help="Starting policy π_0: model folder or hub id.", rich_help_panel=_LOOP)],
    out: Annotated[Path, typer.Option(help="Run folder: iter-1/, iter-2/, ..., report.json, plots/.",
                                      rich_help_panel=_LOOP)],
    prompts: Annotated[str | None, typer.Option(
        help="Queries (any input generate reads; default the bundled demo queries).", rich_help_panel=_LOOP)]
    = None,
    iterations: Annotated[int, typer.Option("--iterations", "-T", min=1, help="Iterations T.",
                                            rich_help_panel=_LOOP)] = 3,
    queries_per_iteration: Annotated[int | None, typer.Option(
        min=1, help="Queries per iteration (default: all queries split into T disjoint seeded slices).",
        rich_help_panel=_LOOP)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the query slices and the judge's sample.",
                                      rich_help_panel=_LOOP)] = 0,
    generate_config: Annotated[Path | None, typer.Option(
        help="YAML options for every generate step (as `generate --config`).", rich_help_panel=_STEPS)] = None,
    train_config: Annotated[Path | None, typer.Option(
        help="YAML options for every train step (as `train --config`).", rich_help_panel=_STEPS)] = None,
    filter_name: Annotated[str, typer.Option(
        "--filter", help="likelihood: score each iteration's data with π_{t-1} and apply the likelihood filter "
        "before training; none: no filter.", rich_help_panel=_STEPS)] = "none",
    score: Annotated[bool, typer.Option("--score", help="Score every data folder (on-policy-ness in the report) "
                                        "without filtering.", rich_help_panel=_STEPS)] = False,
    num_processes: Annotated[int | None, typer.Option(
        min=1, help="Train through `accelerate launch --num_processes N`.", rich_help_panel=_STEPS)] = None,
    accelerate_config: Annotated[Path | None, typer.Option(
        help="Train through `accelerate launch --config_file FILE` (e.g. configs/accelerate_zero3.yaml).",
        rich_help_panel=_STEPS)] = None,
    objective: Annotated[str | None, typer.Option(help="Passed to train: v1 or v2.", rich_help_panel=_STEPS)]
    = None,
    no_w: Annotated[bool, typer.Option("--no-w", help="Passed to train: ablation W = 1.", rich_help_panel=_STEPS)]
    = False,
    no_g: Annotated[bool, typer.Option("--no-g", help="Passed to train: ablation without G.",
                                       rich_help_panel=_STEPS)] = False,
    recipe: Annotated[str, typer.Option(
        help="v1: train the policy with SSO on its own data; v2: train a generator (v2 objective), regenerate "
        "with it, train the policy with the plain pair loss.", rich_help_panel=_V2)] = "v1",
    generator_queries: Annotated[int | None, typer.Option(
        min=1, help="v2: queries of each slice the generator is trained on (default all).", rich_help_panel=_V2)]
    = None,
    generator_train_config: Annotated[Path | None, typer.Option(
        help="v2: YAML options for the generator's training (default --train-config).", rich_help_panel=_V2)]
    = None,
    judge_model: Annotated[str | None, typer.Option(
        help="Run `ssogen judge` with this model on each iteration's data.", rich_help_panel=_JUDGE)] = None,
    judge_sample: Annotated[int, typer.Option(min=1, help="Pairs the judge compares per iteration.",
                                              rich_help_panel=_JUDGE)] = 200,
    overwrite: Annotated[bool, typer.Option(help="Replace a run of other options in --out.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the slices and every step's command; run nothing.")] = False,
) -> None:
    """The online loop: generate with π_{t-1}, (score), train π_{t-1} → π_t with π_{t-1} as reference, repeat.

    Every step is a separate `ssogen` process. Re-running the same command resumes: finished steps are kept,
    an interrupted generate or train continues where it stopped."""
    from ssogen.iterate.options import parse_options
    from ssogen.iterate.run import run_iterate

    options = parse_options({
        "model": model, "out": out, "prompts": prompts, "iterations": iterations,
        "queries_per_iteration": queries_per_iteration, "seed": seed, "generate_config": generate_config,
        "train_config": train_config, "generator_train_config": generator_train_config, "filter": filter_name,
        "score": score, "num_processes": num_processes,
        "accelerate_config": accelerate_config, "objective": objective, "no_w": no_w, "no_g": no_g,
        "recipe": recipe, "generator_queries": generator_queries, "judge_model": judge_model,
        "judge_sample": judge_sample, "overwrite": overwrite,
    })
    run_iterate(options, console, dry_run=dry_run)
