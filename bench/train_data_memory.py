"""Benchmark: the host memory and time of `ssogen train`'s data path, before the model trains.

Synthetic `sso` rows (`ssogen.testing.synthetic`, responses lengthened to about 3k tokens per row over the six
sequences, with the tiny model's tokenizer) are written as a generate folder of N rows. Then, each in its own
process, with the ssogen package of this checkout or of `--baseline`:

    load     what `ssogen train` does with the data before it builds the trainer: the input check of
             `check_training_inputs` (under the lock), then reading and tokenizing every row into the dataset
    epoch    one epoch of the collator over the dataset, packed (the CPU default), batches of --batch rows

    python bench/train_data_memory.py --rows 2000 10000 --reps 3 [--baseline /path/to/other/ssogen]

Prints a markdown table per size: the median wall time of each phase, the memory the dataset holds once loaded
(resident set growth over the process after its imports and tokenizer), and the peak resident set of the process.
With `--baseline` (the root of another checkout, e.g. `git worktree add /tmp/base <commit>`), the same runs go to
that code, alternating which side goes first, and the table gives this code's values as a ratio of the
baseline's (median of the per-repetition ratios)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sides import alternating, sides_of, tiny_model_and_data

MEASURES = ("load_s", "held_mb", "epoch_s", "peak_mb")
LABELS = {"load_s": "load + tokenize", "held_mb": "held by the dataset", "epoch_s": "collator epoch",
          "peak_mb": "peak RSS"}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One side's data path in this process; the ssogen package is the one PYTHONPATH names."""
    import torch
    from transformers import AutoTokenizer

    from ssogen.train import inputs
    from ssogen.train.collator import SSOCollator
    from ssogen.train.config import TrainConfig
    from ssogen.train.data import SSODataset, encode_rows

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    defaults = TrainConfig(data=Path(args.data), model=args.model, out=Path(args.data) / "unused")
    lengths = {"max_length": defaults.max_length, "max_prompt_length": defaults.max_prompt_length}
    data = Path(args.data)
    base = rss_mb()
    start = time.perf_counter()
    if hasattr(inputs, "check_sso_rows"):  # this code: checked on the Arrow columns, then read once
        inputs.check_sso_rows(data)
        dataset: Any = encode_rows(inputs.iter_sso_rows(data), tokenizer, **lengths)[0]
        kept: Any = None
    else:  # the baseline's `ssogen train`: the check reads every row, then training reads them again and keeps them
        inputs.read_sso_rows(data)
        kept = inputs.read_sso_rows(data)
        dataset = SSODataset(encode_rows(kept, tokenizer, **lengths)[0])
    load_s = time.perf_counter() - start
    held_mb = rss_mb() - base
    collator = SSOCollator(pad_token_id=tokenizer.pad_token_id, packing=True)
    start = time.perf_counter()
    tokens = 0
    for first in range(0, len(dataset), args.batch):
        batch = collator([dataset[i] for i in range(first, min(first + args.batch, len(dataset)))])
        tokens += int(batch["response_lengths"].sum())
    epoch_s = time.perf_counter() - start
    sequence_tokens = sum(len(s) for i in range(len(dataset)) for s in dataset[i]["sequences"])
    del kept
    return {"load_s": load_s, "held_mb": held_mb, "epoch_s": epoch_s, "peak_mb": peak_rss_mb(),
            "tokens_per_row": sequence_tokens / len(dataset), "response_tokens": tokens}


def measured(code: Path, data: Path, model: Path, batch: int) -> dict[str, Any]:
    # Run from the root: a checkout in the current folder would come first on sys.path.
    process = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", "--data", str(data),
                              "--model", str(model), "--batch", str(batch)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(code)}, cwd="/")
    if process.returncode != 0:
        raise SystemExit(f"worker for {code} failed:\n{process.stderr[-3000:]}")
    return dict(json.loads(process.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--response-repeat", type=int, default=30, help="lengthens each synthetic response")
    parser.add_argument("--baseline", type=Path, help="root of another ssogen checkout to compare with")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    sides = sides_of(args.baseline)
    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="ssogen-bench-") as folder:
        model, folders = tiny_model_and_data(Path(folder), sorted(args.rows), args.response_repeat)
        for rows, data in folders.items():
            results[rows] = {side: [] for side in sides}
            for _, side in alternating(sides, args.reps):
                results[rows][side].append(measured(sides[side], data, model, args.batch))
                print(f"{side} at {rows} rows: {results[rows][side][-1]}", file=sys.stderr)
            # Both sides' collators must see the same response tokens, or the comparison is of different work.
            assert len({run["response_tokens"] for runs in results[rows].values() for run in runs}) == 1
    print_table(results, args)


def print_table(results: dict[int, dict[str, list[dict[str, Any]]]], args: argparse.Namespace) -> None:
    sizes = sorted(results)
    compare = args.baseline is not None
    units = {"load_s": "s", "epoch_s": "s", "held_mb": "MB", "peak_mb": "MB"}

    def cell(rows: int, side: str, name: str) -> str:
        value = statistics.median(run[name] for run in results[rows][side])
        return f"{value:.1f} {units[name]}"

    def ratio(rows: int, name: str) -> str:
        pairs = zip(results[rows]["this"], results[rows]["baseline"], strict=True)
        return f"{statistics.median(mine[name] / theirs[name] for mine, theirs in pairs):.2f}×"

    header = "| rows (tokens per row) | measure | this |" + (" baseline | this / baseline |" if compare else "")
    print(header)
    print("|---|---|---|" + ("---|---|" if compare else ""))
    for rows in sizes:
        per_row = statistics.median(run["tokens_per_row"] for run in results[rows]["this"])
        for number, name in enumerate(MEASURES):
            label = f"{rows:,} ({per_row:,.0f})" if number == 0 else ""
            line = f"| {label} | {LABELS[name]} | {cell(rows, 'this', name)} |"
            if compare:
                line += f" {cell(rows, 'baseline', name)} | {ratio(rows, name)} |"
            print(line)
    print(f"\nmedian of {args.reps} runs each, one process per run; batch {args.batch}, packed; {os.cpu_count()} CPU "
          f"cores; python {sys.version.split()[0]}" + (f"; baseline: {args.baseline}" if compare else ""))


if __name__ == "__main__":
    main()
