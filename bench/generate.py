"""Benchmark: `ssogen generate` (the in-process pipeline) against a bare `vllm.LLM.chat` script on the same
requests, sent in two orders:

* row order: y+, y-, yo for row 1, then for row 2, ... (what a user writes by hand);
* ssogen's order: the same chats permuted into the order ssogen sends them (prefix-grouped: chats sharing a
  system prompt adjacent), so that the gap between the two bare runs is the effect of request order alone.

All sides share one `vllm.LLM` built with ssogen's engine settings, and the prefix cache is reset before every
measured run. The bare script sends exactly the requests ssogen sends: the raw feature-selection completions,
then the chats with the same per-request seeds, so the responses must be byte-identical (checked: the script
exits 1 when they are not, since the comparison would then not be of the same work).

    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv/bin/python bench/generate.py --rows 64 --max-tokens 64 --reps 5 \\
        --library default [--kv-cache-gb 0.0625] [--row-grouped]

It also prints how many prompt tokens vLLM read from its prefix cache in each bare order: a count that machine
load does not change, and which shows whether an order saved prefill work at all. `--kv-cache-gb` (the same for
every side) shows the memory-bound regime, where cached prompts are evicted before row order reuses them.

Prints a markdown table: median output tokens/s over the repetitions and the ratio to the bare row-order script
(the median of the per-repetition ratios, each measured back to back; and the same in tokens per CPU-second of
this process, which is steadier on a machine shared with other jobs)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine, no spawn guard needed
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SSOGEN = "ssogen (prefix-grouped order)"
BARE_ROWS = "bare vLLM LLM.chat, row order"
BARE_SORTED = "bare vLLM LLM.chat, ssogen's order"
# Optional (--row-grouped): rows sorted by their system prompts, each row's y+, y-, yo still together. It keeps
# every prefix-cache hit of ssogen's order while mixing short plain-query chats with long system-prompt chats
# as row order does: a candidate order for ssogen, measured here before ssogen adopts it.
BARE_ROW_GROUPED = "bare vLLM LLM.chat, rows grouped by system prompt"
VARIANTS = ("good", "bad", "raw")


def run_ssogen(engine: Any, model: str, library: str, rows: int, max_tokens: int,
               work: Path) -> tuple[float, float, int, list[Any]]:
    from ssogen.generate.config import RunConfig
    from ssogen.generate.run import run_generate

    engine.llm.reset_prefix_cache()
    config = RunConfig(model=model, out=str(work / "ssogen"), principles=library, limit=rows,
                       max_tokens=max_tokens, keep_truncated=True)
    started, cpu = time.perf_counter(), time.process_time()
    result = run_generate(config, engine=engine, overwrite=True)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return wall, cpu, result.manifest["summary"]["tokens_generated"], result.records


class BareScript:
    """What a user would write by hand with vLLM: the selection completions, then one LLM.chat over all chats.

    Built from ssogen's records (the same selection prompts, system prompts and seeds), outside the timing."""

    def __init__(self, engine: Any, library: str, records: list[Any], max_tokens: int) -> None:
        from vllm import SamplingParams

        from ssogen.chat import context_messages, prompt_token_ids
        from ssogen.engine.seeds import derive_seed
        from ssogen.generate.config import RunConfig
        from ssogen.generate.steps.selection import SELECTION_STOP, selection_prompt
        from ssogen.principles import load_library
        from ssogen.templating import Templates

        config = RunConfig(model="-", out="-")
        lib = load_library(library).library
        templates = Templates()
        self.selection_prompts = [selection_prompt(templates, lib, r.prompt, config.features_per_query)
                                  for r in records]
        self.selection_params = [
            SamplingParams(temperature=config.temperature, top_p=config.top_p,
                           max_tokens=max(config.selection_max_tokens, 10 * config.features_per_query),
                           stop=[SELECTION_STOP], seed=derive_seed(config.seed, r.id, "selection-sample"))
            for r in records]
        self.keys: list[tuple[str, str]] = []
        self.chats: list[list[dict[str, str]]] = []
        self.params: list[Any] = []
        for r in records:  # row order: y+, y-, yo of a row together
            for variant, system in zip(VARIANTS, (r.system_good, r.system_bad, None), strict=True):
                self.keys.append((r.id, variant))
                self.chats.append(context_messages(r.prompt, system))
                self.params.append(SamplingParams(temperature=config.temperature, top_p=config.top_p,
                                                  max_tokens=max_tokens, seed=derive_seed(config.seed, r.id, variant)))
        # ssogen's order: per chunk of rows it sorts the requests by (prompt token ids, key); the same
        # permutation of these chats (row order is chat index // 3).
        ids = [prompt_token_ids(engine.tokenizer, chat, system_supported=True) for chat in self.chats]
        self.ssogen_order = sorted(range(len(self.chats)), key=lambda i: (
            i // (3 * config.chunk_size), ids[i], f"{self.keys[i][0]}:{self.keys[i][1]}"))
        systems = {r.id: (r.system_good, r.system_bad) for r in records}
        self.row_grouped_order = sorted(range(len(self.chats)), key=lambda i: (
            i // (3 * config.chunk_size), systems[self.keys[i][0]], i))
        self.prompt_tokens = [len(x) for x in ids]
        self.prompt_tokens_total = 0  # selection + chats, as vLLM counted them (set by run)

    def run(self, llm: Any, order: list[int]) -> tuple[float, float, int, dict[tuple[str, str], str], int]:
        """Wall and CPU seconds, output tokens, responses by (row id, variant), prompt tokens read from the
        prefix cache (deterministic: it shows whether the order saved prefill work)."""
        chats = [self.chats[i] for i in order]
        params = [self.params[i] for i in order]
        llm.reset_prefix_cache()
        started, cpu = time.perf_counter(), time.process_time()
        selected = llm.generate(self.selection_prompts, self.selection_params, use_tqdm=False)
        outputs = llm.chat(chats, params, use_tqdm=False)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        tokens = sum(len(o.outputs[0].token_ids) for o in [*selected, *outputs])
        texts = {self.keys[i]: o.outputs[0].text for i, o in zip(order, outputs, strict=True)}
        cached = sum(o.num_cached_tokens or 0 for o in [*selected, *outputs])
        self.prompt_tokens_total = sum(len(o.prompt_token_ids or []) for o in [*selected, *outputs])
        return wall, cpu, tokens, texts, cached


def responses_of(records: list[Any]) -> dict[tuple[str, str], str]:
    return {(r.id, v): getattr(r, f"response_{v}") for r in records for v in VARIANTS}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: build the 'small' ~10M tiny model)")
    parser.add_argument("--library", default="default", help="principle library (bundled name or YAML file)")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--kv-cache-gb", type=float, default=None,
                        help="KV-cache size for the one engine all sides share (default: ssogen's, 0.25 on CPU)")
    parser.add_argument("--row-grouped", action="store_true",
                        help="also run the bare script with rows grouped by system prompt (a candidate order)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    from ssogen.engine.launch import make_engine
    from ssogen.generate.config import RunConfig
    from ssogen.testing.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="ssogen-bench-") as tmp:
        work = Path(tmp)
        model = args.model or str(build_tiny_model(work / "small", size="small"))
        engine = make_engine("vllm", model, RunConfig(model=model, out="-", kv_cache_gb=args.kv_cache_gb)
                             .engine_options())
        # Warm-up (first-call overheads) outside the measurements; its records define the bare script's requests.
        _, _, _, records = run_ssogen(engine, model, args.library, args.rows, args.max_tokens, work)
        bare = BareScript(engine, args.library, records, args.max_tokens)
        orders = {BARE_ROWS: list(range(len(bare.chats))), BARE_SORTED: bare.ssogen_order,
                  BARE_ROW_GROUPED: bare.row_grouped_order}
        sides = (SSOGEN, BARE_ROWS, BARE_SORTED) + ((BARE_ROW_GROUPED,) if args.row_grouped else ())
        expected = responses_of(records)
        rates: dict[str, list[float]] = {side: [] for side in sides}
        ratios: dict[str, list[float]] = {side: [] for side in sides}
        cpu_ratios: dict[str, list[float]] = {side: [] for side in sides}
        differing: dict[str, int] = {side: 0 for side in sides}
        cached: dict[str, int] = {}
        for rep in range(args.reps):
            # Rotate the order each repetition so that a slow moment on a shared machine hits every side.
            measured: dict[str, float] = {}
            per_cpu: dict[str, float] = {}
            for side in sides[rep % len(sides):] + sides[: rep % len(sides)]:
                if side == SSOGEN:
                    wall, cpu, tokens, got = run_ssogen(engine, model, args.library, args.rows, args.max_tokens, work)
                    texts = responses_of(got)
                else:
                    wall, cpu, tokens, texts, cached[side] = bare.run(engine.llm, orders[side])
                differing[side] = max(differing[side], sum(texts[k] != expected[k] for k in expected))
                measured[side], per_cpu[side] = tokens / wall, tokens / cpu
            for side in sides:
                rates[side].append(measured[side])
                ratios[side].append(measured[side] / measured[BARE_ROWS])
                cpu_ratios[side].append(per_cpu[side] / per_cpu[BARE_ROWS])
        print_table(args, model, records, bare, rates, ratios, cpu_ratios, differing, cached)
        return 0 if not any(differing.values()) else 1


def print_table(args: argparse.Namespace, model: str, records: list[Any], bare: BareScript,
                rates: dict[str, list[float]], ratios: dict[str, list[float]], cpu_ratios: dict[str, list[float]],
                differing: dict[str, int], cached: dict[str, int]) -> None:
    systems = [r.system_good for r in records] + [r.system_bad for r in records]
    system_tokens = [n for n, (_, variant) in zip(bare.prompt_tokens, bare.keys, strict=True) if variant != "raw"]
    identical = not any(differing.values())
    print(f"\nlibrary {args.library}: {args.rows} queries x 3 variants (+ selection), max {args.max_tokens} new "
          f"tokens, model {Path(model).name}, KV cache {args.kv_cache_gb or 'default'} GiB, {args.reps} "
          f"repetitions; {len(set(systems))} distinct system prompts "
          f"among {len(systems)}, chats with a system prompt {statistics.mean(system_tokens):.0f} prompt tokens on "
          f"average; identical responses on every side: {identical}"
          + ("" if identical else f" (differing: {differing})"))
    print(f"prompt tokens (selection + chats) {bare.prompt_tokens_total:,}; read from the prefix cache: "
          + ", ".join(f"{side} {n:,}" for side, n in cached.items()) + "\n")
    best_bare = max(rates[BARE_ROWS])
    print("| run | output tokens/s (median) | per repetition | ratio to bare row order (median of paired ratios) "
          "| ratio in tokens per CPU-second | best tokens/s (ratio of bests) |")
    print("|---|---|---|---|---|---|")
    for side in rates:
        runs = ", ".join(f"{r:,.0f}" for r in rates[side])
        print(f"| {side} | {statistics.median(rates[side]):,.0f} | {runs} | "
              f"{statistics.median(ratios[side]):.2f} | {statistics.median(cpu_ratios[side]):.2f} | "
              f"{max(rates[side]):,.0f} ({max(rates[side]) / best_bare:.2f}) |")


if __name__ == "__main__":
    sys.exit(main())
