"""`ssogen iterate --num-processes N` where accelerate starts fewer processes (no multi-GPU accelerate config, a
machine without N GPUs: here, this CPU machine, where it starts one): the train step fails with one line before it
writes anything, instead of training with another global batch without a word."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.iterate.test_changed_options import GENERATE_YAML, TRAIN_YAML


def test_fewer_processes_than_asked_fail_the_train_step(tiny_model: Path, tmp_path: Path) -> None:
    out, gen, train = tmp_path / "run", tmp_path / "generate.yaml", tmp_path / "train.yaml"
    gen.write_text(GENERATE_YAML)
    train.write_text(TRAIN_YAML)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    run = subprocess.run([sys.executable, "-m", "ssogen", "iterate", "--model", str(tiny_model), "--out", str(out),
                          "-T", "1", "--queries-per-iteration", "3", "--generate-config", str(gen),
                          "--train-config", str(train), "--num-processes", "2"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode != 0, run.stdout[-2000:]
    assert ("error: --num-processes 2: accelerate started 1 process (it starts one unless its config or the "
            "machine's GPUs make it multi-GPU): give --accelerate-config with distributed_type MULTI_GPU, or leave "
            "--num-processes out\n") in run.stderr, run.stderr[-3000:]
    assert "iter-1/train failed" in run.stderr
    assert "Traceback" not in run.stderr  # accelerate's own, after the step's line
    steps = json.loads((out / "iterate.json").read_text(encoding="utf-8"))["steps"]
    assert {name: entry["status"] for name, entry in steps.items()} == {
        "iter-1/generate": "done", "iter-1/stats": "done", "iter-1/train": "failed"}
    model = out / "iter-1" / "model"  # the train step's --out: nothing of a training run (no lock, log, config)
    assert not model.exists() or not any(model.iterdir())
