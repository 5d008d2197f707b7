"""The report across iterations: read from each iteration's folders (stats.json, metrics.json, judge.json), written
to DIR/report.json and DIR/plots/, and shown as one table in the terminal (and in iterate's log) after every
iteration.

Length growth across iterations is the first plot: the paper reports that training
without the weight W let responses grow across iterations (docs/method.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ssogen.dataset.folder import OutputFolder
from ssogen.formatting import percent, plain_text
from ssogen.io import read_json_object, write_json_atomic, write_png_atomic
from ssogen.iterate.options import IterateOptions
from ssogen.iterate.plan import PLOTS_DIR, REPORT_FILE, Iteration
from ssogen.train.output import TrainOutput

VARIANTS = {"good": "y+", "bad": "y-", "raw": "yo"}
PAIRS = ("p1", "p2", "p3")
LENGTH_PLOT = "lengths.png"
TRAINING_PLOT = "training.png"
logger = logging.getLogger("ssogen.iterate")


def data_summary(folder: Path) -> dict[str, Any] | None:
    """Funnel, mean tokens of the kept rows, length ratio and on-policy-ness from `ssogen stats`' stats.json."""
    stats = read_json_object(OutputFolder(folder).stats)
    if stats is None:
        return None
    funnel, tokens, scoring = stats["funnel"], stats["lengths"]["tokens"], stats.get("scoring")
    return {
        "rows": funnel["rows_in"], "kept": funnel["kept"], "dropped": funnel["dropped"],
        "dropped_by_reason": funnel["dropped_by_reason"],
        "mean_tokens": {variant: tokens[variant]["mean"] for variant in VARIANTS},
        "chosen_rejected_length_ratio": stats["length_bias"]["ratio_tokens"],
        "on_policy": scoring["on_policy_kept"] if scoring else None,
    }


def training_summary(folder: Path) -> dict[str, Any] | None:
    """Trained steps and the last logged training loss; reward accuracies and mean W from the final evaluation over
    all rows when train ran one (--final-eval), else from the last logged step."""
    metrics = read_json_object(TrainOutput(folder).metrics)
    if metrics is None:
        return None
    logged = [entry for entry in metrics.get("log_history", []) if "loss" in entry]
    last = logged[-1] if logged else {}
    final_eval = metrics.get("final_eval")
    source, values = ("final_eval", final_eval) if final_eval else ("last_log", last)
    # Trained steps: metrics.json says (newer runs); else the largest step logged (the run's closing entry has it).
    steps = metrics.get("steps", max((e.get("step", 0) for e in metrics.get("log_history", [])), default=None))
    return {
        "steps": steps,
        "final_loss": last.get("loss"),
        "final_loss_step": last.get("step"),  # the last logged loss: --logging-steps may end before the last step
        "accuracy": {pair: values.get(f"rewards/{pair}/accuracy") for pair in PAIRS},
        "mean_W": values.get("W"),
        "source": source,
    }


def judge_summary(folder: Path) -> dict[str, Any] | None:
    judged = OutputFolder(folder).read_judge()  # None too for a judge.json without its metrics
    return None if judged is None else {"judge_model": judged.get("judge_model"), **judged["metrics"]}


def iteration_report(iteration: Iteration, options: IterateOptions) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "iteration": iteration.number,
        "queries": len(iteration.queries),
        "generated_with": iteration.start_model if options.recipe == "v1" else str(iteration.generator),
        "model": str(iteration.model_out),
        "data": data_summary(iteration.data),
        "training": training_summary(iteration.model_out),
        "judge": judge_summary(iteration.data) if options.judge_model else None,
    }
    if options.recipe == "v2":
        entry["generator"] = {"queries": len(iteration.generator_queries),
                              "data": data_summary(iteration.generator_data),
                              "training": training_summary(iteration.generator)}
    return entry


def write_report(out: Path, iterations: list[Iteration], options: IterateOptions) -> dict[str, Any]:
    report: dict[str, Any] = {"recipe": options.recipe,
                              "iterations": [iteration_report(it, options) for it in iterations]}
    report["plots"] = write_plots(out, report["iterations"])
    write_json_atomic(out / REPORT_FILE, report)
    return report


