"""CLI command that measures a dataset with a judge model (`ssogen judge`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ssogen.cli.common import console, err_console, user_errors

_ENGINE = "Engine"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


@user_errors
def judge(
    folder: Annotated[Path, typer.Argument(help="An ssogen output folder.")],
    judge_model: Annotated[str, typer.Option(help="Judge model folder or hub id (a chat model).")],
    sample: Annotated[int, typer.Option(min=1, help="Pairs to judge (a seeded sample; all when fewer).")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    config: Annotated[str, typer.Option(help="Pairs from the dpo or the reward config.")] = "dpo",
    max_tokens: Annotated[int, typer.Option(min=1, help="New tokens per judge answer.")] = 512,
    templates: Annotated[str | None, typer.Option(help="Folder whose judge.jinja replaces the bundled prompt.")]
    = None,
    engine: Annotated[str, typer.Option(help="vllm or transformers.", rich_help_panel=_ENGINE)] = "vllm",
    tp: Annotated[int, typer.Option(min=1, help="Tensor-parallel GPUs.", rich_help_panel=_ENGINE)] = 1,
    dtype: Annotated[str, typer.Option(help="auto = float32 on CPU.", rich_help_panel=_ENGINE)] = "auto",
    max_model_len: Annotated[int | None, typer.Option(help="Context length; longer pairs are left out.",
                                                      rich_help_panel=_ENGINE)] = None,
    gpu_memory_utilization: Annotated[float, typer.Option(help="vLLM on GPU.", rich_help_panel=_ENGINE)] = 0.9,
    kv_cache_gb: Annotated[float | None, typer.Option(help="Explicit KV-cache size [CPU default: 0.25].",
                                                      rich_help_panel=_ENGINE)] = None,
) -> None:
    """Compare chosen against rejected with a judge model, each pair twice with the positions swapped.

    Writes FOLDER/judge.json (metrics and every answer) and adds the numbers to the dataset card. Answers without
    a clear verdict are counted as unparseable, never guessed."""
    from pydantic import ValidationError

    from ssogen.errors import UserError
    from ssogen.judge.run import JudgeOptions, judge_folder

    try:
        options = JudgeOptions(folder=folder, judge_model=judge_model, sample=sample, seed=seed, config=config,
                               max_tokens=max_tokens, templates=templates, engine=engine, tp=tp, dtype=dtype,
                               max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                               kv_cache_gb=kv_cache_gb)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    written = judge_folder(options)
    m = written["metrics"]
    table = Table(title=f"ssogen judge: {written['judge_model']} on {m['pairs_judged']} pairs ({config})",
                  title_justify="left", show_header=False)
    table.add_row("chosen wins, chosen shown first", _pct(m["accuracy_chosen_first"]))
    table.add_row("chosen wins, chosen shown second", _pct(m["accuracy_chosen_second"]))
    table.add_row("share of judgments for chosen", _pct(m["share_of_judgments_chosen"]))
    table.add_row("chosen wins in both orders", f"{_pct(m['both_orders_chosen_rate'])} ({m['both_orders_chosen']})")
    table.add_row("position bias (same letter both times)", _pct(m["position_bias_rate"]))
    table.add_row("unparseable answers", f"{m['unparseable']} of {m['judgments']}")
    table.add_row("pairs too long for the judge", str(m["pairs_too_long"]))
    console.print(table)
    err_console.print(f"wrote judge.json in {folder}", highlight=False, markup=False)
