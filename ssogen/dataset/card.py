"""The dataset card (README.md of the output folder), rendered from `templates/card.md.jinja`.

Everything the template sees comes from the folder itself (manifest.json, library.yaml, the parquet files'
row counts and schemas, a few example rows, stats and plots), so re-rendering is always safe. The YAML header
carries the license, the configs with their splits and the `dataset_info` block (features and split sizes), which
`datasets` checks against the files: it must be re-rendered whenever the rows change, as every command that
changes them does. The template, YAML header included,
can be replaced with `--templates DIR` like the prompt templates. Written by `generate` at the end of a run and
refreshed by `stats`, `score` and `push-to-hub`, unless a person wrote the card (no GENERATED_MARKER)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ssogen.dataset import stats_cache
from ssogen.dataset.configs import configs_of, yaml_features
from ssogen.dataset.folder import CARD_MARKER, OutputFolder
from ssogen.dataset.license import LICENSE_DEFAULT
from ssogen.dataset.plots import existing_plots
from ssogen.dataset.splits import SPLITS
from ssogen.dataset.stats import VARIANT_LABELS, DatasetStats, folder_stats
from ssogen.dataset.triplet_files import as_records, rows_at
from ssogen.errors import UserError
from ssogen.formatting import percent
from ssogen.io import write_text_atomic
from ssogen.templating import TemplateError, Templates

logger = logging.getLogger(__name__)

CARD_TEMPLATE = "card.md.jinja"
# Ends every card ssogen writes, so that tools know they may re-render it (added after the template's text).
GENERATED_MARKER = CARD_MARKER


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
    license: str | None = None
    model: str | None = None
    model_origin: str | None = None
    model_fingerprint: str | None = None
    engine: str | None = None
    engine_settings: dict[str, Any] | None = None
    seed: int | None = None
    versions: dict[str, str | None] = {}
    selection: _Selection = _Selection()
    library: _LibraryInfo = _LibraryInfo()
    sampling: dict[str, Any] = {}
    system_role_merged: bool | None = None
    score: dict[str, Any] | None = None
    split: dict[str, Any] | None = None


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


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _cell(value: Any) -> str:
    """A value as one Markdown table cell: dicts and lists spelled out, pipes escaped, one line."""
    return _text(value).replace("|", "\\|").replace("\n", " ")


def _yaml(value: Any) -> str:
    """Data as block YAML (the `dataset_info` of the header), without a trailing newline."""
    from ruamel.yaml import YAML

    stream = StringIO()
    yaml = YAML()  # round-trip: keys stay in the order written (name before dtype, as `datasets` writes them)
    yaml.default_flow_style = False
    yaml.dump(value, stream)
    return stream.getvalue().rstrip("\n")


def _fence(text: str) -> str:
    """Text in a fenced block whose fence is longer than any run of backticks inside it."""
    longest, run = 0, 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _shorten(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


FILTERS: dict[str, Callable[..., str]] = {"num": _num, "pct": percent, "cell": _cell, "yaml": _yaml, "fence": _fence,
                                          "shorten": _shorten}
EXAMPLE_ROWS = 3  # kept rows shown in the card, in input order


def _configs(folder: OutputFolder, held: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The header's `configs` (each with its splits and their file patterns) and its `dataset_info` (features
    and split sizes of every config whose files can be read)."""
    sizes, schemas = folder.split_sizes(), folder.schemas()
    configs, info = [], []
    for config in held:
        found = sizes.get(config, {})
        named = any(p.name.startswith(f"{s}-") for paths in folder.split_files(config).values() for p in paths
                    for s in SPLITS)
        splits = [{"name": s, "rows": found[s][0], "data_files": folder.data_files(config, s if named else None)}
                  for s in SPLITS if s in found] or [{"name": "train", "rows": None,
                                                      "data_files": folder.data_files(config)}]
        configs.append({"name": config, "rows": sum(n for n, _ in found.values()) if found else None,
                        "data_files": folder.data_files(config), "splits": splits})
        if found and config in schemas:
            info.append({
                "config_name": config, "features": yaml_features(schemas[config]),
                "splits": [{"name": s, "num_bytes": found[s][1], "num_examples": found[s][0]}
                           for s in SPLITS if s in found],
                "download_size": sum(p.stat().st_size for ps in folder.split_files(config).values() for p in ps),
                "dataset_size": sum(b for _, b in found.values()),
            })
    return configs, info


