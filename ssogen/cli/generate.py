"""CLI commands of the generation area (`ssogen generate`)."""

from __future__ import annotations

import shlex
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from ssogen.cli.common import console, err_console, user_errors

_ENGINE = "Engine"
_SELECT = "Selection and principles"
_SAMPLE = "Sampling and filters"
_IO = "Inputs and outputs"


@user_errors
def generate(
    model: Annotated[str | None, typer.Option(help="Model folder or hub id (the policy).", rich_help_panel=_IO)]
    = None,
    principles: Annotated[str | None, typer.Option(
        help="Principle library: a YAML file or a bundled name (default: the bundled default).",
        rich_help_panel=_IO)] = None,
    prompts: Annotated[str | None, typer.Option(
        help="Queries: .jsonl/.json/.parquet/.csv, a datasets folder or a hub id (default demo queries).",
        rich_help_panel=_IO)] = None,
    out: Annotated[str | None, typer.Option(help="Output folder (a Hub dataset repo).", rich_help_panel=_IO)]
    = None,
    config: Annotated[str | None, typer.Option(
        help="YAML file with any of these options (flags override it).", rich_help_panel=_IO)] = None,
    prompt_field: Annotated[str | None, typer.Option(help="Field holding the query (default prompt).",
                                                     rich_help_panel=_IO)] = None,
    split: Annotated[str | None, typer.Option(help="Split of a dataset input (default train).",
                                              rich_help_panel=_IO)] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.", rich_help_panel=_IO)] = None,
    templates: Annotated[str | None, typer.Option(help="Folder overriding the prompt templates.",
                                                  rich_help_panel=_IO)] = None,
    features_per_query: Annotated[int | None, typer.Option(
        "--features-per-query", "-k", help="Features chosen per query (k) (default 2).",
        rich_help_panel=_SELECT)] = None,
    selection: Annotated[str | None, typer.Option(
        help="free (parse the policy's answer) or guided (vLLM structured outputs) (default free).",
        rich_help_panel=_SELECT)] = None,
    extra_prob: Annotated[float | None, typer.Option(
        help="Probability of adding each library extra (overrides the library).", rich_help_panel=_SELECT)] = None,
    principle_source: Annotated[str | None, typer.Option(
        help="library (fixed texts) or policy (query-specific JSON, library fallback) (default library).",
        rich_help_panel=_SELECT)] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (default 0.7).",
                                                      rich_help_panel=_SAMPLE)] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling top-p (default 0.8).",
                                                rich_help_panel=_SAMPLE)] = None,
    max_tokens: Annotated[int | None, typer.Option(help="New tokens per response (default 2048).",
                                                   rich_help_panel=_SAMPLE)] = None,
    raw_greedy: Annotated[bool | None, typer.Option(
        "--raw-greedy/--no-raw-greedy", help="Sample yo (plain query) greedily.", rich_help_panel=_SAMPLE)] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed; per-request seeds derive from it (default 0).",
                                             rich_help_panel=_SAMPLE)] = None,
    chunk_size: Annotated[int | None, typer.Option(
        help="Rows per batched engine call and per saved chunk (default 64 per engine: 64 x --dp).",
        rich_help_panel=_SAMPLE)] = None,
    keep_truncated: Annotated[bool | None, typer.Option(
        "--keep-truncated/--drop-truncated", help="Keep rows whose responses hit --max-tokens.",
        rich_help_panel=_SAMPLE)] = None,
    keep_empty: Annotated[bool | None, typer.Option(
        "--keep-empty/--drop-empty", help="Keep rows with an empty response (flagged and counted either way).",
        rich_help_panel=_SAMPLE)] = None,
    engine: Annotated[str | None, typer.Option(help="vllm or transformers (default vllm).",
                                               rich_help_panel=_ENGINE)] = None,
    tp: Annotated[int | None, typer.Option(help="Tensor-parallel GPUs per engine (default 1).",
                                           rich_help_panel=_ENGINE)] = None,
    dp: Annotated[int | None, typer.Option(
        help="Data-parallel engines of --tp GPUs each, one process each, fed from one work queue (default 1).",
        rich_help_panel=_ENGINE)] = None,
    ray_address: Annotated[str | None, typer.Option(
        help="Run the --dp engines as Ray actors on this cluster: auto or ray://HOST:PORT (needs ssogen[ray]).",
        rich_help_panel=_ENGINE)] = None,
    dtype: Annotated[str | None, typer.Option(help="auto = float32 on CPU (default auto).",
                                              rich_help_panel=_ENGINE)] = None,
    max_model_len: Annotated[int | None, typer.Option(help="Context length (prompt + response).",
                                                      rich_help_panel=_ENGINE)] = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option(
        help="Share of GPU memory for vLLM (default 0.9).", rich_help_panel=_ENGINE)] = None,
    kv_cache_gb: Annotated[float | None, typer.Option(
        help="KV-cache size in GiB (the CPU build needs one; default 0.25 there).", rich_help_panel=_ENGINE)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an output folder of a different configuration.")]
    = False,
    dry_run: Annotated[bool, typer.Option(
        help="Print the plan and rendered prompts for a few rows; load no model, write nothing.")] = False,
) -> None:
    """Generate SSO preference data: select principles, sample y+/y-/yo, filter, write a Hub-ready dataset.

    Re-running the same command resumes an interrupted run."""
    from ssogen.generate.config import resolve_config

    flags: dict[str, Any] = {
        "model": model, "principles": principles, "prompts": prompts, "out": out, "prompt_field": prompt_field,
        "split": split, "limit": limit, "templates": templates, "features_per_query": features_per_query,
        "selection": selection, "extra_prob": extra_prob, "principle_source": principle_source,
        "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "raw_greedy": raw_greedy,
        "seed": seed, "chunk_size": chunk_size, "keep_truncated": keep_truncated, "keep_empty": keep_empty,
        "engine": engine, "tp": tp, "dp": dp, "ray_address": ray_address,
        "dtype": dtype, "max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization,
        "kv_cache_gb": kv_cache_gb,
    }
    run_config = resolve_config(flags, config)
    from ssogen.generate.run import plan_run

    plan = plan_run(run_config)
    if dry_run:
        _print_dry_run(plan)
        return
    _run_with_progress(plan, overwrite)


