"""transformers' TrainingArguments built from `ssogen train`'s options (the config file's TrainingArguments fields
on top; which names it takes: `ssogen.train.hf_arguments`)."""

from __future__ import annotations

import os
import re
from typing import Any, Literal

import torch

from ssogen.errors import UserError
from ssogen.train.config import TrainConfig
from ssogen.train.integrations import report_to_list


def training_arguments(config: TrainConfig) -> Any:
    """ssogen's options as transformers' TrainingArguments; a bad value is one `invalid training option:` line."""
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available() and not config.use_cpu
    try:
        args = _training_arguments(TrainingArguments, config, cuda, report_to_list(config.report_to))
    except (ValueError, TypeError, ImportError) as exc:  # e.g. an unknown --scheduler, a value of a bad type
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ImportError):  # a field that needs a package not installed (`check_deepspeed`: deepspeed)
            raise UserError(f"a training option needs a package that is not installed: {first_line}", 1) from None
        raise UserError(f"invalid training option{_named_in(first_line, config)}: {first_line}") from None
    _check_numbers(TrainingArguments, config)
    _check_scheduler(args, config)
    return args


def _check_numbers(cls: Any, config: TrainConfig) -> None:
    """TrainingArguments keeps `adam_beta2: high` as given; the optimizer then failed after the model loaded."""
    import dataclasses

    numeric = {f.name for f in dataclasses.fields(cls) if type(f.default) in (int, float)}
    for key, value in config.train_args.items():
        if key in numeric and (isinstance(value, str | bool) or not isinstance(value, int | float)):
            raise UserError(f"{config.origin(f'train_args.{key}', key)}: expected a number (got {value!r})")


def _check_scheduler(args: Any, config: TrainConfig) -> None:
    """Build the schedule once on a stand-in optimizer: `lr_scheduler_kwargs` the schedule does not take (cosine's
    min_lr_rate belongs to cosine_with_min_lr) failed only when training started."""
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)  # the run's lr: polynomial
    try:                                                                                # checks its lr_end below it
        get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=1, num_training_steps=2,
                      scheduler_specific_kwargs=args.lr_scheduler_kwargs or {})
    except (TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not args.lr_scheduler_kwargs:  # a schedule that needs settings none were given for
            raise UserError(f"{config.origin('scheduler', '--scheduler')} {config.scheduler}: {reason}") from None
        where = config.origin("train_args.lr_scheduler_kwargs", "lr_scheduler_kwargs")
        raise UserError(f"{where}: not settings of --scheduler {config.scheduler} ({reason})") from None


def _named_in(message: str, config: TrainConfig) -> str:
    """` (WHERE)` for the option whose value transformers' enum check refuses, named where it was set (`--scheduler`,
    `train.yaml:3: optim`): its message names the value only ("foo is not a valid OptimizerNames, ...")."""
    values = {config.origin("scheduler", "--scheduler"): config.scheduler,
              **{config.origin(f"train_args.{key}", f"{key} in --config"): value
                 for key, value in config.train_args.items()}}
    named = [name for name, value in values.items() if isinstance(value, str) and value
             and re.match(rf"['\"]?{re.escape(value)}['\"]? is not a valid ", message)]
    if "fp16 and bf16" in message:  # the file's fp16 beside --bf16 (or bf16 in the same file)
        named = [config.origin("train_args.fp16", "fp16 in --config"), config.origin("bf16", "--bf16")]
    return f" ({', '.join(named)})" if named else ""


def _warmup(cls: Any, ratio: float) -> dict[str, float]:
    """Newer transformers read a float `warmup_steps` below 1 as a ratio; older ones have `warmup_ratio`."""
    if "warmup_ratio" in getattr(cls, "__dataclass_fields__", {}):
        return {"warmup_ratio": ratio}
    return {"warmup_steps": ratio}


def _training_arguments(cls: Any, config: TrainConfig, cuda: bool, report_to: list[str]) -> Any:
    """ssogen's options as TrainingArguments; the config file's other TrainingArguments fields on top (they may
    replace what ssogen derives, such as save_strategy; warmup_steps replaces --warmup-ratio)."""
    warmup = {} if "warmup_steps" in config.train_args else _warmup(cls, config.warmup_ratio)
    return cls(**{**_ssogen_arguments(config, cuda, report_to, warmup), **config.train_args})


def _ssogen_arguments(config: TrainConfig, cuda: bool, report_to: list[str], warmup: dict[str, float]
                      ) -> dict[str, Any]:
    return dict(
        output_dir=str(config.out),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        **warmup,
        lr_scheduler_type=config.scheduler,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        bf16=use_bf16(config, cuda),
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if config.save_steps > 0 else "no",
        save_steps=config.save_steps if config.save_steps > 0 else 500,
        save_total_limit=config.save_total_limit,
        report_to=report_to,
        remove_unused_columns=False,
        disable_tqdm=True,
        # No host-GPU synchronisation per step: batches are copied asynchronously (from pinned memory), and the
        # logged loss is not checked for NaN (a bool of a GPU tensor waits for backward; ours are not either).
        dataloader_pin_memory=cuda, accelerator_config={"non_blocking": cuda}, logging_nan_inf_filter=False,
        # Without any accelerator say so explicitly: transformers refuses bf16 otherwise.
        use_cpu=config.use_cpu or not _accelerator_available(),
    )


def use_bf16(config: TrainConfig, cuda: bool) -> bool:
    """--bf16 as given. By default: off when the config file asks for fp16; as `accelerate launch` was configured
    (its `mixed_precision`, which transformers follows too); else on where bf16 is the fast path, a CUDA (or ROCm)
    GPU with bf16 tensor cores (compute capability 8 and up; older ones emulate it). TRL defaults to bf16 on every
    device; on a CPU it is not reliably faster (BENCHMARKS.md), so float32 stays the default there."""
    if config.bf16 is not None:
        return config.bf16
    if config.train_args.get("fp16"):
        return False
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher is not None:
        return launcher == "bf16"
    return cuda and torch.cuda.is_bf16_supported(including_emulation=False)


def mixed_precision(args: Any) -> Literal["bf16", "fp16", "no"]:
    """The precision the Trainer runs in: bf16 or fp16 as TrainingArguments says, else what `accelerate launch` was
    configured with (transformers follows it too, so a run without --bf16 may still autocast)."""
    if args.bf16 or args.fp16:
        return "bf16" if args.bf16 else "fp16"
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    return "bf16" if launcher == "bf16" else "fp16" if launcher == "fp16" else "no"


def autocast_dtype(args: Any) -> torch.dtype | None:
    """The dtype `mixed_precision(args)` computes in, None for full precision."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision(args))


def _accelerator_available() -> bool:
    xpu = getattr(torch, "xpu", None)
    return (torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())
            or torch.backends.mps.is_available())
