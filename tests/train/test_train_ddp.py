"""Multi-process training through `accelerate launch -m ssogen train` (2 CPU processes, gloo): the documented
multi-GPU entry point, with the reference pass sharded across processes and gathered.

`--multi_gpu` is what starts the processes: accelerate hands it to torchrun, and without CUDA each process takes the
CPU and gloo. (`accelerate launch --cpu --num_processes 2` runs the command once, as one process, unless MPI is
configured, so a test launched that way never had a second rank.) CUDA_VISIBLE_DEVICES="" keeps a GPU machine's
run on the CPU as well, where the single-process comparisons are made."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from ssogen.testing.synthetic import write_synthetic_sso
from ssogen.train.config import TrainConfig
from ssogen.train.run import METRICS_FILE, run_training

ROWS_PER_STEP = 2 * 2  # --batch-size x processes
OPTIONS = {"max_length": 256, "max_prompt_length": 192, "warmup_ratio": 0.0, "save_steps": 0, "batch_size": 2}


def launch_two_processes(data: Path, model: Path, out: Path, *extra: str) -> None:
    """Train 4 steps in 2 processes, and check that both ran: each rank keeps its own log under --out."""
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": ""}
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ssogen", "train",
               "--data", str(data), "--model", str(model), "--out", str(out), "--max-steps", "4",
               "--lr", "1e-3", "--batch-size", "2", "--logging-steps", "2", "--save-steps", "0",
               "--warmup-ratio", "0", "--max-length", "256", "--max-prompt-length", "192", *extra]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    logs = sorted(log.name for log in out.glob("logs/*.log"))
    assert [name.startswith("train-rank1-") for name in logs] == [False, True], logs  # rank 0's, then rank 1's


def test_accelerate_launch_two_processes(tiny_model: Path, tmp_path: Path) -> None:
    data = write_synthetic_sso(tmp_path / "data", count=10, seed=1)  # 10 rows: uneven split over 2 x 2
    out = tmp_path / "ddp"
    launch_two_processes(data, tiny_model, out)
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["train_metrics"]["train_samples_per_second"] > 0
    assert [e["step"] for e in metrics["log_history"] if "loss" in e] == [1, 2, 4]
    # Each step takes --batch-size rows on each of the 2 processes: 10 rows make 3 steps an epoch (5 in one process).
    assert metrics["train_metrics"]["epoch"] == pytest.approx(4 / math.ceil(10 / ROWS_PER_STEP))
    # The gathered reference equals a single-process pass over the same rows.
    single = run_training(TrainConfig(data=data, model=str(tiny_model), out=tmp_path / "single", max_steps=1,
                                      **OPTIONS), Console(file=io.StringIO()))
    distributed = pq.read_table(out / single.reference_file).to_pydict()
    alone = pq.read_table(tmp_path / "single" / single.reference_file).to_pydict()
    assert distributed["id"] == alone["id"]
    for column in alone:
        if column != "id":
            assert distributed[column] == pytest.approx(alone[column], abs=1e-3)


def assert_same_weights(trained: Path, expected: Path) -> None:
    """AdamW moves each weight by up to lr = 1e-3 per step whatever the gradient's size, so summation-order noise in
    a near-zero gradient shows as a few 1e-6 here; a missed, doubled or unaveraged gradient would move it by 1e-3."""
    got, want = load_file(trained / "model.safetensors"), load_file(expected / "model.safetensors")
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, atol=2e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_two_processes_with_gradient_checkpointing_learn_the_same(tiny_model: Path, tmp_path: Path) -> None:
    """The tiled MLP's weight gradients reach DDP's reducer like any other: checkpointed training under DDP ends
    at the weights of the plain run. And the plain run is data parallel: 2 processes of --batch-size 2 learn what
    one process of --batch-size 4 learns from the same 8 rows (each step's 4 rows, split over the ranks)."""
    data = write_synthetic_sso(tmp_path / "data", count=8, seed=2)
    launch_two_processes(data, tiny_model, tmp_path / "plain")
    launch_two_processes(data, tiny_model, tmp_path / "checkpointed", "--gradient-checkpointing")
    plain = load_file(tmp_path / "plain" / "model.safetensors")
    start = load_file(tiny_model / "model.safetensors")
    assert any(not torch.equal(plain[name], start[name]) for name in start)
    assert_same_weights(tmp_path / "checkpointed", tmp_path / "plain")
    options = {**OPTIONS, "batch_size": ROWS_PER_STEP, "max_steps": 4, "lr": 1e-3, "logging_steps": 2}
    run_training(TrainConfig(data=data, model=str(tiny_model), out=tmp_path / "one", **options),
                 Console(file=io.StringIO()))
    assert_same_weights(tmp_path / "plain", tmp_path / "one")
    losses = [[e["loss"] for e in json.loads((tmp_path / run / METRICS_FILE).read_text())["log_history"] if "loss" in e]
              for run in ("plain", "one")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)  # the main process logs the loss of all ranks' rows
