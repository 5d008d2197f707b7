"""The dataset card (README.md of the output folder), rendered from `templates/card.md.jinja`.

Everything the template sees comes from the folder itself (manifest.json, library.yaml, the parquet files'
row counts and schemas, stats and plots), so re-rendering is always safe. The template, YAML header included,
can be replaced with `--templates DIR` like the prompt templates. Written by `generate` at the end of a run and
refreshed by `stats`, `score` and `push-to-hub`, unless a person wrote the card (no GENERATED_MARKER)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ssogen.dataset.folder import CONFIGS, OutputFolder
from ssogen.dataset.plots import existing_plots
from ssogen.dataset.stats import VARIANT_LABELS, DatasetStats, folder_stats
from ssogen.errors import UserError
from ssogen.io import write_text_atomic
from ssogen.templating import TemplateError, Templates

CARD_TEMPLATE = "card.md.jinja"
# Ends every card ssogen writes, so that tools know they may re-render it (added after the template's text).
GENERATED_MARKER = "<!-- ssogen dataset card: `ssogen stats` and `ssogen score` rewrite this file -->"


class _Selection(BaseModel):
    mode: str | None = None
    features_per_query: int | None = None
    extra_prob: float | None = None
    principle_source: str | None = None


class _LibraryInfo(BaseModel):
    name: str | None = None
    version: str | None = None
    sha256: str | None = None


class CardManifest(BaseModel):
    """The manifest keys the card shows, as `generate` and `score` write them. All optional: a folder built by
    hand, or a card written before the run finished, lacks some; the template leaves those lines out."""

    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    model: str | None = None
    engine: str | None = None
    seed: int | None = None
    versions: dict[str, str | None] = {}
    selection: _Selection = _Selection()
    library: _LibraryInfo = _LibraryInfo()
    sampling: dict[str, Any] = {}
    system_role_merged: bool | None = None
    score: dict[str, Any] | None = None


def size_category(rows: int) -> str:
    """The Hub's size buckets."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if rows < limit:
            return label
    return "n>10M"


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e6 else f"{value:.3g}"
    return str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _cell(value: Any) -> str:
    """A value as one Markdown table cell: dicts and lists spelled out, pipes escaped, one line."""
    return _text(value).replace("|", "\\|").replace("\n", " ")


FILTERS = {"num": _num, "pct": _pct, "cell": _cell}


def card_context(folder: OutputFolder, stats: DatasetStats | None, repo_id: str | None) -> dict[str, Any]:
    """What the card template is rendered from."""
    raw_manifest = folder.read_manifest()
    try:
        manifest = CardManifest.model_validate(raw_manifest)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"{folder.manifest}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    counts = folder.row_counts()
    return {
        "name": manifest.name or (repo_id.split("/")[-1] if repo_id else folder.root.resolve().name),
        "source": repo_id or str(folder.root),  # what the loading snippets pass to load_dataset
        "size_category": size_category(counts.get("triplets", 0)),
        "configs": [{"name": c, "rows": counts.get(c), "data_files": folder.data_files(c)} for c in CONFIGS],
        "manifest": manifest,
        "raw_manifest": raw_manifest,  # every key, for templates of your own
        "library": folder.library(raw_manifest),
        "stats": stats,
        "variants": list(VARIANT_LABELS.items()),
        "schemas": {config: [{"name": f.name, "type": str(f.type)} for f in schema]
                    for config, schema in folder.schemas().items()},
        "plots": existing_plots(folder),
        "judge": folder.read_judge(),  # what `ssogen judge` wrote; None until the folder is judged
    }


def card_templates(templates: str | Path | None = None) -> Templates:
    """The card template (the user's card.md.jinja in `templates` when there is one), compiled: a missing
    folder or a syntax error is one clear line, raised before a command does any work."""
    try:
        folder = Templates(templates, filters=FILTERS)
        folder.check(CARD_TEMPLATE)
    except TemplateError as exc:
        raise UserError(f"--templates: {exc}") from None
    return folder


def render_card(out_dir: str | Path, *, stats: DatasetStats | None = None, repo_id: str | None = None,
                templates: str | Path | None = None) -> str:
    """The card's text. Stats are computed from the triplets when not given (cheap; no plots are drawn,
    existing ones in OUT/plots are linked). `repo_id` goes into the loading snippets (else the folder);
    `templates` is a folder whose card.md.jinja replaces the bundled one."""
    folder = OutputFolder(out_dir)
    if stats is None:
        try:
            stats = folder_stats(folder)
        except UserError:  # no triplets yet (an early card): render without the numbers
            stats = None
    template = card_templates(templates)
    context = card_context(folder, stats, repo_id)
    try:
        text = template.render(CARD_TEMPLATE, **context)
    except TemplateError as exc:
        raise UserError(f"dataset card: {exc}") from None
    return text + "\n\n" + GENERATED_MARKER + "\n"


def card_is_generated(out_dir: str | Path) -> bool:
    """True when OUT/README.md is missing or was written by ssogen (carries the marker): safe to re-render.
    A card a person wrote instead is left alone by `stats`, `score` and `push-to-hub`."""
    path = OutputFolder(out_dir).card
    return not path.exists() or GENERATED_MARKER in path.read_text(encoding="utf-8", errors="replace")


def write_card(out_dir: str | Path, *, stats: DatasetStats | None = None, repo_id: str | None = None,
               templates: str | Path | None = None) -> Path:
    """(Re)write OUT/README.md from the folder's contents; atomically, so a crash keeps the old card."""
    folder = OutputFolder(out_dir)
    return write_text_atomic(folder.card, render_card(folder.root, stats=stats, repo_id=repo_id,
                                                      templates=templates))
