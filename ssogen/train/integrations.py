"""`--report-to`: the loggers transformers' Trainer can report to, checked before torch is imported.

A logger whose package is missing would otherwise fail deep inside the Trainer, after the model has loaded,
with a traceback; here it is one line (exit 1: the environment lacks a package). The names and the packages
are those of transformers' integrations (`INTEGRATION_TO_CALLBACK`); a name it does not know is bad input.
A logger that is installed but fails while training (wandb without a login, an unreachable mlflow server) is
one line too (`integration_errors`); its traceback goes to the command's log."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ssogen.errors import UserError
from ssogen.io import input_file_problem

logger = logging.getLogger("ssogen.train")

ENVIRONMENT = 1
# name -> (modules any of which provides it, what to pip install)
INTEGRATIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
    "comet_ml": (("comet_ml",), "comet-ml"),
    "neptune": (("neptune",), "neptune"),
    "clearml": (("clearml",), "clearml"),
    "codecarbon": (("codecarbon",), "codecarbon"),
    "dvclive": (("dvclive",), "dvclive"),
    "swanlab": (("swanlab",), "swanlab"),
    "trackio": (("trackio",), "trackio"),
    "azure_ml": (("azureml",), "azureml-core"),
    "dagshub": (("dagshub",), "dagshub"),
    "flyte": (("flytekit",), "flytekit"),
    "kubeflow": ((), ""),
}


def report_to_list(value: str | list[str] | None) -> list[str]:
    """--report-to as the list TrainingArguments takes ("none" and "" are no logger)."""
    names = value if isinstance(value, list) else (value or "").split(",")
    return [name.strip() for name in names if name.strip() not in ("", "none")]


def check_report_to(value: str | list[str] | None, flag: str = "--report-to") -> list[str]:
    """The loggers, each known and installed; one clear line otherwise."""
    names = report_to_list(value)
    for name in names:
        if name == "all":
            continue
        if name not in INTEGRATIONS:
            raise UserError(f"{flag} {name}: unknown logger (known: none, all, {', '.join(sorted(INTEGRATIONS))})")
        modules, package = INTEGRATIONS[name]
        if modules and not any(importlib.util.find_spec(module) is not None for module in modules):
            raise UserError(f"{flag} {name}: the {package} package is not installed (pip install {package}), or "
                            "drop it from --report-to", ENVIRONMENT)
    return names


def check_deepspeed(config: Any) -> None:
    """A `deepspeed:` TrainingArguments key needs the deepspeed package, which ssogen does not install: one line
    naming where it was set, not transformers' traceback after the output folder was taken. A config file that
    does not exist is named too."""
    value = config.train_args.get("deepspeed")
    if not value:
        return
    where = config.origin("train_args.deepspeed", "deepspeed in --config")
    if importlib.util.find_spec("deepspeed") is None:
        raise UserError(f"{where}: needs the deepspeed package, which is not installed (pip install deepspeed)",
                        ENVIRONMENT)
    if isinstance(value, str) and (problem := input_file_problem(Path(value), "DeepSpeed config file")):
        raise UserError(f"{where}: {value}: {problem}")


def failing_integration(exc: BaseException, report_to: list[str]) -> str | None:
    """The logger of `report_to` whose package (or transformers' callback for it) raised `exc`, else None."""
    names = list(INTEGRATIONS) if "all" in report_to else [name for name in report_to if name in INTEGRATIONS]
    for frame, _line in traceback.walk_tb(exc.__traceback__):
        module = str(frame.f_globals.get("__name__", ""))
        callback = type(frame.f_locals.get("self")).__name__.lower()
        for name in names:
            if module.split(".")[0] in INTEGRATIONS[name][0] or (
                    module.startswith("transformers.integrations") and callback.startswith(name.split("_")[0])):
                return name
    return None


@contextlib.contextmanager
def integration_errors(report_to: list[str], flag: str = "--report-to") -> Iterator[None]:
    """An exception from one of the loggers becomes one line naming it (exit 1); anything else passes unchanged."""
    try:
        yield
    except Exception as exc:
        name = failing_integration(exc, report_to)
        if name is None:
            raise
        logger.error("the %s logger failed", name, exc_info=exc, extra={"log_only": True})  # the log keeps it all
        first_line = next(iter(str(exc).strip().splitlines()), "")
        raise UserError(f"{flag} {name}: the logger failed: {type(exc).__name__}: {first_line} (fix it, or drop "
                        f"{name} from {flag})", ENVIRONMENT) from None


def tensorboard_folder(callbacks: list[Any], out: Path) -> Path | None:
    """The folder TensorBoard's callback will write, when it is one of `callbacks`: its default (OUT/runs/<time>_
    <host>, as transformers names it) is set on it now, so that the run records the folder before it is made."""
    for callback in callbacks:
        if type(callback).__name__ == "TensorBoardCallback" and hasattr(callback, "logging_dir"):
            if callback.logging_dir is None:  # transformers would pick it at train begin: the same name, now
                from transformers.integrations.integration_utils import default_logdir

                callback.logging_dir = str(out / default_logdir())
            return Path(callback.logging_dir)
    return None
