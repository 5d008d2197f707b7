"""Every rank of a multi-process `ssogen train` (torchrun, 2 CPU processes over gloo) writes under the main
process's claim on --out, and a rank's files follow the main process's rules: no rank writes before the folder is
claimed, and bad input leaves no log of any rank behind. (`accelerate launch --cpu` starts one process here: its
simple launcher runs the command once unless MPI is configured, hence torchrun.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ssogen.testing.synthetic import write_synthetic_sso

SLOW_MAIN_RANK = Path(__file__).with_name("slow_main_rank.py")


def torchrun(data: Path, model: Path, out: Path, *extra: str, slow_main_rank: bool = False
             ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "SLOW_MAIN_RANK_SECONDS": "8"}
    entry = [str(SLOW_MAIN_RANK)] if slow_main_rank else ["-m", "ssogen"]
    command = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", *entry, "train",
               "--data", str(data), "--model", str(model), "--out", str(out), "--max-steps", "2", "--batch-size",
               "2", "--save-steps", "0", "--warmup-ratio", "0", "--max-length", "256", "--max-prompt-length", "192",
               *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_two_ranks_train_under_one_claim(tiny_model: Path, tmp_path: Path) -> None:
    data = write_synthetic_sso(tmp_path / "data", count=8, seed=1)
    out = tmp_path / "run"
    result = torchrun(data, tiny_model, out)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    assert len(list(out.glob("logs/train-rank1-*.log"))) == 1  # the other rank's log, beside the main one's


def test_a_rank_that_reaches_the_folder_first_writes_nothing_before_the_claim(tiny_model: Path,
                                                                              tmp_path: Path) -> None:
    """Rank 1 used to open its log in --out at once, before rank 0 had claimed (or even checked) the folder: with
    a LoRA target that matches no module, rank 1 failed first and the launcher stopped rank 0 before its claim,
    leaving a new folder holding rank 1's log of the bad input, which a failure of rank 0 alone never leaves. Now
    rank 1 waits for the claim and undoes its files as rank 0 does (bad input: no log); a rank the launcher stops
    keeps what an interrupted run keeps, under the claim (the marker)."""
    data = write_synthetic_sso(tmp_path / "data", count=8, seed=1)
    out = tmp_path / "run"
    result = torchrun(data, tiny_model, out, "--lora", "--lora-target-modules", "no_such_proj", slow_main_rank=True)
    assert result.returncode != 0 and "--lora-target-modules no_such_proj" in result.stderr, result.stderr[-4000:]
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) if out.exists() else []
    assert not left or ".ssogen/marker.json" in left, left
    logs = {log.name: log.read_text() for log in out.glob("logs/*.log")}
    assert not [name for name, text in logs.items() if "error (exit 2)" in text], logs