def _get(entry: dict[str, Any], *keys: str) -> Any:
    value: Any = entry
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def write_plots(out: Path, entries: list[dict[str, Any]]) -> list[str]:
    """lengths.png: mean tokens of y+, y-, yo and the chosen/rejected ratio per iteration; training.png: final
    loss, reward accuracies, mean W and (when judged) the share of pairs both judge orders agree on."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    folder = out / PLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    x = [entry["iteration"] for entry in entries]

    fig, (lengths, ratio) = plt.subplots(1, 2, figsize=(11, 3.8))
    for (variant, label), marker in zip(VARIANTS.items(), "os^", strict=True):  # markers: equal lines stay visible
        lengths.plot(x, [_get(e, "data", "mean_tokens", variant) for e in entries], marker=marker, label=label,
                     alpha=0.8)
    lengths.set_title("mean response length (kept rows)")
    lengths.set_ylabel("tokens")
    lengths.set_ylim(bottom=0)
    lengths.legend()
    ratio.plot(x, [_get(e, "data", "chosen_rejected_length_ratio") for e in entries], marker="o", color="#8172b2")
    ratio.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ratio.set_title("chosen / rejected length (y+ / y-)")
    _save(fig, x, folder / LENGTH_PLOT)

    fig, (loss, rates) = plt.subplots(1, 2, figsize=(11, 3.8))
    loss.plot(x, [_get(e, "training", "final_loss") for e in entries], marker="o")
    loss.set_title("final training loss")
    for pair in PAIRS:
        rates.plot(x, [_get(e, "training", "accuracy", pair) for e in entries], marker="o",
                   label=f"{pair.upper()} reward accuracy")
    rates.plot(x, [_get(e, "training", "mean_W") for e in entries], marker="s", linestyle=":", label="mean W")
    if any(e.get("judge") for e in entries):
        rates.plot(x, [_get(e, "judge", "both_orders_chosen_rate") for e in entries], marker="^",
                   linestyle="--", label="judge: chosen wins in both orders")
    rates.set_ylim(-0.05, 1.05)
    rates.legend(fontsize="small")
    _save(fig, x, folder / TRAINING_PLOT)
    return [f"{PLOTS_DIR}/{LENGTH_PLOT}", f"{PLOTS_DIR}/{TRAINING_PLOT}"]


def _save(fig: Any, iterations: list[int], path: Path) -> None:
    """Label every panel's x axis with the iterations, then write atomically (never a truncated PNG)."""
    import matplotlib.pyplot as plt

    for axis in fig.axes:
        axis.set_xlabel("iteration")
        axis.set_xticks(iterations)
    fig.tight_layout()
    write_png_atomic(path, fig)
    plt.close(fig)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_rows(entry: dict[str, Any], reasons: list[str], judged: bool) -> list[tuple[str, str]]:
    """(metric, value) of one iteration; the same metrics in the same order for every iteration."""
    data, training, judge = entry.get("data") or {}, entry.get("training") or {}, entry.get("judge") or {}
    rows = [("queries", str(entry["queries"])),
            ("rows kept / dropped", f"{_fmt(data.get('kept'))} / {_fmt(data.get('dropped'))}")]
    rows += [(f"  dropped: {reason}", _fmt((data.get("dropped_by_reason") or {}).get(reason, 0))) for reason in reasons]
    rows += [(f"mean tokens {label}", _fmt(_get(data, "mean_tokens", variant), 1))
             for variant, label in VARIANTS.items()]
    rows += [("chosen/rejected length ratio", _fmt(data.get("chosen_rejected_length_ratio"))),
             ("on-policy-ness (scored)", _fmt(data.get("on_policy"), 4)),
             ("training steps", _fmt(training.get("steps"))),
             ("last logged training loss (step)", f"{_fmt(training.get('final_loss'), 4)} "
                                                  f"({_fmt(training.get('final_loss_step'))})")]
    rows += [(f"reward accuracy {pair.upper()}", percent(_get(training, "accuracy", pair))) for pair in PAIRS]
    rows += [("mean W", _fmt(training.get("mean_W"), 4))]
    if judged:
        rows += [("judge: chosen wins, chosen shown first", percent(judge.get("accuracy_chosen_first"))),
                 ("judge: chosen wins, chosen shown second", percent(judge.get("accuracy_chosen_second"))),
                 ("judge: chosen wins in both orders", percent(judge.get("both_orders_chosen_rate"))),
                 ("judge: position bias", percent(judge.get("position_bias_rate"))),
                 ("judge: unparseable answers", _fmt(judge.get("unparseable")))]
    generator = entry.get("generator")
    if generator is not None:
        gen_data, gen_training = generator.get("data") or {}, generator.get("training") or {}
        rows += [("generator: queries / rows kept", f"{generator['queries']} / {_fmt(gen_data.get('kept'))}"),
                 ("generator: final training loss", _fmt(gen_training.get("final_loss"), 4)),
                 ("generator: reward accuracy P2 / P3", f"{percent(_get(gen_training, 'accuracy', 'p2'))} / "
                                                        f"{percent(_get(gen_training, 'accuracy', 'p3'))}")]
    return rows


def print_report(report: dict[str, Any], console: Console) -> None:
    entries = report["iterations"]
    reasons = sorted({reason for e in entries for reason in (_get(e, "data", "dropped_by_reason") or {})})
    table = Table(title=f"ssogen iterate: report (recipe {report['recipe']})", title_justify="left")
    table.add_column("metric")
    for entry in entries:
        table.add_column(f"iter-{entry['iteration']}", justify="right")
    judged = any(entry.get("judge") for entry in entries)
    columns = [report_rows(entry, reasons, judged) for entry in entries]
    for index, (name, _) in enumerate(columns[0]):
        table.add_row(name, *[column[index][1] for column in columns])
    plots = "plots: " + ", ".join(report["plots"])
    console.print(table)
    console.print(plots, highlight=False, markup=False)
    logger.info("%s\n%s", plain_text(table), plots)  # iterate's log holds its summary too, as plain text
