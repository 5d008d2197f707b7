"""Benchmark: `ssogen generate` (the in-process pipeline) against a bare `vllm.LLM.chat` script on the same
requests, plus the pipeline with its prefix-grouped request order against a shuffled order.

Both sides share one `vllm.LLM` built with ssogen's settings (so the engine configuration is identical), and
the prefix cache is reset before every measured run. The bare script sends exactly the requests ssogen sends:
the raw feature-selection completions, then y+/y-/yo chats in row order with the same per-request seeds.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv/bin/python bench/generate.py --rows 64 --max-tokens 64 --reps 3

Prints a markdown table: median output tokens/s over the repetitions and the ratio to bare vLLM."""

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


def run_ssogen(engine: Any, model: str, rows: int, max_tokens: int, work: Path, order: str) -> tuple[float, int,
                                                                                                      list[Any]]:
    from ssogen.config import RunConfig
    from ssogen.pipeline import run_generate

    engine.llm.reset_prefix_cache()
    config = RunConfig(model=model, out=str(work / f"ssogen-{order}"), limit=rows, max_tokens=max_tokens,
                       keep_truncated=True)
    started = time.perf_counter()
    result = run_generate(config, engine=engine, overwrite=True, request_order=order)
    wall = time.perf_counter() - started
    return wall, result.manifest["summary"]["tokens_generated"], result.records


def run_bare(llm: Any, records: list[Any], rows: int, max_tokens: int) -> tuple[float, int, list[str]]:
    """What a user would write by hand with vLLM: selection completions, then LLM.chat over all chats."""
    from vllm import SamplingParams

    from ssogen.config import RunConfig
    from ssogen.principles import load_library
    from ssogen.prompts import PromptTemplates
    from ssogen.selection import derive_seed

    config = RunConfig(model="-", out="-")
    library = load_library("default").library
    templates = PromptTemplates()
    selection_prompts = [templates.selection_prompt(library, r.prompt, config.features_per_query) for r in records]
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
    started = time.perf_counter()
    selected = llm.generate(selection_prompts, selection_params, use_tqdm=False)
    outputs = llm.chat(chats, params, use_tqdm=False)
    wall = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in [*selected, *outputs])
    return wall, tokens, [o.outputs[0].text for o in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: build the 'small' ~10M tiny model)")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    from ssogen.config import RunConfig
    from ssogen.engine import make_engine
    from ssogen.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="ssogen-bench-") as tmp:
        work = Path(tmp)
        model = args.model or str(build_tiny_model(work / "small", size="small"))
        engine = make_engine("vllm", model, RunConfig(model=model, out="-").engine_options())
        # Warm-up (first-call overheads) outside the measurements.
        _, _, records = run_ssogen(engine, model, args.rows, args.max_tokens, work, "grouped")
        results: dict[str, list[float]] = {"ssogen (prefix-grouped order)": [], "ssogen (shuffled order)": [],
                                           "bare vLLM LLM.chat": []}
        same_text = True
        for _ in range(args.reps):
            for order, name in (("grouped", "ssogen (prefix-grouped order)"), ("shuffled", "ssogen (shuffled order)")):
                wall, tokens, records = run_ssogen(engine, model, args.rows, args.max_tokens, work, order)
                results[name].append(tokens / wall)
            wall, tokens, texts = run_bare(engine.llm, records, args.rows, args.max_tokens)
            results["bare vLLM LLM.chat"].append(tokens / wall)
            ours = [t for r in records for t in (r.response_good, r.response_bad, r.response_raw)]
            same_text = same_text and ours == texts
        bare = statistics.median(results["bare vLLM LLM.chat"])
        print(f"\n{args.rows} queries x 3 variants (+ selection), max {args.max_tokens} new tokens, "
              f"model {Path(model).name}, median of {args.reps}; identical responses on both sides: {same_text}\n")
        print("| run | output tokens/s (median) | runs | ratio to bare vLLM |")
        print("|---|---|---|---|")
        for name, rates in results.items():
            runs = ", ".join(f"{r:,.0f}" for r in rates)
            print(f"| {name} | {statistics.median(rates):,.0f} | {runs} | {statistics.median(rates) / bare:.2f} |")


if __name__ == "__main__":
    main()
