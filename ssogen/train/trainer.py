"""`SSOTrainer`: transformers.Trainer with the SSO loss, so that checkpoints, resume, gradient accumulation and
checkpointing, bf16, peft, DeepSpeed and FSDP all come from the ecosystem. Only `compute_loss` and `log` change;
the reference pass runs from a callback once the Trainer has prepared (wrapped, sharded) the model."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from ssogen.errors import UserError
from ssogen.train.logprobs import sequence_logps
from ssogen.train.loss import sso_loss
from ssogen.train.objective import LossSettings
from ssogen.train.reference import ReferenceTable, compute_reference


class SSOTrainer(Trainer):
    def __init__(self, *args: Any, loss_settings: LossSettings, reference: ReferenceTable,
                 reference_batch_size: int, reference_folders: list[Path], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The loss is already a mean over rows: let the Trainer scale it for gradient accumulation.
        self.model_accepts_loss_kwargs = False
        self.loss_settings = loss_settings
        self.reference = reference
        self.reference_batch_size = reference_batch_size
        self.reference_folders = reference_folders
        self.reference_seconds = 0.0
        self.console: Any = None  # a rich Console for the one status line of the reference pass
        self._stored: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.add_callback(_ReferenceCallback(self))

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
            path = self.reference.save(Path(self.args.output_dir))
            self._say(f"reference log-probs: computed for {len(self.reference.row_ids)} rows in "
                      f"{self.reference_seconds:.1f}s, cached as {path}")
        self.accelerator.wait_for_everyone()

    def _say(self, message: str) -> None:
        if self.console is not None and self.accelerator.is_main_process:
            self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    # -- loss ------------------------------------------------------------------------------------------------
    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        policy, lengths = sequence_logps(model, inputs)
        reference = self.reference.lookup(inputs["row_index"]).to(device=policy.device, dtype=policy.dtype)
        output = sso_loss(policy, reference, lengths, self.loss_settings)
        mode = "train" if model.training else "eval"
        if mode == "train":
            for name, value in output.metrics.items():
                self._stored[name].append(value.float().mean())
        return (output.loss, output.metrics) if return_outputs else output.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of every loss term and reward metric since the last log (averaged over processes)."""
        if self._stored and "loss" in logs:
            names = sorted(self._stored)
            means = torch.stack([torch.stack(self._stored[name]).mean() for name in names])
            means = self.accelerator.reduce(means, reduction="mean")
            logs.update({name: round(float(v), 6) for name, v in zip(names, means.tolist(), strict=True)})
            self._stored.clear()
        super().log(logs, start_time)


class _ReferenceCallback(TrainerCallback):
    """Runs the reference pass at train begin and copies the reference table into every checkpoint."""

    def __init__(self, trainer: SSOTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.ensure_reference()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.trainer.reference.copy_to(Path(args.output_dir), checkpoint)
