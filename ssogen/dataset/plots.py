"""PNG plots of a dataset for OUT/plots/: response lengths per variant and, once scored, on-policy-ness.

matplotlib is imported only here and only when a plot is drawn (it costs a second at import)."""

from __future__ import annotations

import math

from ssogen.dataset.folder import PLOTS, OutputFolder
from ssogen.dataset.stats import VARIANT_LABELS, StatsBuilder
from ssogen.io import write_png_atomic
from ssogen.records import VARIANTS

LENGTH_PLOT = "lengths.png"
ON_POLICY_PLOT = "on_policy.png"


def write_plots(folder: OutputFolder, numbers: StatsBuilder) -> list[str]:
    """Histograms of the kept rows, from the numbers the statistics gathered: token lengths per variant, and
    exp(avg log-prob | x) when scored. Returns the paths written, relative to the folder (the card links them that
    way)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    written: list[str] = []

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
    for axis, variant in zip(axes, VARIANTS, strict=True):
        values = numbers.tokens[variant]
        axis.hist(values, bins=min(30, max(1, len(set(values)))), color="#4c72b0")
        axis.set_title(VARIANT_LABELS[variant])
        axis.set_xlabel("tokens")
    axes[0].set_ylabel("responses (kept rows)")
    fig.tight_layout()
    write_png_atomic(folder.plots / LENGTH_PLOT, fig)
    plt.close(fig)
    written.append(f"{PLOTS}/{LENGTH_PLOT}")

    scored = numbers.plain_kept  # (lp(y+|x), lp(y-|x)) of the scored kept rows
    on_policy_path = folder.plots / ON_POLICY_PLOT
    if scored:
        fig, axis = plt.subplots(figsize=(6, 3.5))
        for index, variant, color in ((0, "good", "#55a868"), (1, "bad", "#c44e52")):
            axis.hist([math.exp(pair[index]) for pair in scored], bins=20, range=(0, 1),
                      alpha=0.6, color=color, label=VARIANT_LABELS[variant])
        axis.set_xlabel("exp(mean token log-prob) under the plain query")
        axis.set_ylabel("responses (kept rows)")
        axis.legend()
        fig.tight_layout()
        write_png_atomic(on_policy_path, fig)
        plt.close(fig)
        written.append(f"{PLOTS}/{ON_POLICY_PLOT}")
    elif on_policy_path.exists():
        on_policy_path.unlink()  # stale plot from an earlier scored state would contradict the card
    return written


def existing_plots(folder: OutputFolder) -> list[str]:
    """The plots present in the folder, relative to it, in drawing order (what the card links)."""
    return [f"{PLOTS}/{name}" for name in (LENGTH_PLOT, ON_POLICY_PLOT) if (folder.plots / name).exists()]
