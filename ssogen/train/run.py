"""`ssogen train`: load the `sso` rows and the model, run `SSOTrainer`, write model, config, metrics and card.

Imports only torch, transformers, accelerate, peft, pyarrow, pydantic, rich and ssogen (no trl, vllm or datasets):
GPU boxes that train may have nothing else."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from transformers import TrainerCallback

from ssogen.chat import chat_template_text, end_of_turn
from ssogen.errors import UserError
from ssogen.formatting import plain_zero
from ssogen.models import load_error, resolve_model
from ssogen.train.collator import SSOCollator, collator_multiples
from ssogen.train.config import TrainConfig
from ssogen.train.data import encode_rows
from ssogen.train.dropout import disable_dropout
from ssogen.train.inputs import check_inputs, check_process_count, iter_sso_rows, model_digest, output_verdict
from ssogen.train.integrations import integration_errors, tensorboard_folder
from ssogen.train.loss import sso_loss
from ssogen.train.output import CONFIG_FILE, METRICS_FILE, MODEL_CARD, TrainOutput
from ssogen.train.reference import ReferenceTable, cache_key
from ssogen.train.report import RichProgress, TrainOutcome, print_settings, summary_table, write_outputs
from ssogen.train.training_args import mixed_precision, training_arguments

logger = logging.getLogger("ssogen.train.run")

def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def load_tokenizer_and_model(config: TrainConfig) -> tuple[Any, Any]:
    """Tokenizer and causal LM from a local folder or a hub id (`ssogen.models`); one clear line on failure."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_ref = resolve_model(config.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_ref.path)
        model = AutoModelForCausalLM.from_pretrained(model_ref.path, dtype=torch.float32)
    except Exception as exc:  # OSError, ValueError, a safetensors error, ...: one line naming the model
        raise load_error(model_ref, exc) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # use_cache is left as it is: every training forward passes use_cache=False itself, and saves write the user's
    # value (see `SSOTrainer.save_model`).
    return tokenizer, model


def _apply_lora(model: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=config.lora_targets())
    base = Path(model.name_or_path)  # the folder as typed, relative to where training runs
    try:
        adapted = get_peft_model(model, lora)
    except ValueError as exc:  # e.g. no module matches: peft's message says which names it looked for
        message = str(exc).splitlines()[0]
        if "LogProbHead" in message:  # lm_head, replaced by ssogen's output layer, which takes no adapter
            message = "the output layer is ssogen's fused head here, which takes no adapter; add --no-fused-head"
        raise UserError(f"--lora-target-modules {config.lora_target_modules}: {message}") from None
    if base.is_dir():  # an adapter whose base is a local folder then loads from anywhere on this machine
        for adapter in adapted.peft_config.values():
            adapter.base_model_name_or_path = str(base.resolve())
    return adapted


