"""`SSOTrainer`: transformers.Trainer with the SSO loss, so that checkpoints, resume, gradient accumulation and
checkpointing, bf16, peft, DeepSpeed and FSDP all come from the ecosystem. Only `compute_loss`, `log`,
`training_step` (which finishes a deferred output-layer gradient, see `lean_backward`) and `save_model` (which
writes the user's dropout values, see `ssogen.train.dropout`, and use_cache) change; the reference pass runs from
a callback once the Trainer has prepared (wrapped, sharded) the model."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from transformers import Trainer, TrainerCallback

from ssogen.errors import UserError, file_system_error
from ssogen.formatting import plain_zero
from ssogen.io import share_like_new_files
from ssogen.response_logps import left_padded
from ssogen.train.collator import SSOCollator
from ssogen.train.data import SSODataset
from ssogen.train.dropout import ZeroedDropout
from ssogen.train.fused_norms import install_fused_norms
from ssogen.train.fused_rotary import install_fused_rotary
from ssogen.train.logprobs import sequence_logps
from ssogen.train.loss import sso_loss
from ssogen.train.model_parts import unwrap
from ssogen.train.objective import LossSettings
from ssogen.train.output import TrainOutput
from ssogen.train.output_layer import LogProbHead, output_layer
from ssogen.train.packing import CHECK_TOLERANCE, packing_check_delta
from ssogen.train.reference import ReferenceTable, compute_reference
from ssogen.train.stacked_projections import describe, install_stacked_projections
from ssogen.train.tiled_mlp import install_tiled_mlp
from ssogen.train.training_args import autocast_dtype

# Rows compared, packed against left-padded, before the first batch (see `SSOTrainer.check_packing`).
PACKING_CHECK_ROWS = 2
# Devices on which the output layer's weight gradient waits for the end of backward (`SSOTrainer.lean_backward`):
# it takes one more pass over the vocabulary, worth it for GPU memory; on the CPU it only costs time (+25% per
# step for the tiny test model, vocabulary 8,192 against hidden 64).
DEFERRED_HEAD_DEVICES = frozenset({"cuda"})


logger = logging.getLogger("ssogen")


@contextlib.contextmanager
def save_errors(folder: str | os.PathLike[str]) -> Iterator[None]:
    """A save that fails (a full disk) is one line naming the folder, exit 1: torch.save and safetensors report a
    failed write as their own errors, without the errno. A checkpoint cut off here has no trainer_state.json, so
    the rerun skips it and resumes from the newest complete one."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, UserError):
            raise
        logger.error("saving %s failed", folder, exc_info=exc, extra={"log_only": True})  # the log keeps it all
        if isinstance(exc, OSError) and (full := file_system_error(exc, writing=f"saving {folder}")) is not None:
            raise full from None  # the file when the error names one; transformers' own writes name none
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot save {folder} ({type(exc).__name__}: {first}); if the disk is full, free some space "
                        "and run the same command again: it resumes from the newest complete checkpoint",
                        exit_code=1) from None


