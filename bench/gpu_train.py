"""Benchmark: `ssogen train` against TRL's DPOTrainer at real model shapes on one GPU (not a test).

Random-init Qwen2 models of real shapes (0.5B: hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864; 1.5B:
hidden 1536, 28 layers, 12 heads, 2 KV heads, intermediate 8960; vocab 151,936, tied embeddings; Qwen3 shapes on
request, bench/gpu_train_setup.py has them all) with the project's locally trained tokenizer (its ids cover the first 2k
rows of the vocabulary; the output layer still scores all 151,936), and synthetic `sso` rows with long system prompts
(300-800 tokens, as the paper's S+ / S- carrying several principles) and long responses (160-520 tokens). ssogen trains
B triplets per step (six sequences each); TRL's DPOTrainer (IPO, precomputed reference) trains the same work as 3 DPO
pairs per triplet, 3·B pairs per step, so both see the same 6·B sequences and take the same number of steps. Both run
bf16 autocast over float32 weights with AdamW, the same gradient-checkpointing setting, in separate worker processes
that alternate, median over repeats. TRL runs with its defaults and, where liger-kernel is importable, with
`use_liger_kernel=True`. Step time is the median interval between optimizer-step ends (on CUDA between events recorded
there, no synchronisation; collation included; the first two, profiled and counted steps left out); peak memory is
`torch.cuda.max_memory_allocated`; tokens/s counts the tokens of the six sequences (the same for every trainer);
operators per step: what one step dispatched, views left out (about a kernel launch each).

    python bench/gpu_train.py                                  # CUDA: 0.5b and 1.5b, gc off and on
    python bench/gpu_train.py --device cpu                     # tiny shapes on the CPU, to try it out
    python bench/gpu_train.py --shapes 0.5b --gc off --repeats 1 --profile --out-dir results

A time budget (`--budget-s`) stops starting workers that would not finish in time; the table says how many
runs each cell has. `bench/gpu_run.sh` installs carried wheels on a bare GPU machine and runs this.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gpu_train_setup import SHAPES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # ssogen from this checkout when not installed

MAIN_KINDS = ("ssogen", "trl", "trl-liger")
# Run once to explain the main numbers (see gpu_train_worker.py), in this order of priority: SDPA's memory-efficient
# kernel instead of cuDNN's and packed lines 16 wide instead of 128-bucketed (the two answers to cuDNN's host time,
# the largest host cost in the 0.5B profile), transformers' RMSNorm modules, the stock backward under
# checkpointing, transformers' rotary embedding, q, k, v and gate, up as separate products, no packing, liger's
# output layer.
DIAGNOSTIC_KINDS = ("ssogen-efficient-attn", "ssogen-pad16", "ssogen-stock-norms", "ssogen-stock-backward",
                    "ssogen-stock-rotary", "ssogen-separate-projections", "ssogen-unpacked", "ssogen-liger-head")


def run_worker(kind: str, args: argparse.Namespace, built: dict[str, Any], root: Path, profile: bool,
               timeout: float) -> list[dict]:
    spec = {"kind": kind, "device": args.device, "models": built["models"], "data": built["data"],
            "gc": args.gc, "batch": args.batch, "max_length": args.max_length, "threads": args.threads,
            "root": str(root), "profile_dir": str(args.out_dir) if profile and args.out_dir else None,
            "profile_gc": args.profile_gc or args.gc[0]}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(Path(__file__).with_name("gpu_train_worker.py")), json.dumps(spec)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"kind": kind, "shape": s, "gc": g, "error": f"worker killed after {timeout:.0f}s"}
                for s in args.shapes for g in args.gc]
    if args.out_dir:
        with (Path(args.out_dir) / "workers.log").open("a", encoding="utf-8") as log:
            log.write(f"==== {kind} (exit {result.returncode})\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}\n")
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"kind": kind, "shape": s, "gc": g, "error": f"worker exit {result.returncode}: {tail[:200]}"}
                for s in args.shapes for g in args.gc]
    return list(json.loads(lines[-1])["runs"])


def schedule(args: argparse.Namespace) -> list[tuple[int, str]]:
    """(repeat, kind) in order: main kinds rotated each repeat (alternating); the diagnostic kinds once, after the
    second repeat, so that a tight budget cuts them and the third repeat first."""
    order: list[tuple[int, str]] = []
    for repeat in range(args.repeats):
        shift = repeat % len(args.kinds) if args.kinds else 0
        order += [(repeat, kind) for kind in args.kinds[shift:] + args.kinds[:shift]]
        if repeat == min(1, args.repeats - 1):
            order += [(0, kind) for kind in args.diagnostic]
    return order


def run_all(args: argparse.Namespace, built: dict[str, Any], root: Path, start: float) -> list[dict[str, Any]]:
    """Every scheduled worker whose last duration (of the same kind) still fits the remaining budget."""
    runs: list[dict[str, Any]] = []
    took: dict[str, float] = {}
    profiled: set[str] = set()
    for repeat, kind in schedule(args):
        elapsed = time.perf_counter() - start
        # A kind not run yet is expected to take as long as the others took on average.
        expected = took.get(kind, statistics.mean(took.values()) if took else 0.0)
        if elapsed + expected > args.budget_s:
            print(f"[{elapsed:.0f}s] skip {kind} (repeat {repeat + 1}): over the {args.budget_s:.0f}s budget",
                  flush=True)
            continue
        began = time.perf_counter()
        profile = args.profile and kind in args.kinds and kind not in profiled  # main kinds: 8 files back at most
        results = run_worker(kind, args, built, root, profile=profile, timeout=args.budget_s - elapsed + 150)
        profiled.add(kind)
        took[kind] = time.perf_counter() - began
        for result in results:
            result["repeat"] = repeat
        runs += results
        errors = [r["error"] for r in results if r.get("error")]
        print(f"[{time.perf_counter() - start:.0f}s] {kind} (repeat {repeat + 1}) took {took[kind]:.0f}s"
              + (f"; errors: {errors}" if errors else ""), flush=True)
    return runs


def cell(runs: list[dict[str, Any]], kind: str, shape: str, gc: str) -> dict[str, Any] | None:
    done = [r for r in runs if (r["kind"], r["shape"], r["gc"]) == (kind, shape, gc) and not r.get("error")]
    if not done:
        failed = [r for r in runs if (r["kind"], r["shape"], r["gc"]) == (kind, shape, gc)]
        return {"error": failed[0]["error"]} if failed else None
    operators = [r["operators"] for r in done if "operators" in r]
    return {"step_s": statistics.median(r["step_s"] for r in done),
            "peak_mib": statistics.median(r["peak_mib"] for r in done), "n": len(done),
            "operators": f"{statistics.median(operators):,.0f}" if operators else "–"}


def ratio(value: float, base: dict[str, Any] | None, key: str) -> str:
    return f"{value / base[key]:.2f}" if base and not base.get("error") else "–"


def print_table(args: argparse.Namespace, runs: list[dict[str, Any]], built: dict[str, Any],
                env: dict[str, str]) -> str:
    layout = built["layout"]
    lines = [f"\n`ssogen train` vs TRL DPOTrainer (IPO, precomputed reference, 3 pairs per triplet) on {env['device']}"
             f"; torch {env['torch']}, transformers {env['transformers']}, trl {env.get('trl', '-')}, liger-kernel "
             f"{env.get('liger', '-')}; {'bf16 autocast' if args.device == 'cuda' else 'fp32'}, batch {args.batch} "
             f"triplets = {6 * args.batch} sequences/step, {args.steps} steps per run",
             f"tokens per step: six sequences {layout['sequence_tokens']:.0f} (responses "
             f"{layout['response_tokens']:.0f}); through the model: ssogen packed {layout['packed_tokens']:.0f}, "
             f"ssogen left-padded {layout['padded_tokens']:.0f}\n",
             "| shape | grad. ckpt | trainer | step time | / TRL | / TRL+liger | tokens/s | peak memory | / TRL "
             "| operators per step | runs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    memory = "MiB" if args.device == "cuda" else "MiB RSS"
    for shape in args.shapes:
        for gc in args.gc:
            trl, liger = cell(runs, "trl", shape, gc), cell(runs, "trl-liger", shape, gc)
            for kind in [*args.kinds, *args.diagnostic]:
                c = cell(runs, kind, shape, gc)
                if c is None:
                    continue
                if c.get("error"):
                    lines.append(f"| {shape} | {gc} | {kind} | {c['error'][:80]} | | | | | | | 0 |")
                    continue
                tokens = layout["sequence_tokens"] / c["step_s"]
                lines.append(f"| {shape} | {gc} | {kind} | {c['step_s']:.3f} s | {ratio(c['step_s'], trl, 'step_s')}"
                             f" | {ratio(c['step_s'], liger, 'step_s')} | {tokens:,.0f} | {c['peak_mib']:,.0f} "
                             f"{memory} | {ratio(c['peak_mib'], trl, 'peak_mib')} | {c['operators']} | {c['n']} |")
    syncs = {(r["kind"], r["shape"], r["gc"]): r["syncs"] for r in runs if "syncs" in r}
    lines += [""] * bool(syncs) + [f"host-GPU synchronisations in one step, {kind} {shape} gc {gc}: {count or 'none'}"
                                   for (kind, shape, gc), count in sorted(syncs.items())]
    table = "\n".join(lines)
    print(table, flush=True)
    return table


def environment(device: str) -> dict[str, str]:
    import torch
    import transformers

    env = {"torch": torch.__version__, "transformers": transformers.__version__,
           "device": torch.cuda.get_device_name(0) if device == "cuda" else "CPU"}
    for name, module in (("trl", "trl"), ("liger", "liger_kernel")):
        if importlib.util.find_spec(module) is not None:
            from importlib.metadata import PackageNotFoundError, version

            try:
                env[name] = version("liger-kernel" if name == "liger" else name)
            except PackageNotFoundError:
                env[name] = "?"
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--shapes", help=f"comma-separated: {', '.join(SHAPES)} (default: 0.5b,1.5b; cpu: tiny)")
    parser.add_argument("--gc", default="off,on", help="gradient checkpointing settings: off, on or off,on")
    parser.add_argument("--batch", type=int, default=4, help="triplets per step (TRL: 3x as many pairs)")
    # 16: enough steps for packed line widths (128-token buckets) to repeat, as they do in a long run, so that the
    # median step is one whose attention plans are cached (6 distinct shapes in 12 batches of the default rows).
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps per run (the first two not timed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no worker past this (seconds)")
    parser.add_argument("--kinds", default=",".join(MAIN_KINDS), help="trainers compared in every repeat")
    parser.add_argument("--diagnostic", default=",".join(DIAGNOSTIC_KINDS), help="run once, after the second repeat")
    parser.add_argument("--length-scale", type=float, help="scales all token lengths (default 1; cpu: 0.1)")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker on the CPU")
    parser.add_argument("--profile", action="store_true", help="torch.profiler tables of two steps (first repeat)")
    parser.add_argument("--profile-gc", choices=["off", "on"], help="the setting profiled (default: the first)")
    parser.add_argument("--out-dir", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    args = parser.parse_args()
    unknown = {*args.kinds.split(","), *args.diagnostic.split(",")} - {"", *MAIN_KINDS, *DIAGNOSTIC_KINDS}
    if unknown:  # a misspelt kind would run as plain ssogen under its name
        parser.error(f"unknown kinds {', '.join(sorted(unknown))}; known: {', '.join(MAIN_KINDS + DIAGNOSTIC_KINDS)}")
    start = time.perf_counter()
    cpu = args.device == "cpu"
    args.shapes = (args.shapes or ("tiny" if cpu else "0.5b,1.5b")).split(",")
    if set(args.shapes) - set(SHAPES):
        parser.error(f"unknown shapes {', '.join(sorted(set(args.shapes) - set(SHAPES)))}; known: {', '.join(SHAPES)}")
    args.gc = args.gc.split(",")
    args.length_scale = args.length_scale or (0.1 if cpu else 1.0)
    liger = importlib.util.find_spec("liger_kernel") is not None and not cpu
    args.kinds = [k for k in args.kinds.split(",") if k and (liger or "liger" not in k)]
    # liger's kernels and SDPA's memory-efficient kernel are CUDA only: on the CPU those kinds would only fail.
    args.diagnostic = [k for k in args.diagnostic.split(",")
                       if k and (liger or "liger" not in k) and not (cpu and k == "ssogen-efficient-attn")]
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ssogen-gpu-bench-") as tmp:
        root = Path(tmp)
        (root / "args.json").write_text(json.dumps({**vars(args), "out_dir": str(args.out_dir)}))
        command = [sys.executable, str(Path(__file__).with_name("gpu_train_setup.py")), str(root)]
        built_run = subprocess.run(command, capture_output=True, text=True, check=False,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
        if built_run.returncode != 0:
            sys.stderr.write(built_run.stdout[-3000:] + built_run.stderr[-5000:])
            return 1
        built = json.loads(built_run.stdout.strip().splitlines()[-1])
        print(f"[{time.perf_counter() - start:.0f}s] built {', '.join(args.shapes)} and "
              f"{args.batch * args.steps} rows", flush=True)
        runs = run_all(args, built, root, start)
    env = environment(args.device)
    table = print_table(args, runs, built, env)
    if args.out_dir:
        (args.out_dir / "gpu_train.md").write_text(table + "\n")
        (args.out_dir / "gpu_train.json").write_text(json.dumps({"env": env, "layout": built["layout"],
                                                                 "args": {**vars(args), "out_dir": str(args.out_dir)},
                                                                 "runs": runs}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
