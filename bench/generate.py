"""Benchmark: `ssogen generate` (the in-process pipeline) against a bare `vllm.LLM.chat` script on the same
requests, plus the pipeline with its prefix-grouped request order against a shuffled order.

Both sides share one `vllm.LLM` built with ssogen's settings (so the engine configuration is identical), and
the prefix cache is reset before every measured run. The bare script sends exactly the requests ssogen sends:
the raw feature-selection completions, then y+/y-/yo chats in row order with the same per-request seeds.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv/bin/python bench/generate.py --rows 64 --max-tokens 64 --reps 3

Prints a markdown table: median output tokens/s over the repetitions and the ratio to bare vLLM (the median of
the per-repetition ratios, each measured back to back; and the same in tokens per CPU-second of this process,
which is steadier on a machine shared with other jobs)."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine, no spawn guard needed
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_ssogen(engine: Any, model: str, rows: int, max_tokens: int, work: Path,
               order: str) -> tuple[float, float, int, list[Any]]:
    from ssogen.generate.config import RunConfig
    from ssogen.generate.run import run_generate

    engine.llm.reset_prefix_cache()
    config = RunConfig(model=model, out=str(work / f"ssogen-{order}"), limit=rows, max_tokens=max_tokens,
                       keep_truncated=True)
    started, cpu = time.perf_counter(), time.process_time()
    result = run_generate(config, engine=engine, overwrite=True, request_order=order)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return wall, cpu, result.manifest["summary"]["tokens_generated"], result.records


def run_bare(llm: Any, records: list[Any], rows: int, max_tokens: int) -> tuple[float, float, int, list[str]]:
    """What a user would write by hand with vLLM: selection completions, then LLM.chat over all chats."""
    from vllm import SamplingParams

    from ssogen.generate.config import RunConfig
    from ssogen.generate.steps.common import derive_seed
    from ssogen.generate.steps.selection import selection_prompt
    from ssogen.principles import load_library
    from ssogen.templating import Templates

    config = RunConfig(model="-", out="-")
    library = load_library("default").library
    templates = Templates()
    selection_prompts = [selection_prompt(templates, library, r.prompt, config.features_per_query) for r in records]
    selection_params = [SamplingParams(temperature=0.7, top_p=0.8, max_tokens=config.selection_max_tokens,
                                       stop=["###"], seed=derive_seed(0, r.id, "selection-sample"))
                        for r in records]
    chats, params = [], []
    for r in records:
        for variant, system in (("good", r.system_good), ("bad", r.system_bad), ("raw", None)):
            messages = ([{"role": "system", "content": system}] if system else []) + \
                [{"role": "user", "content": r.prompt}]
            chats.append(messages)
            params.append(SamplingParams(temperature=0.7, top_p=0.8, max_tokens=max_tokens,
                                         seed=derive_seed(0, r.id, variant)))
    llm.reset_prefix_cache()
    started, cpu = time.perf_counter(), time.process_time()
    selected = llm.generate(selection_prompts, selection_params, use_tqdm=False)
    outputs = llm.chat(chats, params, use_tqdm=False)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    tokens = sum(len(o.outputs[0].token_ids) for o in [*selected, *outputs])
    return wall, cpu, tokens, [o.outputs[0].text for o in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: build the 'small' ~10M tiny model)")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    from ssogen.engine.launch import make_engine
    from ssogen.generate.config import RunConfig
    from ssogen.testing.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="ssogen-bench-") as tmp:
        work = Path(tmp)
        model = args.model or str(build_tiny_model(work / "small", size="small"))
        engine = make_engine("vllm", model, RunConfig(model=model, out="-").engine_options())
        # Warm-up (first-call overheads) outside the measurements.
        _, _, _, records = run_ssogen(engine, model, args.rows, args.max_tokens, work, "grouped")
        names = ("ssogen (prefix-grouped order)", "ssogen (shuffled order)", "bare vLLM LLM.chat")
        rates: dict[str, list[float]] = {name: [] for name in names}
        ratios: dict[str, list[float]] = {name: [] for name in names}
        cpu_ratios: dict[str, list[float]] = {name: [] for name in names}
        same_text = True
        for rep in range(args.reps):
            # Rotate the order each repetition so that a slow moment on a shared machine hits every side.
            measured: dict[str, float] = {}
            per_cpu: dict[str, float] = {}
            for name in names[rep % 3:] + names[: rep % 3]:
                if name.startswith("bare"):
                    wall, cpu, tokens, texts = run_bare(engine.llm, records, args.rows, args.max_tokens)
                    ours = [t for r in records for t in (r.response_good, r.response_bad, r.response_raw)]
                    same_text = same_text and ours == texts
                else:
                    order = "grouped" if "grouped" in name else "shuffled"
                    wall, cpu, tokens, records = run_ssogen(engine, model, args.rows, args.max_tokens, work, order)
                measured[name], per_cpu[name] = tokens / wall, tokens / cpu
            for name in names:
                rates[name].append(measured[name])
                ratios[name].append(measured[name] / measured["bare vLLM LLM.chat"])
                cpu_ratios[name].append(per_cpu[name] / per_cpu["bare vLLM LLM.chat"])
        print(f"\n{args.rows} queries x 3 variants (+ selection), max {args.max_tokens} new tokens, "
              f"model {Path(model).name}, {args.reps} repetitions; identical responses on both sides: {same_text}\n")
        best_bare = max(rates["bare vLLM LLM.chat"])
        print("| run | output tokens/s (median) | per repetition | ratio to bare vLLM (median of paired ratios) "
              "| ratio in tokens per CPU-second | best tokens/s (ratio of bests) |")
        print("|---|---|---|---|---|---|")
        for name in names:
            runs = ", ".join(f"{r:,.0f}" for r in rates[name])
            print(f"| {name} | {statistics.median(rates[name]):,.0f} | {runs} | "
                  f"{statistics.median(ratios[name]):.2f} | {statistics.median(cpu_ratios[name]):.2f} | "
                  f"{max(rates[name]):,.0f} ({max(rates[name]) / best_bare:.2f}) |")

if __name__ == "__main__":
    main()
