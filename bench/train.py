"""Benchmark: `ssogen train` against TRL's DPOTrainer doing the same work (not a test).

ssogen trains on N triplets (six sequences each). TRL's DPOTrainer (IPO, precomputed reference) trains on the
same work as three DPO rows per triplet (P1, P2, P3: 3N pairs, two sequences each), with 3x the batch size so
both see 6·B sequences per step and take the same number of steps. Both run one epoch on the same tiny model
and data, in separate worker processes (so each has its own peak RSS), alternating, --repeats times each.

Reported per triplet: end-to-end time (tokenize + reference pass + training; model already on disk), the
median optimizer-step time, and the peak RSS growth over the worker's baseline after imports.

    .venv/bin/python bench/train.py                  # defaults: tiny model, 64 triplets, batch 8, 3 repeats
    .venv/bin/python bench/train.py --size small --rows 32 --batch 4 --response-repeat 2
    .venv/bin/python bench/train.py --size small --rows 32 --batch 4 --response-repeat 2 --bf16 --gradient-checkpointing

Both trainers get the same precision and gradient-checkpointing settings (TRL's DPOConfig defaults to bf16 and
gradient checkpointing on; here they follow the flags).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024



def step_timer() -> Any:
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.start = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    return Timer()


def worker_ssogen(args: argparse.Namespace) -> dict[str, Any]:
    import io

    # Everything imported before the baseline, as the TRL worker imports trl before its own: module memory
    # must not count as training memory (ssogen.train.trainer pulls in transformers.Trainer).
    import torch
    from rich.console import Console

    import ssogen.train.trainer  # noqa: F401
    from ssogen.train.config import TrainConfig
    from ssogen.train.run import run_training

    torch.set_num_threads(args.threads)
    base = rss_mb()
    start = time.perf_counter()
    outcome = run_training(TrainConfig(
        data=Path(args.data), model=args.model, out=Path(args.out), epochs=1, lr=1e-4, batch_size=args.batch,
        warmup_ratio=0.0, save_steps=0, logging_steps=1000, seed=0, max_length=args.max_length,
        max_prompt_length=args.max_length // 2, use_cpu=True, bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
    ), Console(file=io.StringIO()))
    total = time.perf_counter() - start
    return {"total_s": total, "step_s": outcome.seconds_per_step, "steps": outcome.steps,
            "peak_mb": peak_rss_mb() - base}


def worker_trl(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from trl_pairs import trl_dpo_pairs

    from ssogen.train.inputs import read_sso_rows

    torch.set_num_threads(args.threads)
    base = rss_mb()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    pairs = trl_dpo_pairs(tokenizer, read_sso_rows(Path(args.data)))
    timer = step_timer()
    config = DPOConfig(output_dir=args.out, loss_type=["ipo"], beta=0.1, learning_rate=1e-4,
                       per_device_train_batch_size=3 * args.batch, num_train_epochs=1, precompute_ref_log_probs=True,
                       max_length=args.max_length, save_strategy="no", logging_steps=1000, report_to=[],
                       use_cpu=True, disable_tqdm=True, seed=0, dataset_num_proc=None,
                       # TRL's config defaults to bf16 and gradient checkpointing: set both like ssogen's run.
                       bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing)
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer,
                         callbacks=[timer])
    trainer.train()
    total = time.perf_counter() - start
    return {"total_s": total, "step_s": statistics.median(timer.seconds), "steps": trainer.state.global_step,
            "peak_mb": peak_rss_mb() - base}


def run_worker(kind: str, args: argparse.Namespace, model: Path, data: Path, out: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", kind, "--model", str(model), "--data", str(data),
               "--out", str(out), "--batch", str(args.batch), "--threads", str(args.threads),
               "--max-length", str(args.max_length)]
    command += ["--bf16"] if args.bf16 else []
    command += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit(f"{kind} worker failed")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=["ssogen", "trl"])
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--out")
    parser.add_argument("--size", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--rows", type=int, default=64, help="triplets")
    parser.add_argument("--batch", type=int, default=8, help="triplets per step (TRL gets 3x pairs)")
    parser.add_argument("--response-repeat", type=int, default=4, help="lengthens every synthetic response")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each worker")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in both trainers")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="in both trainers")
    args = parser.parse_args()

    if args.worker:
        result = (worker_ssogen if args.worker == "ssogen" else worker_trl)(args)
        print(json.dumps(result))
        return

    from ssogen.testing.synthetic import write_synthetic_sso
    from ssogen.testing.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="ssogen-bench-") as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", size=args.size)
        data = write_synthetic_sso(root / "data", args.rows, seed=0, response_repeat=args.response_repeat)
        results: dict[str, list[dict[str, Any]]] = {"ssogen": [], "trl": []}
        for repeat in range(args.repeats):
            for kind in ("ssogen", "trl"):
                # A fresh output folder each time: ssogen must not reuse its reference cache between repeats.
                results[kind].append(run_worker(kind, args, model, data, root / f"out-{kind}-{repeat}"))
    rows = args.rows

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    print(f"\n`ssogen train` vs TRL DPOTrainer (IPO, precomputed reference, 3 DPO rows per triplet); "
          f"{args.size} model, {rows} triplets, batch {args.batch} triplets = {6 * args.batch} sequences/step, "
          f"{results['ssogen'][0]['steps']} steps, CPU, {args.threads} thread(s), "
          f"{'bf16' if args.bf16 else 'fp32'}, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}"
          f", median of {args.repeats}\n")
    print("| measure | ssogen | TRL | ssogen / TRL |")
    print("|---|---|---|---|")
    for label, key, scale, unit in (("time per triplet, end to end", "total_s", 1000 / rows, "ms"),
                                    ("optimizer step (6·B sequences)", "step_s", 1000, "ms"),
                                    ("peak RSS growth", "peak_mb", 1, "MiB")):
        ours, theirs = med("ssogen", key) * scale, med("trl", key) * scale
        print(f"| {label} | {ours:.1f} {unit} | {theirs:.1f} {unit} | {ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
