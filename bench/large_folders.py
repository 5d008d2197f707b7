"""Benchmark: the commands whose cost grows with a dataset's rows, on synthetic generate folders of N rows.

No model samples here: each folder's `.ssogen/` shards are written as generate writes them (the fingerprint of a
real plan with a tiny model, S+ / S- from the bundled templates, responses of 1-3 KB of seeded words), so that
`ssogen generate` finds every row saved and only finishes the run. Then, each in its own process (`python -m
ssogen`), timed with its peak resident memory:

    finish    generate with every row saved: the four configs, the card
    rerun     the same command again: nothing to do
    stats     `ssogen stats` (stats.json, plots, card)
    push-dry  `ssogen push-to-hub --dry-run` (the checks and the card a push would upload)

    .venv/bin/python bench/large_folders.py --rows 1000 10000 --reps 3 [--baseline /path/to/other/ssogen]

Prints a markdown table: the median wall time and peak RSS of each operation at each size, and the growth from
the smallest size to the largest (10× the rows at linear cost: 10×). With `--baseline` (the root of another
ssogen checkout, e.g. `git worktree add /tmp/base <commit>`), the same operations also run on that code, on
copies of the same folders, alternating which goes first, and the table gives this code's time and memory as a
ratio of the baseline's (median of the per-repetition ratios). The rows are synthetic: about 99 % of
responses hold a principle's word, far more than real data, which makes the leakage search work hardest."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

WORDS = ("the of and to in is that it for on with as was be by this are or from at an have not but what all were "
         "when we there can more which one their if will each about how up out them then many some so these would "
         "other into has two like see time could no make than first been its who now people made over did down "
         "only way find use may water long little very after words called just where most know answer question "
         "explain step because however therefore consider example result important helpful safe accurate logical "
         "engaging guidelines response careful detail reason evidence data model").split()
OPERATIONS = ("finish", "rerun", "stats", "push-dry")


def seeded_text(rng: random.Random, low: int, high: int) -> str:
    words: list[str] = []
    size, target = 0, rng.randint(low, high)
    while size < target:
        word = rng.choice(WORDS)
        words.append(word.capitalize() + "." if rng.random() < 0.06 else word)
        size += len(words[-1]) + 1
    return " ".join(words)


def build_folder(rows: int, work: Path, model: Path) -> tuple[Path, list[str]]:
    """A generate folder whose shards hold every row (nothing else yet), and the generate command that finishes
    it (without --out)."""
    from ssogen.dataset.shards import ShardStore
    from ssogen.engine.seeds import derive_seed
    from ssogen.generate.config import RunConfig
    from ssogen.generate.plan import plan_run
    from ssogen.generate.steps.sampling import system_prompt
    from ssogen.records import TripletRecord

    rng = random.Random(rows)
    prompts = work / f"prompts-{rows}.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}: {seeded_text(rng, 80, 300)}?"}) + "\n"
                               for i in range(rows)))
    out = work / f"saved-{rows}"
    # --dtype float32: the precision as typed, which is what a baseline from before the fingerprint recorded the
    # precision (auto resolved) fingerprinted; on the CPU both give this folder's fingerprint.
    options = ["--model", str(model), "--prompts", str(prompts), "--max-tokens", "768", "--keep-truncated",
               "--engine", "transformers", "--dtype", "float32"]
    plan = plan_run(RunConfig(model=str(model), out=str(out), prompts=str(prompts), max_tokens=768,
                              keep_truncated=True, engine="transformers", dtype="float32"))
    pairs = {(a.name, b.name): (system_prompt(plan.templates, [a, b], "good"),
                                system_prompt(plan.templates, [a, b], "bad"))
             for a, b in combinations(plan.library.features, 2)}
    store = ShardStore(out)
    store.prepare(plan.fingerprint(), overwrite=False, hints=plan.refusal_hints, earlier=plan.earlier_fingerprints,
                  alike=plan.alike)
    for start in range(0, rows, 64):
        selections, records = [], []
        for row in plan.rows[start:start + 64]:
            names = rng.choice(list(pairs))
            good, bad = pairs[names]
            text = {variant: seeded_text(rng, 1000, 3000) for variant in ("good", "bad", "raw")}
            finish = {variant: "length" if rng.random() < 0.05 else "stop" for variant in text}
            selections.append({"id": row.id, "features": list(names), "extra": [], "selection_filled": False,
                               "principle_fallback": False, "answer": ", ".join(names), "system_good": good,
                               "system_bad": bad})
            records.append(TripletRecord(
                id=row.id, position=row.position, prompt=row.prompt, features=list(names), extra=[],
                selection_filled=False, selection_mode="free", principle_source="library", kept=True,
                system_good=good,
                system_bad=bad, response_good=text["good"], response_bad=text["bad"], response_raw=text["raw"],
                finish_reason_good=finish["good"], finish_reason_bad=finish["bad"], finish_reason_raw=finish["raw"],
                num_tokens_good=len(text["good"]) // 4, num_tokens_bad=len(text["bad"]) // 4,
                num_tokens_raw=len(text["raw"]) // 4, **{f"seed_{v}": derive_seed(0, row.id, v) for v in text},
                flags=[f"truncated_{v}" for v in text if finish[v] == "length"]).model_dump())
        store.append("selection", selections)
        store.append("rows", records)
    store.close()
    return out, options


def measured(args: list[str], code: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MB of `python -m ssogen ARGS` with the package of `code` (output discarded;
    a failure stops the run)."""
    started = time.monotonic()
    # Run from the root: a checkout in the current folder would come first on sys.path (`-m` puts it there).
    process = subprocess.Popen([sys.executable, "-m", "ssogen", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(code)}, cwd="/")
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    assert process.stderr is not None
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ssogen {' '.join(args)} failed:\n{process.stderr.read().decode()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


Results = dict[tuple[str, str], list[tuple[float, float]]]  # (side, operation) -> (seconds, MB) per repetition


def run_size(rows: int, reps: int, work: Path, model: Path, sides: dict[str, Path]) -> Results:
    saved, options = build_folder(rows, work, model)
    results: Results = {(side, name): [] for side in sides for name in OPERATIONS}
    for rep in range(reps):
        for side in sorted(sides, reverse=rep % 2 == 1):  # alternate which side goes first
            out = work / f"run-{rows}-{rep}-{side}"
            shutil.copytree(saved, out)
            generate = ["generate", *options, "--out", str(out)]
            for name, args in (("finish", generate), ("rerun", generate), ("stats", ["stats", str(out)]),
                               ("push-dry", ["push-to-hub", str(out), "--repo-id", "org/name", "--dry-run"])):
                results[side, name].append(measured(args, sides[side]))
            shutil.rmtree(out)
    shutil.rmtree(saved)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="root of another ssogen checkout to compare with")
    args = parser.parse_args()
    from ssogen.testing.tiny_model import build_tiny_model

    sides = {"this": Path(__file__).resolve().parents[1], **({"baseline": args.baseline} if args.baseline else {})}
    sizes = sorted(args.rows)
    results: dict[int, Results] = {}
    with tempfile.TemporaryDirectory(prefix="ssogen-bench-") as folder:
        work = Path(folder)
        model = build_tiny_model(work / "tiny")
        for rows in sizes:
            results[rows] = run_size(rows, args.reps, work, model, sides)
            for (side, name), values in results[rows].items():
                print(f"{side} {name} at {rows} rows: " + ", ".join(f"{s:.1f} s / {m:.0f} MB" for s, m in values),
                      file=sys.stderr)

    def median(rows: int, name: str, part: int) -> float:
        return statistics.median(value[part] for value in results[rows]["this", name])

    def ratio(rows: int, name: str, part: int) -> str:
        pairs = zip(results[rows]["this", name], results[rows]["baseline", name], strict=True)
        return f"{statistics.median(mine[part] / theirs[part] for mine, theirs in pairs):.2f}×"

    columns = [f"{rows} rows: s, MB" + (" (vs baseline)" if args.baseline else "") for rows in sizes]
    print(f"| operation | {' | '.join(columns)} | growth {sizes[0]} → {sizes[-1]} rows (s, MB) |")
    print("|---|" + "---|" * len(sizes) + "---|")
    for name in OPERATIONS:
        cells = [f"{median(rows, name, 0):.1f} s, {median(rows, name, 1):.0f} MB"
                 + (f" ({ratio(rows, name, 0)}, {ratio(rows, name, 1)})" if args.baseline else "") for rows in sizes]
        growth = (f"{median(sizes[-1], name, 0) / median(sizes[0], name, 0):.1f}×, "
                  f"{median(sizes[-1], name, 1) / median(sizes[0], name, 1):.1f}×")
        print(f"| {name} | {' | '.join(cells)} | {growth} |")
    print(f"\nmedian of {args.reps} runs each; {os.cpu_count()} CPU cores; python {sys.version.split()[0]}"
          + (f"; baseline: {args.baseline}" if args.baseline else ""))


if __name__ == "__main__":
    main()