def _examples(folder: OutputFolder) -> list[dict[str, Any]]:
    """The first few kept rows by input position, for the card (none when the triplets cannot be read). Chosen from
    two columns: only those rows are read whole (all of them took GBs at 1M rows, for three)."""
    import pyarrow.compute as pc

    try:
        table = folder.read_config("triplets", columns=["kept", "position"])
        kept = pc.indices_nonzero(pc.fill_null(table["kept"], False))
        first = kept.take(pc.sort_indices(table["position"].take(kept))[:EXAMPLE_ROWS]).to_pylist()
        rows = rows_at(folder.paths("triplets"), first)
    except UserError:
        return []
    return [record.model_dump(include={"id", "prompt", "features", "extra", "response_good", "response_bad",
                                       "response_raw"}) for record in as_records(rows)]


def card_context(folder: OutputFolder, stats: DatasetStats | None, repo_id: str | None) -> dict[str, Any]:
    """What the card template is rendered from."""
    raw_manifest = folder.read_manifest()
    try:
        manifest = CardManifest.model_validate(raw_manifest)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"{folder.manifest}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    configs, dataset_info = _configs(folder, configs_of(raw_manifest))
    return {
        "name": manifest.name or (repo_id.split("/")[-1] if repo_id else folder.root.resolve().name),
        # What the loading snippets pass to load_dataset: the repo, or the folder's name (never its local path).
        "source": repo_id or folder.root.resolve().name,
        "license": manifest.license or LICENSE_DEFAULT,
        "size_category": size_category(next((c["rows"] or 0 for c in configs if c["name"] == "triplets"), 0)),
        "configs": configs,
        "dataset_info": dataset_info,
        "has_pairs": any(c["name"] == "pairs" for c in configs),  # not in folders written before it existed
        "has_test_split": any(s["name"] == "test" for c in configs for s in c["splits"]),
        "examples": _examples(folder),
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
    folder = Templates(templates, filters=FILTERS)  # its own error names --templates
    try:
        folder.check(CARD_TEMPLATE)
    except TemplateError as exc:
        raise UserError(f"--templates: {exc}") from None
    return folder


def _triplet_stats(folder: OutputFolder) -> DatasetStats | None:
    """The statistics of the folder's triplets: kept ones that still describe them, else read from the rows."""
    kept = stats_cache.load(folder)
    if kept is not None:
        return kept
    try:
        return folder_stats(folder)
    except UserError:  # no triplets yet (an early card): render without the numbers
        return None


def render_card(out_dir: str | Path, *, stats: DatasetStats | None = None, repo_id: str | None = None,
                templates: str | Path | None = None) -> str:
    """The card's text. Stats, when not given, are those kept when the card was last written if they still
    describe the triplets (`stats_cache`), else computed from them (no plots are drawn, existing ones in
    OUT/plots are linked). `repo_id` goes into the loading snippets (else the folder); `templates` is a folder
    whose card.md.jinja replaces the bundled one."""
    folder = OutputFolder(out_dir)
    stats = stats if stats is not None else _triplet_stats(folder)
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
    return OutputFolder(out_dir).card_is_generated()


def write_card(out_dir: str | Path, *, stats: DatasetStats | None = None, repo_id: str | None = None,
               templates: str | Path | None = None) -> Path | None:
    """(Re)write OUT/README.md from the folder's contents; atomically, so a crash keeps the old card. A card a
    person wrote is left as it is (None; a warning says so): generate and judge, too, keep it."""
    folder = OutputFolder(out_dir)
    if not folder.card_is_generated():
        logger.warning("%s is a card written by hand: left as it is (remove it to get ssogen's card from "
                       "`ssogen stats`)", folder.card)
        return None
    stats = stats if stats is not None else _triplet_stats(folder)
    written = write_text_atomic(folder.card, render_card(folder.root, stats=stats, repo_id=repo_id,
                                                         templates=templates))
    if stats is not None:  # the next render (a push, a dry run) need not read every row again
        stats_cache.store(folder, stats)
    return written
