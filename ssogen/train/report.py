"""What `ssogen train` shows and leaves behind: the settings table, the progress bar, the summary table, and the
files of the output folder beside the model (resolved config, metrics, model card).

Imports only torch, transformers, accelerate, peft, pydantic, rich and ssogen, like the rest of the train path."""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from transformers import TrainerCallback

from ssogen.formatting import counted, plain_zero
from ssogen.io import write_bytes_atomic, write_json_atomic, write_text_atomic
from ssogen.train.config import TrainConfig
from ssogen.train.loss import PAIRS
from ssogen.train.objective import describe
from ssogen.train.output import CONFIG_FILE, METRICS_FILE, MODEL_CARD_MARKER, TrainOutput

logger = logging.getLogger("ssogen.train")
# Metrics shown on each progress line (all logged terms go to metrics.json).
PROGRESS_KEYS = ("loss", "loss/p1", "loss/G", "loss/plus", "loss/minus", "W", "rewards/p1/accuracy",
                 "rewards/p2/accuracy", "rewards/p3/accuracy", "learning_rate")


@dataclass
class TrainOutcome:
    out: Path
    steps: int
    train_metrics: dict[str, Any]
    log_history: list[dict[str, Any]]
    reference_reused: bool
    reference_file: str
    reference_loaded_from: str | None  # the cache file that was read; None when the reference pass ran
    truncation: dict[str, int]
    final_eval: dict[str, float] | None = None
    seconds_per_step: float | None = None
    steps_run: int = 0  # optimizer steps taken by this call (fewer than `steps` after a resume)
    extra: dict[str, Any] = field(default_factory=dict)


