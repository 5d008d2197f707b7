"""Benchmark: the time `ssogen train` takes from the command's start to its first training step.

Synthetic `sso` rows (`ssogen.testing.synthetic`, responses lengthened to about 3k tokens per row over the six
sequences) are written as a generate folder of N rows; the tiny model's folder gets --pad-gb of extra weight files
(sparse safetensors files of 4 GB each, hashed as a model's shards are, never loaded), so that the model's
fingerprint reads a folder the size of an 8B model's. Each run is one process running the `ssogen train` command
line (the code of this checkout or of `--baseline`) until its first optimizer step begins. Its --out holds the
reference cache of this data and model already (zeros, under the key both codes compute), as a rerun's or a
resumed run's does: the reference pass, a forward over every row that no change here touches, would otherwise be
most of the time measured.

    python bench/train_startup.py --rows 2000 6000 --reps 3 [--baseline /path/to/other/ssogen]

Prints a markdown table per size: the median over the runs of the time to the first step, and of the time spent
in two parts of it: checking the rows and hashing the data and the model (`check_sso_rows`, `run_fingerprint` and
training's own model fingerprint, wherever the code calls them), and reading and tokenizing the rows
(`encode_rows`). With `--baseline` (the root of another checkout) the sides alternate which goes first."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sides import alternating, sides_of, tiny_model_and_data

START = time.perf_counter()  # the process's start, before any import of ssogen, torch or transformers

MEASURES = ("first_step_s", "checks_s", "tokenize_s")
LABELS = {"first_step_s": "start → first step", "checks_s": "of which: check rows, hash data and model",
          "tokenize_s": "of which: read + tokenize rows"}
SHARD_BYTES = 4 << 30


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """`ssogen train` in this process, timed; the ssogen package is the one PYTHONPATH names."""
    from transformers import TrainerCallback
    from typer.testing import CliRunner

    import ssogen.train.inputs as inputs
    import ssogen.train.run as run
    from ssogen.cli import app

    spent = {"checks_s": 0.0, "tokenize_s": 0.0}

    def timed(module: Any, name: str, measure: str) -> None:
        original = getattr(module, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                spent[measure] += time.perf_counter() - start

        setattr(module, name, wrapper)

    for name in ("check_sso_rows", "run_fingerprint"):
        timed(inputs, name, "checks_s")
    if hasattr(run, "model_fingerprint"):  # the baseline fingerprints the model again for the reference key
        timed(run, "model_fingerprint", "checks_s")
    timed(run, "encode_rows", "tokenize_s")

    class FirstStep(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            # To a file: the command captures stdout and sends the process's own output into its log.
            Path(args.result).write_text(json.dumps({"first_step_s": time.perf_counter() - START, **spent}))
            os._exit(0)  # the measure is taken: no training, no saving

    original = run.run_training

    def with_first_step(*a: Any, **k: Any) -> Any:
        return original(*a, **{**k, "callbacks": [FirstStep()]})

    run.run_training = with_first_step  # the command imports it from the module when it runs
    result = CliRunner().invoke(app, ["train", "--data", args.data, "--model", args.model, "--out", args.out,
                                      "--max-steps", "1", "--save-steps", "0", "--batch-size", "2",
                                      "--no-bf16"])
    raise SystemExit(f"no training step began: exit {result.exit_code}\n{result.output[-3000:]}")


def pad_model(folder: Path, gigabytes: int) -> None:
    """Sparse safetensors files of one U8 tensor each, SHARD_BYTES of data: no disk space, full-size headers."""
    for number in range(gigabytes * (1 << 30) // SHARD_BYTES):
        header = json.dumps({"padding": {"dtype": "U8", "shape": [SHARD_BYTES], "data_offsets": [0, SHARD_BYTES]}})
        path = folder / f"padding-{number:05d}.safetensors"
        with path.open("wb") as f:
            f.write(struct.pack("<Q", len(header)) + header.encode())
            f.truncate(8 + len(header) + SHARD_BYTES)


def reference_cache(data: Path, model: Path, out: Path) -> None:
    """The reference cache `ssogen train --no-bf16` looks for in `out` (fp32: the CPU's), of zeros."""
    import torch
    from transformers import AutoTokenizer

    from ssogen.chat import chat_template_text, supports_system_role
    from ssogen.fingerprint import model_fingerprint
    from ssogen.models import resolve_model
    from ssogen.train.config import TrainConfig
    from ssogen.train.inputs import data_fingerprint, read_sso_rows
    from ssogen.train.output import TrainOutput
    from ssogen.train.reference import ReferenceTable, cache_key

    tokenizer = AutoTokenizer.from_pretrained(model)
    config = TrainConfig(data=data, model=str(model), out=out)
    model_id = model_fingerprint(resolve_model(str(model))).digest
    key = cache_key(data_fingerprint=data_fingerprint(data), model_id=model_id,
                    max_length=config.max_length, max_prompt_length=config.max_prompt_length,
                    system_supported=supports_system_role(tokenizer), chat_template=chat_template_text(tokenizer),
                    dtype="fp32")
    ids = [row["id"] for row in read_sso_rows(data)]
    table = ReferenceTable(key=key, row_ids=ids, logps=torch.zeros(len(ids), 6, dtype=torch.float64))
    with TrainOutput(out).claim(main_process=True):  # ssogen's mark: a folder of a run that saved nothing yet
        table.save(out)


def measured(code: Path, data: Path, model: Path, out: Path) -> dict[str, Any]:
    result = out.with_name(out.name + ".json")
    # Run from the root: a checkout in the current folder would come first on sys.path.
    process = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", "--data", str(data),
                              "--model", str(model), "--out", str(out), "--result", str(result)],
                             capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}, cwd="/")
    if process.returncode != 0 or not result.is_file():
        raise SystemExit(f"worker for {code} failed:\n{process.stdout[-2000:]}\n{process.stderr[-3000:]}")
    return dict(json.loads(result.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 6000])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pad-gb", type=int, default=16, help="extra weight files (a multiple of 4)")
    parser.add_argument("--response-repeat", type=int, default=30, help="lengthens each synthetic response")
    parser.add_argument("--baseline", type=Path, help="root of another ssogen checkout to compare with")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sides = sides_of(args.baseline)
    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="ssogen-bench-") as folder:
        work = Path(folder)
        model, folders = tiny_model_and_data(work, sorted(args.rows), args.response_repeat)
        pad_model(model, args.pad_gb)
        for rows, data in folders.items():
            results[rows] = {side: [] for side in sides}
            for rep, side in alternating(sides, args.reps):
                out = work / f"out-{rows}-{side}-{rep}"
                reference_cache(data, model, out)
                results[rows][side].append(measured(sides[side], data, model, out))
                print(f"{side} at {rows} rows: {results[rows][side][-1]}", file=sys.stderr)
    print_table(results, args)


