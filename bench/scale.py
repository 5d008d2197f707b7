"""Benchmark: `ssogen generate --dp 2` (two engine processes, one CPU core each) against `--dp 1` (one engine in
the ssogen process, vLLM's own thread binding over all cores), on the same rows, in one run.

Both sides run the whole pipeline (`run_generate`: selection, then y+/y-/yo, records written) with their default
chunk size (64 rows per engine), on engines started before the clock starts; a warm-up repetition fills each
side's prefix cache first, so both measure warm engines. The repetitions alternate which side goes first.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv/bin/python bench/scale.py --rows 128 --max-tokens 64 --reps 3

Prints a markdown table: output tokens/s (median over the repetitions), the per-repetition values, the ratio to
`--dp 1` (median of the per-repetition ratios, each pair measured back to back), and whether the rows of the two
sides are identical (they must be: per-request seeds).

A third side, one engine process bound to one core (a pool of one, fed like each `--dp 2` engine), measures
what a single core gives: twice its rate is the most two one-core engines can reach, and its ratio to `--dp 1`
is the ceiling of `--dp 2` on this machine (`--dp 1` already spreads its matrix products over both cores)."""

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


def timed_run(engine: Any, model: str, dp: int, rows: int, max_tokens: int, out: Path) -> tuple[float, int, list]:
    from ssogen.generate.config import RunConfig
    from ssogen.generate.run import run_generate

    config = RunConfig(model=model, out=str(out), limit=rows, max_tokens=max_tokens,
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

    from ssogen.engine import close_engine
    from ssogen.engine.devices import cpu_cores
    from ssogen.engine.launch import make_engine
    from ssogen.engine.options import EngineOptions
    from ssogen.engine.placement import plan_placement
    from ssogen.engine.pool import start_pool
    from ssogen.testing.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="ssogen-bench-scale-") as tmp:
        work = Path(tmp)
        model = args.model or str(build_tiny_model(work / "small", size="small"))
        # The pool first: the in-process engine binds this process's threads, and spawned workers inherit that.
        pool = make_engine("vllm", model, EngineOptions(data_parallel_size=2), state_dir=work / "state")
        pool.queue.wait_all_ready()  # type: ignore[attr-defined]
        # A pool of one: the first engine of the --dp 2 placement, bound to its one core.
        two = EngineOptions(data_parallel_size=2)
        placement = plan_placement(model, two, "vllm")
        one_core = start_pool("generate", "vllm", model, two,
                              placement.model_copy(update={"engines": placement.engines[:1]}), work / "state1")
        one_core.queue.wait_all_ready()
        engines = {2: pool, 1: make_engine("vllm", model, EngineOptions()), 0: one_core}
        try:
            # side 0: the one-core engine, run with --dp 1's chunk size
            rates: dict[int, list[float]] = {0: [], 1: [], 2: []}
            ratios: dict[int, list[float]] = {0: [], 2: []}
            rows: dict[int, list] = {}
            for dp in (1, 2, 0):  # warm-up: first-call costs and the prefix caches, outside the measurements
                timed_run(engines[dp], model, max(dp, 1), args.rows, args.max_tokens, work / f"side{dp}")
            load = os.getloadavg()[0]
            for rep in range(args.reps):
                measured = {}
                for dp in ((1, 2, 0) if rep % 2 == 0 else (0, 2, 1)):
                    wall, tokens, rows[dp] = timed_run(engines[dp], model, max(dp, 1), args.rows, args.max_tokens,
                                                       work / f"side{dp}")
                    measured[dp] = tokens / wall
                    rates[dp].append(measured[dp])
                for dp in (0, 2):
                    ratios[dp].append(measured[dp] / measured[1])
        finally:
            close_engine(engines[2])
            close_engine(engines[0])
    same = rows[1] == rows[2] == rows[0]
    print(f"\n{args.rows} queries x (selection + 3 variants), max {args.max_tokens} new tokens, model "
          f"{Path(model).name}, {len(cpu_cores())} CPU cores, {args.reps} repetitions, 1-min load average "
          f"{load:.1f} before the measurements; rows identical: {same}\n")
    print("| engines | output tokens/s (median) | per repetition | ratio to --dp 1 (median of paired ratios) |")
    print("|---|---|---|---|")
    for dp, label in ((1, "--dp 1 (one engine, all cores)"), (2, "--dp 2 (two engines, one core each)"),
                      (0, "one engine on one core (a pool of one)")):
        per = ", ".join(f"{r:,.0f}" for r in rates[dp])
        ratio = 1.0 if dp == 1 else statistics.median(ratios[dp])
        print(f"| {label} | {statistics.median(rates[dp]):,.0f} | {per} | {ratio:.2f}x |")
    ceiling = 2 * statistics.median(ratios[0])
    print(f"\nceiling of --dp 2 here (two one-core engines, nothing lost): {ceiling:.2f}x --dp 1; --dp 2 reached "
          f"{statistics.median(ratios[2]) / ceiling:.0%} of it")
    if not same:
        raise SystemExit("the rows of --dp 2 differ from --dp 1")


if __name__ == "__main__":
    main()