class SSOTrainer(Trainer):
    def __init__(self, *args: Any, loss_settings: LossSettings, reference: ReferenceTable,
                 reference_batch_size: int, reference_folders: list[Path],
                 zeroed_dropout: ZeroedDropout | None = None, stacked_projections: bool = True,
                 fused_norms: bool = True, fused_rotary: bool = True, **kwargs: Any) -> None:
        # transformers' Trainer sets config.use_cache to TrainingArguments.use_cache (False) for training; saves
        # write the user's value back (a saved false would slow their generate with transformers).
        self.users_use_cache = getattr(getattr(kwargs.get("model"), "config", None), "use_cache", None)
        super().__init__(*args, **kwargs)
        # The loss is already a mean over rows: let the Trainer scale it for gradient accumulation.
        self.model_accepts_loss_kwargs = False
        self.loss_settings = loss_settings
        self.reference = reference
        self.reference_batch_size = reference_batch_size
        self.reference_folders = reference_folders
        self.reference_seconds = 0.0
        self.zeroed_dropout = zeroed_dropout  # dropout config values set to 0 for training (None: dropout kept)
        self.console: Any = None  # a rich Console for the one status line of the reference pass
        # Why batches are not packed although packing was asked for (set by `check_packing`), or None.
        self.packing_fallback: str | None = None
        self._packing_checked = False
        self._stored: dict[str, list[torch.Tensor]] = defaultdict(list)
        # What attention computes in: the mixed-precision dtype, else the weights' (see `attention_mask_4d`).
        self.attention_dtype: torch.dtype = autocast_dtype(self.args) or unwrap(self.model).dtype
        # With gradient checkpointing: see `lean_backward`; what it changed, in words (recorded in metrics.json),
        # and the head whose weight gradient waits for the end of every backward, or None.
        self.lean_backward_used = "off"
        self.deferred_head = self.lean_backward()
        # Projections run as one GEMM per group (`ssogen.train.stacked_projections`), in words; after the tiled
        # MLP, whose gate and up stay its own. Not under DeepSpeed or FSDP: they gather k's and v's weights in those
        # modules' own forward hooks, after q's call needs them.
        self.stacked_projections = (describe(install_stacked_projections(self.model)) if stacked_projections
                                    and not self.is_deepspeed_enabled and not self.is_fsdp_enabled else "off")
        # RMSNorms through torch's fused rms_norm (`ssogen.train.fused_norms`), how many. Not under DeepSpeed or
        # FSDP, like the stacked projections: untried with their sharded or flattened weights.
        self.fused_norms = (install_fused_norms(self.model) if fused_norms and not self.is_deepspeed_enabled
                            and not self.is_fsdp_enabled else 0)
        # Rotary embeddings in fewer operators (`ssogen.train.fused_rotary`), in how many attention layers. It has
        # no weights, so it runs under DeepSpeed and FSDP too.
        self.fused_rotary = install_fused_rotary(self.model) if fused_rotary else 0
        self.add_callback(_ReferenceCallback(self))

    def lean_backward(self) -> LogProbHead | None:
        """Lower backward's peak memory with gradient checkpointing: the MLPs recompute in token tiles
        (`ssogen.train.tiled_mlp`: no extra recompute), and on a GPU the output layer's weight gradient is added
        after the layers (`LogProbHead.defer_weight_grad`; one process only, a gradient reducer would miss it, and
        not with optimizers that step inside backward, which would miss it too). Not under DeepSpeed or FSDP, which
        gather weights through module hooks that the tiled MLP bypasses."""
        if not self.args.gradient_checkpointing or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return None
        layers = install_tiled_mlp(self.model)
        used = [f"MLP backward in token tiles ({layers} layers)"] if layers else []
        head = output_layer(self.model)
        optimizer = str(getattr(self.args.optim, "value", self.args.optim))
        steps_in_backward = optimizer.endswith("layerwise") or optimizer in ("lomo", "adalomo")
        deferred = (isinstance(head, LogProbHead) and self.args.world_size == 1 and not steps_in_backward
                    and self.args.device.type in DEFERRED_HEAD_DEVICES)
        if deferred:
            head.defer_weight_grad = True
            used.append("output-layer weight gradient after the layers")
        self.lean_backward_used = "; ".join(used) or "off"
        return head if deferred else None

    # -- reference -------------------------------------------------------------------------------------------
    def ensure_reference(self) -> None:
        """Load the cached reference table or compute it with the prepared model (before any update)."""
        if self.reference.logps is not None:
            return
        found = self.reference.try_load(self.reference_folders)
        if found is not None:
            self._say(f"reference log-probs: reused cache {found}")
            return
        if self.state.global_step > 0:
            raise UserError("resuming needs the reference log-probs of the starting model, but neither the output "
                            f"folder nor the checkpoint holds {self.reference.file_name}")
        start = time.perf_counter()
        compute_reference(
            self.reference, model=self.model_wrapped, unwrapped_model=self.accelerator.unwrap_model(self.model),
            dataset=self.train_dataset, collator=self.data_collator, accelerator=self.accelerator,
            batch_size=self.reference_batch_size,
        )
        self.reference_seconds = time.perf_counter() - start
        if self.accelerator.is_main_process:
            assert self.args.output_dir is not None  # TrainingArguments sets a default when given None
            path = self.reference.save(Path(self.args.output_dir))
            self._say(f"reference log-probs: computed for {len(self.reference.row_ids)} rows in "
                      f"{self.reference_seconds:.1f}s, cached as {path}")
        self.accelerator.wait_for_everyone()

    def check_packing(self) -> None:
        """Once, before any pass: packed and left-padded log-probs of the first rows must agree (model, mask and
        position handling as expected), else every later batch is left-padded, with a warning.

        The tolerance grows with the rounding noise of this model and precision, measured as the difference
        between the rows padded together and each row alone (in bf16 that noise, not the layout, dominates)."""
        collator = self.data_collator
        if self._packing_checked or not isinstance(collator, SSOCollator) or not collator.packing:
            return
        self._packing_checked = True
        dataset = cast(SSODataset, self.train_dataset)  # what `ssogen.train.run` gives
        examples = [dataset[i] for i in range(min(PACKING_CHECK_ROWS, len(dataset)))]
        pad, multiple = collator.pad_token_id, collator.pad_to_multiple_of
        unwrapped = self.accelerator.unwrap_model(self.model)
        was_training = unwrapped.training
        unwrapped.eval()
        error = ""
        try:
            with torch.no_grad():
                plain, lengths = self._check_logps(left_padded(examples, pad, multiple))
                alone = torch.cat([self._check_logps(left_padded([e], pad, multiple))[0] for e in examples])
                try:
                    delta = packing_check_delta(self._check_logps(collator(examples))[0], plain, lengths)
                except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # a model that rejects the 4D mask
                    delta, error = float("inf"), f" ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})"
        finally:
            unwrapped.train(was_training)
        measured = torch.tensor([delta, packing_check_delta(alone, plain, lengths)], device=self.args.device)
        delta, noise = self.accelerator.reduce(measured, reduction="max").tolist()
        tolerance = max(CHECK_TOLERANCE["half" if autocast_dtype(self.args) else "fp32"], 4 * noise)
        if delta > tolerance:
            collator.packing = False
            self.packing_fallback = (f"packed log-probs differ from left-padded ones by {delta:.3g} per token "
                                     f"(tolerance {tolerance:.3g}){error}")
            self._say(f"packing: off, batches are left-padded: {self.packing_fallback}")

    def _check_logps(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return sequence_logps(self.model_wrapped, self._prepare_inputs(batch), self.attention_dtype)

    def _say(self, message: str) -> None:
        if self.console is not None and self.accelerator.is_main_process:
            self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    # -- loss ------------------------------------------------------------------------------------------------
    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        policy, lengths = sequence_logps(model, inputs, self.attention_dtype)
        reference = self.reference.lookup(inputs["row_index"]).to(device=policy.device, dtype=policy.dtype)
        output = sso_loss(policy, reference, lengths, self.loss_settings)
        mode = "train" if model.training else "eval"
        if mode == "train":
            for name, mean in output.metric_means().items():
                self._stored[name].append(mean)
        return (output.loss, output.metrics) if return_outputs else output.loss

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        if self.deferred_head is None:
            return super().training_step(model, inputs, num_items_in_batch)
        with self.deferred_head.weight_grad_after_backward():
            return super().training_step(model, inputs, num_items_in_batch)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Every save (the checkpoints every --save-steps and the final model) writes the user's dropout values and
        use_cache into config.json, not the values training runs with, and weights readable as the umask allows."""
        dropout = self.zeroed_dropout
        config = getattr(unwrap(self.model), "config", None)
        training_cache = getattr(config, "use_cache", None)
        if config is not None and self.users_use_cache is not None:
            config.use_cache = self.users_use_cache
        try:
            with save_errors(output_dir or str(self.args.output_dir)), \
                    dropout.user_values() if dropout is not None else contextlib.nullcontext():
                super().save_model(output_dir, _internal_call)
            if (folder := output_dir or self.args.output_dir) is not None:
                share_like_new_files(folder)
        finally:
            if config is not None and training_cache is not None:
                config.use_cache = training_cache

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """The optimizer's and the scheduler's state too: a failed write is `save_errors`' one line. Recorded as the
        run's before it is written (what --overwrite removes, what a rerun resumes from)."""
        out = Path(self.args.output_dir or ".")
        with save_errors(out / f"checkpoint-{self.state.global_step}"):
            if self.is_world_process_zero():
                TrainOutput(out).record_folder(out / f"checkpoint-{self.state.global_step}")
            super()._save_checkpoint(model, trial)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        """A checkpoint holds one copy of tied weights (an output layer tied to the embeddings), so resuming found
        the other name "missing" and warned on every resume of such a model, though nothing was lost."""
        shared: dict[int, list[str]] = defaultdict(list)
        assert self.model is not None  # a checkpoint loads into the model given to __init__
        for name, parameter in self.model.named_parameters(remove_duplicate=False):
            shared[id(parameter)].append(name)
        tied = {name for names in shared.values() if len(names) > 1 for name in names}
        missing = [key for key in load_result.missing_keys if key not in tied]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of every loss term and reward metric since the last log (averaged over processes)."""
        if self._stored and "loss" in logs:
            names = sorted(self._stored)
            means = torch.stack([torch.stack(self._stored[name]).mean() for name in names])
            means = self.accelerator.reduce(means, reduction="mean")
            logs.update({name: plain_zero(round(float(v), 6)) for name, v in zip(names, means.tolist(), strict=True)})
            self._stored.clear()
        super().log(logs, start_time)


class _ReferenceCallback(TrainerCallback):
    """Checks packing and runs the reference pass at train begin; copies the reference table into checkpoints."""

    def __init__(self, trainer: SSOTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.check_packing()
        self.trainer.ensure_reference()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.trainer.reference.copy_to(Path(args.output_dir), checkpoint)