def _print_dry_run(plan: Any) -> None:
    from ssogen.generate.run import dry_run_examples

    cfg = plan.config
    skipped = ", ".join(f"{k} {v}" for k, v in plan.prompts.skipped.items()) or "none"
    console.rule("plan")
    console.print(f"model {cfg.model} ({cfg.engine}), library {plan.library.name} v{plan.library.version} "
                  f"(sha256 {plan.loaded_library.sha256[:12]}), prompts: {plan.prompts.source}", markup=False)
    console.print(f"{len(plan.rows)} rows (read {plan.prompts.rows_in}, skipped: {skipped}); "
                  f"chunks of {cfg.chunk_size}; requests: {len(plan.rows)} selection + {3 * len(plan.rows)} "
                  f"sampling; k={cfg.features_per_query}, selection {cfg.selection}, principles "
                  f"{cfg.principle_source}; temperature {cfg.temperature}, top-p {cfg.top_p}, max tokens "
                  f"{cfg.max_tokens}; out {cfg.out}", markup=False)
    if plan.prompts.reduced:
        console.print(f"message lists (query = last user turn): {_parts_dropped(plan.prompts.reduced)}",
                      markup=False)
    for example in dry_run_examples(plan):
        console.rule(f"row {example['id']}")
        console.print("[bold]selection prompt[/]")
        console.print(example["selection_prompt"], markup=False, highlight=False)
        console.print(f"[bold]S+ / S-[/] for features {', '.join(example['features'] + example['extra'])} "
                      "(a random pick: no model is loaded in a dry run)")
        console.print(example["system_good"], markup=False, highlight=False)
        console.print("---")
        console.print(example["system_bad"], markup=False, highlight=False)
    _print_placement(cfg)