class _StepTimer(TrainerCallback):
    """Wall time of optimizer steps only (excludes the reference pass and saving)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def evaluate_rewards(trainer: Any) -> dict[str, float]:
    """One no-grad pass over all rows with the trained model: mean of every loss term and reward metric."""
    from torch.utils.data import DataLoader

    from ssogen.train.logprobs import sequence_logps

    accelerator = trainer.accelerator
    loader = accelerator.prepare(DataLoader(trainer.train_dataset, batch_size=trainer.reference_batch_size,
                                            shuffle=False, collate_fn=trainer.data_collator))
    model = trainer.model_wrapped
    unwrapped = accelerator.unwrap_model(trainer.model)
    was_training = unwrapped.training
    unwrapped.eval()
    totals: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for batch in loader:
            policy, lengths = sequence_logps(model, batch)
            reference = trainer.reference.lookup(batch["row_index"]).to(policy.device, policy.dtype)
            output = sso_loss(policy, reference, lengths, trainer.loss_settings)
            metrics = {"loss": output.per_row, **output.metrics}
            for name, value in metrics.items():
                value = value.float().reshape(-1) if value.dim() else value.float().repeat(policy.size(0))
                totals.setdefault(name, []).append(accelerator.gather_for_metrics(value).cpu())
    unwrapped.train(was_training)
    return {name: plain_zero(round(float(torch.cat(values).mean()), 6)) for name, values in sorted(totals.items())}


def run_training(config: TrainConfig, console: Console | None = None,
                 callbacks: list[TrainerCallback] | None = None, progress_console: Console | None = None, *,
                 checked: dict[str, Any] | None = None) -> TrainOutcome:
    """The whole `ssogen train` run; returns what was written and measured (`callbacks`: extra Trainer ones).
    `console` gets the settings and the summary, `progress_console` (default: the same) the progress bar and the
    notes (stdout carries a command's summary only). `checked`: the run's fingerprint from `check_inputs` of this
    very config, when the caller checked the inputs already (then the data and the model are not hashed again).

    A run in a folder that holds a run of the same configuration resumes it from its newest complete checkpoint."""
    if console is None or not _is_main_process():
        console = Console(quiet=not _is_main_process())
    if progress_console is None or not _is_main_process():
        progress_console = console
    notes = progress_console
    check_process_count()  # before anything is written into --out
    output = TrainOutput(config.out)
    with output.claim(main_process=_is_main_process()):  # a no-op when the command took the lock already
        run = checked if checked is not None else check_inputs(config)
        verdict = output_verdict(config, run)  # again, under the lock: nothing changes the folder now
        if verdict.action == "finished":
            raise UserError(f"--out {config.out}: holds a finished training run of this configuration; use "
                            "--overwrite to train again or choose another --out")
        if _is_main_process() and (kept := output.start(run, verdict)):
            logger.warning("%s", kept)  # what a clearing left: folders ssogen train did not record making
        for note in verdict.notes:
            logger.warning("%s", note)  # the log's handler prints it on stderr
        for checkpoint, problem in verdict.skipped:
            notes.print(f"[yellow]skipped[/] {checkpoint.name}: {problem}", highlight=False, soft_wrap=True)
        if verdict.checkpoint is not None and not config.resume_from_checkpoint:
            notes.print(f"resuming the run in {config.out} from {verdict.checkpoint.name}", highlight=False,
                        soft_wrap=True)
            config = config.model_copy(update={"resume_from_checkpoint": str(verdict.checkpoint)})
        return _train(config, console, progress_console, callbacks, run=run)


def _train(config: TrainConfig, console: Console, progress_console: Console,
           callbacks: list[TrainerCallback] | None, *, run: dict[str, Any]) -> TrainOutcome:
    """The training itself; `run` is the run's fingerprint from the checks (data and model hashed there once)."""
    fingerprint = run["config"]["data.sso_sha256"]
    notes = progress_console
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # rich shows progress; no tqdm bars for shard writing
    # TrainingArguments first: under DeepSpeed ZeRO-3 it makes from_pretrained load the weights already sharded.
    args = training_arguments(config)
    precision = mixed_precision(args)  # --bf16's default, decided for this device (or by accelerate's config)
    if config.bf16 is False and precision != "no":
        notes.print(f"[yellow]--no-bf16[/]: training in {precision} all the same, as `accelerate launch` is "
                      "configured (transformers follows its mixed_precision); set it to 'no' there for float32",
                      highlight=False, soft_wrap=True)
    config = config.model_copy(update={"bf16": precision == "bf16"})
    tokenizer, model = load_tokenizer_and_model(config)
    zeroed_dropout = None if config.keep_dropout else disable_dropout(model)
    # Read once, row by row, into compact token arrays: the rows' text is not kept for training.
    dataset, truncation_counts, system_supported = encode_rows(
        iter_sso_rows(config.data), tokenizer, max_length=config.max_length,
        max_prompt_length=config.max_prompt_length)
    truncation = truncation_counts.as_dict()
    turn_end = {**end_of_turn(tokenizer).as_dict(), "cut_responses": truncation_counts.cut_in_data}
    print_settings(console, config, len(dataset), truncation, system_supported, turn_end, precision)
    logger.info("settings: %s; %d rows; truncation %s; end of turn %s", config.resolved(), len(dataset), truncation,
                turn_end)
    if truncation["prompts_truncated"] or truncation["responses_truncated"]:
        notes.print(f"[yellow]truncated[/]: {truncation['prompts_truncated']} prompts (start cut) and "
                      f"{truncation['responses_truncated']} responses (end cut) in {truncation['rows_affected']} "
                      "rows; raise --max-prompt-length / --max-length to keep them whole", soft_wrap=True)

    key = cache_key(data_fingerprint=fingerprint, model_id=model_digest(run),
                    max_length=config.max_length, max_prompt_length=config.max_prompt_length,
                    system_supported=system_supported, chat_template=chat_template_text(tokenizer),
                    dtype="fp32" if precision == "no" else precision)
    reference = ReferenceTable(key=key, row_ids=dataset.row_ids)
    from ssogen.train.output_layer import install_logprob_head, remove_logprob_head

    # Before peft wraps the model. With gradient checkpointing the head too trades time for memory (recompute).
    fused_head = config.fused_head and install_logprob_head(
        model, keep_probabilities=not config.gradient_checkpointing, kernel=config.head_kernel)
    from ssogen.train.packing import packing_unsupported

    unpacked_reason = packing_unsupported(model, config.max_length) if config.packing else "--no-packing"
    if config.packing and unpacked_reason:
        notes.print(f"[yellow]packing: off[/] ({unpacked_reason}); batches are left-padded", highlight=False,
                    soft_wrap=True)
    if config.lora:
        model = _apply_lora(model, config)

    from ssogen.train.trainer import SSOTrainer

    folders = [config.out] + ([Path(config.resume_from_checkpoint)] if config.resume_from_checkpoint else [])
    timer = _StepTimer()
    # The trainer's data_collator; `SSOTrainer.check_packing` may turn its packing off.
    collator = SSOCollator(pad_token_id=tokenizer.pad_token_id, packing=unpacked_reason is None,
                           **collator_multiples(args.device.type))
    trainer = SSOTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator,
        processing_class=tokenizer,
        loss_settings=config.loss_settings(), reference=reference,
        reference_batch_size=config.reference_batch_size or config.batch_size, reference_folders=folders,
        zeroed_dropout=zeroed_dropout, stacked_projections=config.stacked_projections,
        fused_norms=config.fused_norms, fused_rotary=config.fused_rotary,
        callbacks=[timer, *(callbacks or [])],
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(RichProgress(progress_console))

    trainer.console = notes
    if (logs := tensorboard_folder(trainer.callback_handler.callbacks, config.out)) and _is_main_process():
        TrainOutput(config.out).record_folder(logs)  # before TensorBoard makes it: --overwrite removes it
    with integration_errors(list(args.report_to)):  # wandb without a login: one line, not a traceback
        result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
        final_eval = evaluate_rewards(trainer) if config.final_eval else None

    seconds = sorted(timer.seconds)
    train_metrics: dict[str, float | None] = dict(result.metrics)
    if config.resume_from_checkpoint:  # transformers averages train_loss over this invocation's steps only: say so
        train_metrics["train_loss_from_step"] = trainer.state.global_step - len(seconds)
        if not seconds:  # resumed from the last checkpoint, no step trained: transformers' 0.0 is no mean loss
            train_metrics["train_loss"] = None
    outcome = TrainOutcome(
        out=config.out, steps=trainer.state.global_step, train_metrics=train_metrics,
        log_history=list(trainer.state.log_history), reference_reused=reference.reused,
        reference_file=reference.file_name,
        reference_loaded_from=str(reference.loaded_from) if reference.loaded_from else None,
        truncation=truncation, final_eval=final_eval,
        seconds_per_step=seconds[len(seconds) // 2] if seconds else None, steps_run=len(seconds),
        extra={"fused_head": fused_head, "end_of_turn": turn_end, "batches": "packed (shared contexts, no padding "
               "between rows)" if collator.packing
               else f"left-padded ({unpacked_reason or trainer.packing_fallback})",
               "lean_backward": trainer.lean_backward_used,
               "stacked_projections": trainer.stacked_projections,
               "fused_norms": f"{trainer.fused_norms} RMSNorm layers" if trainer.fused_norms else "off",
               "fused_rotary": f"{trainer.fused_rotary} attention layers" if trainer.fused_rotary else "off"},
    )
    remove_logprob_head(trainer.model)  # the saved model is the stock class
    hand_written_card = TrainOutput(config.out).hand_written_card()  # before PEFT's save writes or edits one
    trainer.save_model(str(config.out))
    if trainer.is_world_process_zero():
        card_written = write_outputs(config, outcome, trainer, rows=len(dataset), fingerprint=fingerprint, key=key,
                                     system_supported=system_supported, hand_written_card=hand_written_card)
        console.print(summary_table(outcome))
        logger.info("finished: %d steps, %s; final eval %s", outcome.steps, outcome.train_metrics,
                    outcome.final_eval)
        written = f"{CONFIG_FILE}, {METRICS_FILE} and {MODEL_CARD}" if card_written else \
            f"{CONFIG_FILE} and {METRICS_FILE} (your {MODEL_CARD} kept)"
        console.print(f"wrote {'adapter' if config.lora else 'model'}, tokenizer, {written} to {config.out}",
                      highlight=False, soft_wrap=True)  # a path split in two
    trainer.accelerator.wait_for_everyone()
    return outcome
