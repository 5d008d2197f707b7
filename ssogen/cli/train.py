"""CLI commands of the training area (`ssogen train`). Every option comes from a field of TrainConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ssogen.cli.common import command_log, console, err_console, user_errors
from ssogen.cli.options import with_options
from ssogen.train.config import TrainConfig, build_config


@with_options(TrainConfig)
@user_errors
def train(
    options: dict[str, Any],
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of options (the command line wins).")]
    = None,
) -> None:
    """Train a policy (v1) or generator (v2) with the weighted SSO objective on a generate output folder.

    Multi-GPU: `accelerate launch --config_file configs/accelerate_ddp.yaml -m ssogen train ...`."""
    from ssogen.train.inputs import check_training_inputs

    settings = build_config(options, config)
    check_training_inputs(settings)  # data, model, --out and loggers, still without torch: errors in a second
    with command_log(settings.out, "train"):
        from ssogen.train.run import run_training

        run_training(settings, console, progress_console=err_console)