def print_table(results: dict[int, dict[str, list[dict[str, Any]]]], args: argparse.Namespace) -> None:
    compare = args.baseline is not None

    def cell(rows: int, side: str, name: str) -> str:
        return f"{statistics.median(run[name] for run in results[rows][side]):.2f} s"

    def ratio(rows: int, name: str) -> str:
        pairs = zip(results[rows]["this"], results[rows]["baseline"], strict=True)
        return f"{statistics.median(mine[name] / theirs[name] for mine, theirs in pairs):.2f}×"

    print("| rows | measure | this |" + (" baseline | this / baseline |" if compare else ""))
    print("|---|---|---|" + ("---|---|" if compare else ""))
    for rows in sorted(results):
        for number, name in enumerate(MEASURES):
            line = f"| {f'{rows:,}' if number == 0 else ''} | {LABELS[name]} | {cell(rows, 'this', name)} |"
            print(line + (f" {cell(rows, 'baseline', name)} | {ratio(rows, name)} |" if compare else ""))
    print(f"\nmedian of {args.reps} runs each, one process per run; model folder padded with {args.pad_gb} GB of "
          f"sparse weight files; {os.cpu_count()} CPU cores; python {sys.version.split()[0]}"
          + (f"; baseline: {args.baseline}" if compare else ""))


if __name__ == "__main__":
    main()
