"""`--report-to`: the loggers transformers' Trainer can report to, checked before torch is imported.

A logger whose package is missing would otherwise fail deep inside the Trainer, after the model has loaded,
with a traceback; here it is one line (exit 1: the environment lacks a package). The names and the packages
are those of transformers' integrations (`INTEGRATION_TO_CALLBACK`); a name it does not know is bad input."""

from __future__ import annotations

import importlib.util

from ssogen.errors import UserError

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
