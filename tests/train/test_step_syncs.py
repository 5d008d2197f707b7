"""Nothing in ssogen's training step makes the host wait for the GPU: on a GPU each such wait leaves the GPU idle
while the host queues the next kernels. The GPU itself is not needed to check the two places that waited: the
reference lookup (a `.cpu()` copy of the GPU batch's row index in the middle of every step) and transformers'
NaN filter of the logged loss (a bool of the GPU loss after every backward); batches are copied asynchronously."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainingArguments

from ssogen.train.config import build_config
from ssogen.train.reference import ReferenceTable
from ssogen.train.training_args import _ssogen_arguments, _training_arguments, training_arguments


def test_the_reference_lookup_indexes_on_the_batchs_device() -> None:
    table = ReferenceTable(key="k", row_ids=["a", "b", "c"], logps=torch.arange(18, dtype=torch.float64).view(3, 6))
    assert torch.equal(table.lookup(torch.tensor([2, 0])), table.logps[[2, 0]])  # type: ignore[index]
    # A meta tensor stands in for a GPU one: the old `row_index.cpu()` raises there ("Cannot copy out of meta
    # tensor"); indexing a copy of the table on that device copies nothing back to the host.
    on_meta = table.lookup(torch.tensor([1, 0], device="meta"))
    assert on_meta.device.type == "meta" and on_meta.shape == (2, 6)
    # The copy follows the table: new log-probs (a reference computed again) are what the next lookup gives.
    table.logps = -torch.ones(3, 6, dtype=torch.float64)
    assert torch.equal(table.lookup(torch.tensor([1])), -torch.ones(1, 6, dtype=torch.float64))


def test_no_nan_filter_and_asynchronous_batches_on_cuda(tmp_path: Path) -> None:
    config = build_config({"data": Path("d"), "model": "m", "out": tmp_path / "o"})
    assert _ssogen_arguments(config, True, [], {})["dataloader_pin_memory"] is True  # (use_cpu drops it here)
    on_cuda = _training_arguments(TrainingArguments, config, True, [])
    assert on_cuda.logging_nan_inf_filter is False and on_cuda.accelerator_config.non_blocking is True
    on_cpu = training_arguments(config)  # this machine has no GPU
    assert on_cpu.logging_nan_inf_filter is False and on_cpu.accelerator_config.non_blocking is False
    # A config file's TrainingArguments fields still win.
    path = tmp_path / "train.yaml"
    path.write_text("logging_nan_inf_filter: true\n")
    assert training_arguments(build_config({"data": Path("d"), "model": "m", "out": tmp_path / "o"}, path)
                              ).logging_nan_inf_filter is True
