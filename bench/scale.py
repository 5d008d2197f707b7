"""Benchmark: `ssogen generate --dp 2` (two engine processes, one CPU core each) against `--dp 1` (one engine in
the ssogen process, vLLM's own thread binding over all cores), on the same rows, in one run.

Both sides run the whole pipeline (`run_generate`: selection, then y+/y-/yo, records written) with their default
chunk size (64 rows per engine), on engines started before the clock starts; a warm-up repetition fills each
side's prefix cache first, so both measure warm engines. The repetitions alternate which side goes first.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv/bin/python bench/scale.py --rows 128 --max-tokens 64 --reps 3

Prints a markdown table: output tokens/s (median over the repetitions), the per-repetition values, the ratio to
`--dp 1` (median of the per-repetition ratios, each pair measured back to back), and whether the rows of the two
sides are identical (they must be: per-request seeds)."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the --dp 1 engine runs in this process
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def timed_run(engine: Any, model: str, dp: int, rows: int, max_tokens: int, work: Path) -> tuple[float, int, list]:
    from ssogen.generate.config import RunConfig
    from ssogen.generate.run import run_generate

    config = RunConfig(model=model, out=str(work / f"dp{dp}"), limit=rows, max_tokens=max_tokens,
                       keep_truncated=True, dp=dp)
    started = time.perf_counter()
    result = run_generate(config, engine=engine, overwrite=True)
    wall = time.perf_counter() - started
    return wall, result.manifest["summary"]["tokens_generated"], [r.model_dump() for r in result.records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: build the 'small' ~10M-parameter tiny model)")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    from ssogen.engine import EngineOptions, close_engine
    from ssogen.engine.devices import cpu_cores
    from ssogen.engine.launch import make_engine
    from ssogen.testing.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="ssogen-bench-scale-") as tmp:
        work = Path(tmp)
        model = args.model or str(build_tiny_model(work / "small", size="small"))
        # The pool first: the in-process engine binds this process's threads, and spawned workers inherit that.
        pool = make_engine("vllm", model, EngineOptions(data_parallel_size=2), state_dir=work / "state")
        pool.queue.wait_all_ready()  # type: ignore[attr-defined]
        engines = {2: pool, 1: make_engine("vllm", model, EngineOptions())}
        try:
            rates: dict[int, list[float]] = {1: [], 2: []}
            ratios: list[float] = []
            rows: dict[int, list] = {}
            for dp in (1, 2):  # warm-up: first-call costs and the prefix caches, outside the measurements
                timed_run(engines[dp], model, dp, args.rows, args.max_tokens, work)
            load = os.getloadavg()[0]
            for rep in range(args.reps):
                measured = {}
                for dp in ((1, 2) if rep % 2 == 0 else (2, 1)):
                    wall, tokens, rows[dp] = timed_run(engines[dp], model, dp, args.rows, args.max_tokens, work)
                    measured[dp] = tokens / wall
                    rates[dp].append(measured[dp])
                ratios.append(measured[2] / measured[1])
        finally:
            close_engine(engines[2])
    same = rows[1] == rows[2]
    print(f"\n{args.rows} queries x (selection + 3 variants), max {args.max_tokens} new tokens, model "
          f"{Path(model).name}, {len(cpu_cores())} CPU cores, {args.reps} repetitions, 1-min load average "
          f"{load:.1f} before the measurements; rows identical: {same}\n")
    print("| engines | output tokens/s (median) | per repetition | ratio to --dp 1 (median of paired ratios) |")
    print("|---|---|---|---|")
    for dp, label in ((1, "--dp 1 (one engine, all cores)"), (2, "--dp 2 (two engines, one core each)")):
        per = ", ".join(f"{r:,.0f}" for r in rates[dp])
        ratio = 1.0 if dp == 1 else statistics.median(ratios)
        print(f"| {label} | {statistics.median(rates[dp]):,.0f} | {per} | {ratio:.2f}x |")
    if not same:
        raise SystemExit("the rows of --dp 2 differ from --dp 1")


if __name__ == "__main__":
    main()
