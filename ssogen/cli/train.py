"""CLI commands of the training area (`ssogen train`). Every option comes from a field of TrainConfig."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ssogen.cli.common import command_log, console, err_console, note_lock_takeover, user_errors
from ssogen.cli.options import with_options
from ssogen.errors import STOPPED
from ssogen.train.config import TrainConfig, build_config


@with_options(TrainConfig)
@user_errors
def train(
    options: dict[str, Any],
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of options (the command line wins).",
                                                 metavar="FILE")] = None,
) -> None:
    """Train a policy (v1) or generator (v2) with the weighted SSO objective on a generate output folder.

    Re-running the same command resumes an interrupted run from its newest complete checkpoint.

    Multi-GPU: `accelerate launch --config_file configs/accelerate_ddp.yaml -m ssogen train ...`."""
    from ssogen.lock import check_free
    from ssogen.train.inputs import check_process_count, check_training_inputs
    from ssogen.train.output import TrainOutput

    settings = build_config(options, config)
    check_process_count()  # as many processes as `ssogen iterate --num-processes` asked for, before --out is touched
    # Data, model, --out and loggers, still without torch: errors (and a folder another run is writing) come in a
    # second.
    checked, verdict = check_training_inputs(settings)
    if verdict.action == "finished":
        console.print(f"nothing to do: {settings.out} holds a finished training run of this configuration (use "
                      "--overwrite to train again)", highlight=False, markup=False, soft_wrap=True)
        return
    output = TrainOutput(settings.out)
    main_process = int(os.environ.get("RANK", "0")) == 0  # the others train beside it, under its lock
    if main_process:
        check_free(output.lock_file, label=f"--out {settings.out}")  # a folder another run writes: still in a second
    try:
        from ssogen.train.training_args import training_arguments

        # A value transformers refuses (--scheduler, `optim:` in --config) before the folder is taken: bad input
        # writes nothing there (this imports torch: the checks above come first).
        training_arguments(settings)
        with output.claim(main_process=main_process) as left_behind:
            note_lock_takeover(left_behind)
            with command_log(settings.out, "train"):
                from ssogen.train.run import run_training

                run_training(settings, console, progress_console=err_console, checked=checked)
    except STOPPED:
        raise output.interruption() from None