def _print_placement(cfg: Any) -> None:
    """Engines, their devices and the memory estimate; a plan that cannot run ends the dry run with its error."""
    from ssogen.engine.placement import plan_placement

    placement = plan_placement(cfg.model, cfg.engine_options(), memory=cfg.engine == "vllm")
    console.rule("placement")
    for line in placement.lines():
        console.print(line, markup=False, highlight=False)
    placement.check()


def _run_with_progress(plan: Any, overwrite: bool) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ssogen.errors import UserError
    from ssogen.generate.run import ProgressUpdate, check_model, run_generate

    check_model(plan.config)

    progress = Progress(TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=False)
    task = progress.add_task("generate", total=len(plan.rows), info="loading model")

    def on_progress(update: ProgressUpdate) -> None:
        rate = update.tokens / update.elapsed_s if update.elapsed_s > 0 else 0.0
        progress.update(task, completed=update.rows_done, info=f"{rate:,.0f} tok/s, kept {update.kept}, "
                                                               f"dropped {update.dropped}")

    try:
        with progress:
            result = run_generate(plan.config, overwrite=overwrite, on_progress=on_progress, plan=plan)
    except UserError as exc:
        if exc.exit_code == 130:
            console.print(f"to resume: {shlex.join(['ssogen', *sys.argv[1:]])}", markup=False, highlight=False)
        raise
    _print_summary(result.manifest)


def _parts_dropped(parts: dict[str, int]) -> str:
    names = {"system_turn": "system turn", "earlier_turns": "multi-turn history", "later_turns": "turns after it"}
    return "; ".join(f"{names.get(k, k)} dropped: {v} rows" for k, v in parts.items())


def _shown(value: object) -> str:
    return "–" if value is None else str(value)


def _print_summary(manifest: dict[str, Any]) -> None:
    s = manifest["summary"]
    table = Table(title=f"ssogen generate: {manifest['name']}", show_header=False, title_justify="left")
    skipped = ", ".join(f"{k} {v}" for k, v in s["rows_skipped"].items()) or "0"
    table.add_row("rows in / skipped", f"{s['rows_in']} / {skipped}")
    if s["conversation_parts_dropped"]:
        table.add_row("message lists: query = last user turn", _parts_dropped(s["conversation_parts_dropped"]))
    table.add_row("rows kept", str(s["kept"]))
    table.add_row("rows dropped", ", ".join(f"{k} {v}" for k, v in s["dropped"].items()) or "0")
    empty = s["empty_responses"]
    table.add_row("empty responses y+ / y- / yo", " / ".join(str(empty[v]) for v in ("good", "bad", "raw"))
                  + (" (kept: --keep-empty)" if manifest["filters"]["keep_empty"] else " (rows dropped)"))
    table.add_row("selection filled / principle fallback", f"{s['selection_filled']} / {s['principle_fallback']}")
    lengths = s["mean_tokens_kept"]
    table.add_row("mean tokens (kept) y+ / y- / yo", " / ".join(_shown(lengths[v]) for v in ("good", "bad", "raw")))
    table.add_row("chosen/rejected length ratio", _shown(s["chosen_rejected_length_ratio"]))
    table.add_row("feature counts", ", ".join(f"{k} {v}" for k, v in sorted(s["feature_counts"].items())))
    requests = manifest["requests_this_invocation"]
    table.add_row("requests run now", ", ".join(f"{k} {v}" for k, v in requests.items()) or "0 (all done)")
    table.add_row("wall time / tokens/s", f"{s['wall_time_s']} s / {s['tokens_per_s']}")
    table.add_row("system role merged", str(manifest["system_role_merged"]))
    table.add_row("output", ", ".join(f"{k} {v}" for k, v in manifest["configs"].items()))
    console.print(table)
    from ssogen.dataset.folder import empty_pairs_note

    note = empty_pairs_note(manifest["configs"])
    if note:
        err_console.print(note, style="yellow", highlight=False, markup=False)