class RichProgress(TrainerCallback):
    """A rich progress bar with the main loss terms on each logging step (main process only)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        # sys.stdout / sys.stderr stay as they are: in a command log they lead to the log file.
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                                 transient=False, redirect_stdout=False, redirect_stderr=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if self.progress is None or not logs or "loss" not in logs:
            return
        shown = "  ".join(f"{key}={plain_zero(logs[key]):.4g}" for key in PROGRESS_KEYS if key in logs)
        self.progress.console.print(f"step {state.global_step}: {shown}", highlight=False, markup=False)
        logger.info("step %d: %s", state.global_step, ", ".join(f"{k}={v}" for k, v in logs.items()))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def print_settings(console: Console, config: TrainConfig, rows: int, truncation: dict[str, int],
                   system_supported: bool, end_of_turn: dict[str, Any] | None = None, precision: str = "no"
                   ) -> None:
    info = describe(config.loss_settings())
    table = Table(title="ssogen train: objective and settings", title_justify="left", show_header=False)
    table.add_column("setting", style="bold")
    table.add_column("value")
    for key, value in info.items():
        table.add_row(key, str(plain_zero(value) if isinstance(value, float) else value))
    table.add_row("data", f"{config.data} ({counted(rows, 'row')}, {rows * 6} sequences)")
    table.add_row("model", config.model + (" + LoRA" if config.lora else ""))
    table.add_row("system role", "native" if system_supported
                  else "merged into the user turn (the template does not write it)")
    if end_of_turn is not None:
        table.add_row("end of turn", f"{' '.join(end_of_turn['tokens'])} ({end_of_turn['source']}), after complete "
                      f"responses; none after the {end_of_turn['cut_responses']} responses generate cut at its "
                      "--max-tokens")
    table.add_row("dropout", "kept (--keep-dropout)" if config.keep_dropout else "off (as in TRL)")
    table.add_row("max length / prompt", f"{config.max_length} / {config.max_prompt_length}")
    table.add_row("truncated", f"{truncation['prompts_truncated']} prompts, {truncation['responses_truncated']} "
                  f"responses of {truncation['sequences']} sequences ({truncation['rows_affected']} rows)")
    table.add_row("optimisation", f"lr {config.lr:g}, {config.scheduler}, warmup {plain_zero(config.warmup_ratio):g}, "
                  f"batch {config.batch_size} x accum {config.grad_accum}, "
                  + (f"max steps {config.max_steps}" if config.max_steps > 0 else f"epochs {config.epochs:g}")
                  + (", float32" if precision == "no" else f", {precision}")
                  + (", grad. checkpointing" if config.gradient_checkpointing else ""))
    console.print(table)


def model_card(config: TrainConfig, outcome: TrainOutcome, data_info: dict[str, Any]) -> str:
    settings = config.loss_settings()
    info = describe(settings)
    lines = [
        "---",
        "library_name: " + ("peft" if config.lora else "transformers"),
        "tags:\n- ssogen\n- sso\n- preference-optimization",
        *([] if Path(config.model).exists() else [f"base_model: {config.model}"]),
        "---",
        "",
        "# Model trained with ssogen (Self-Steering Optimization)",
        "",
        f"Starting model: `{config.model}`" + (" with a LoRA adapter (this folder holds the adapter)."
                                              if config.lora else "."),
        f"Data: `{config.data}` (`sso` config, {data_info['rows']} rows, fingerprint "
        f"`{data_info['fingerprint'][:16]}`).",
        "",
        "## Objective",
        "",
        f"`{info['formula']}` with base loss **{settings.loss_type.upper()}** ({info['normalisation']}).",
        "",
        "| coefficient | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items() if k not in ("formula", "normalisation")],
        "",
        "Reference log-probs: the starting model"
        + (" with the adapter disabled" if config.lora else "") + ", computed once before training.",
        "",
        "## Training",
        "",
        f"{outcome.steps} optimizer steps, lr {config.lr:g} ({config.scheduler}), batch {config.batch_size} x "
        f"grad. accumulation {config.grad_accum}, seed {config.seed}. Full settings: `{CONFIG_FILE}`; every "
        f"logged step: `{METRICS_FILE}`.",
        "",
    ]
    if outcome.final_eval:
        lines += ["Final reward accuracies on the training rows: " + ", ".join(
            f"{p.upper()} {outcome.final_eval.get(f'rewards/{p}/accuracy', float('nan')):.3f}" for p in PAIRS), ""]
    return "\n".join([*lines, MODEL_CARD_MARKER]) + "\n"


def summary_table(outcome: TrainOutcome) -> Table:
    table = Table(title="ssogen train: summary", title_justify="left")
    table.add_column("metric")
    table.add_column("first log", justify="right")
    table.add_column("last log", justify="right")
    logged = [entry for entry in outcome.log_history if "loss" in entry]
    first, last = (logged[0], logged[-1]) if logged else ({}, {})
    keys = [k for k in last if k not in ("epoch", "step", "learning_rate", "grad_norm")]
    for key in keys:
        a, b = first.get(key), last.get(key)
        table.add_row(key, "" if a is None else f"{plain_zero(a):.4g}", "" if b is None else f"{plain_zero(b):.4g}")
    table.add_row("steps", "", str(outcome.steps))
    if outcome.seconds_per_step is not None:
        table.add_row("seconds / step (median)", "", f"{outcome.seconds_per_step:.4f}")
    table.add_row("reference log-probs", "", "reused cache" if outcome.reference_reused else "computed")
    return table


def _versions() -> dict[str, str]:
    import accelerate
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "accelerate": accelerate.__version__}
    peft_version: str | None
    try:
        import peft
    except ImportError:  # peft is optional on the train path (only --lora needs it)
        peft_version = None
    else:
        peft_version = peft.__version__
    if peft_version is not None:
        versions["peft"] = peft_version
    from ssogen import __version__

    versions["ssogen"] = __version__
    return versions


def write_outputs(config: TrainConfig, outcome: TrainOutcome, trainer: Any, *, rows: int, fingerprint: str,
                  key: str, system_supported: bool, hand_written_card: bytes | None = None) -> bool:
    """The model card, the resolved config and metrics.json, beside the saved model (main process only). The card
    first: the two JSON files mark the run finished (`FINISHED_FILES`), so a kill before them leaves a run that
    resumes, never a finished one without its card. A card written by hand (`hand_written_card`, read before the
    model was saved) is kept as it was; whether ssogen's card was written."""
    data_info = {"path": str(config.data), "rows": rows, "fingerprint": fingerprint,
                 "system_role": "native" if system_supported else "merged into user turn",
                 "truncation": outcome.truncation, "end_of_turn": outcome.extra.get("end_of_turn")}
    output = TrainOutput(config.out)
    if hand_written_card is None:
        write_text_atomic(output.card, model_card(config, outcome, data_info))
    else:
        if not output.card.is_file() or output.card.read_bytes() != hand_written_card:  # PEFT's save edited it
            write_bytes_atomic(output.card, hand_written_card)
        logger.warning("%s is a model card written by hand: left as it is (remove it to get ssogen's card on the "
                       "next run)", output.card)
    write_json_atomic(output.train_config, {
        "config": config.resolved(),
        "loss": describe(config.loss_settings()),
        "data": data_info,
        "log_probs": "chunked output layer (LogProbHead)" if outcome.extra.get("fused_head")
        else "model logits, chunked logsumexp",
        "batches": outcome.extra.get("batches"),
        # What ran that agrees with the stock computation to rounding (see SSOTrainer): for a reader comparing runs.
        "lean_backward": outcome.extra.get("lean_backward"),
        "stacked_projections": outcome.extra.get("stacked_projections"),
        "fused_norms": outcome.extra.get("fused_norms"),
        "fused_rotary": outcome.extra.get("fused_rotary"),
        "reference": {"key": key, "file": outcome.reference_file, "reused": outcome.reference_reused,
                      "model": "starting model" + (" with the adapter disabled" if config.lora else "")},
        "versions": _versions(),
    })
    write_json_atomic(output.metrics, {
        "steps": outcome.steps,
        "log_history": outcome.log_history,
        "train_metrics": outcome.train_metrics,
        "final_eval": outcome.final_eval,
        "seconds_per_step_median": outcome.seconds_per_step,
        "reference": {"file": outcome.reference_file, "reused": outcome.reference_reused,
                      "loaded_from": outcome.reference_loaded_from, "seconds": trainer.reference_seconds},
        "truncation": outcome.truncation,
    })
    return hand_written_card is None
