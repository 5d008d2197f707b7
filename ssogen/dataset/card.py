"""The dataset card (README.md of the output folder): YAML header declaring the configs, then prose.

Written by `generate` at the end of a run and refreshed by `stats` and `score`. Everything comes from the
folder itself (manifest.json, library.yaml, the parquet files, stats and plots), so re-rendering is safe.
The manifest is read tolerantly: a missing key leaves its line out instead of failing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ssogen.dataset.folder import CONFIGS, card_yaml_header, config_file, read_manifest, read_triplets
from ssogen.dataset.stats import (
    LENGTH_PLOT,
    ON_POLICY_PLOT,
    PLOTS_DIR,
    VARIANT_LABELS,
    VARIANTS,
    DatasetStats,
    compute_stats,
    library_adjectives,
)
from ssogen.errors import UserError
from ssogen.judge.card import judge_card_lines

CARD = "README.md"
# Marks cards that ssogen wrote, so that tools know they may re-render them.
GENERATED_MARKER = "<!-- ssogen dataset card: `ssogen stats` and `ssogen score` rewrite this file -->"

CONFIG_DESCRIPTIONS = {
    "triplets": "one row per query: chosen principles, both system prompts, the three responses, flags, "
                "token counts, seeds and (once scored) log-probs; dropped rows included with their reason",
    "dpo": "pair P1 in TRL's conversational format with an explicit prompt (plain query, y+ over y-)",
    "sso": "what `ssogen train` reads: query, S+, S-, y+, y-, yo (all three SSO pairs are built from it)",
    "reward": "full conversations (query + answer) for TRL's RewardTrainer, y+ over y-",
}

COLUMN_DESCRIPTIONS = {
    "id": "stable row id (hash of position and prompt)",
    "position": "index of the query in the input",
    "prompt": "the user query x (plain text in triplets/sso; a message list in dpo)",
    "features": "principles the policy chose for this query",
    "extra": "always-available extra principles added at random",
    "selection_filled": "true when the policy named fewer valid features than needed and the rest were drawn",
    "selection_mode": "how features were selected (free text or constrained decoding)",
    "principle_source": "where the principle texts came from (library or model-written)",
    "principle_fallback": "true when model-written principles failed to parse and library text was used",
    "system_good": "S+, the good contrastive system prompt",
    "system_bad": "S-, the bad contrastive system prompt",
    "response_good": "y+, sampled under S+",
    "response_bad": "y-, sampled under S-",
    "response_raw": "yo, sampled under the plain query",
    "chosen": "preferred answer (message list)",
    "rejected": "dispreferred answer (message list)",
    "kept": "false when a filter dropped the row (pair configs hold kept rows only)",
    "drop_reason": "why the row was dropped",
    "flags": "notes such as truncated or stripped prefixes",
    "finish_reason_good": "why sampling of y+ stopped ('length' = cut at the token limit)",
    "finish_reason_bad": "why sampling of y- stopped",
    "finish_reason_raw": "why sampling of yo stopped",
    "num_tokens_good": "length of y+ in tokens of the policy's tokenizer",
    "num_tokens_bad": "length of y- in tokens",
    "num_tokens_raw": "length of yo in tokens",
    "seed_good": "sampling seed of y+ (derived from the run seed, row id and variant)",
    "seed_bad": "sampling seed of y-",
    "seed_raw": "sampling seed of yo",
    "truncated_good": "true when y+ was cut at the token limit (training then adds no end-of-turn token)",
    "truncated_bad": "true when y- was cut at the token limit",
    "truncated_raw": "true when yo was cut at the token limit",
}

TASK_CATEGORIES = ["text-generation"]


def size_category(rows: int) -> str:
    """The Hub's size buckets."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if rows < limit:
            return label
    return "n>10M"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e6 else f"{value:.3g}"
    return str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |")
    return lines


def _library_info(manifest: dict[str, Any]) -> dict[str, Any]:
    info = manifest.get("library")
    result: dict[str, Any] = dict(info) if isinstance(info, dict) else ({"name": info} if info else {})
    for key in ("library_sha256", "sha256"):
        if key in manifest and "sha256" not in result:
            result["sha256"] = manifest[key]
    return result


def _library_features(out: Path, manifest: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(name, good adjective, bad adjective, meaning) from the library stored in the folder, if readable."""
    from ssogen.principles import LibraryError, load_library

    candidates = [str(out / "library.yaml")] if (out / "library.yaml").exists() else []
    info = _library_info(manifest)
    candidates += [str(info[k]) for k in ("path", "source") if info.get(k)]
    for candidate in candidates:
        try:
            library = load_library(candidate).library
        except (LibraryError, OSError):
            continue
        rows = [(f.name, f.adjectives.good, f.adjectives.bad, f.meaning) for f in library.features]
        rows += [(f"{e.name} (extra, p={e.probability:g})", e.adjectives.good, e.adjectives.bad, e.meaning)
                 for e in library.extras]
        return rows
    return []


def _schema_lines(out: Path) -> list[str]:
    lines: list[str] = []
    for config in CONFIGS:
        path = config_file(out, config)
        if not path.exists():
            continue
        try:
            schema = pq.read_schema(path)
        except Exception:  # a corrupt file is reported by the commands that read rows; the card skips it
            continue
        lines += ["", f"### `{config}`", "", CONFIG_DESCRIPTIONS.get(config, ""), ""]
        lines += _table(["column", "type", "meaning"],
                        [(f"`{f.name}`", f"`{f.type}`", COLUMN_DESCRIPTIONS.get(f.name, _lp_meaning(f.name)))
                         for f in schema])
    return lines


def _lp_meaning(column: str) -> str:
    names = {"good": "y+", "bad": "y-", "raw": "yo"}
    parts = column.split("_")
    if len(parts) == 3 and parts[0] == "lp":
        context = {"plain": "x", "good": "x+", "bad": "x-"}.get(parts[2], parts[2])
        return f"mean token log-prob of {names.get(parts[1], parts[1])} under {context} (set by `ssogen score`)"
    return ""


def _counts(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for config in CONFIGS:
        path = config_file(out, config)
        try:
            counts[config] = pq.read_metadata(path).num_rows
        except Exception:  # missing or unreadable: leave it out of the table
            continue
    return counts


def _plot_links(out: Path) -> list[tuple[str, str]]:
    shown = []
    for name, caption in ((LENGTH_PLOT, "Response lengths (tokens) per variant"),
                          (ON_POLICY_PLOT, "exp(mean token log-prob) of y+ and y- under the plain query")):
        relative = f"{PLOTS_DIR}/{name}"
        if (out / relative).exists():
            shown.append((relative, caption))
    return shown


def _stats_lines(out: Path, stats: DatasetStats) -> list[str]:
    f = stats.funnel
    lines = ["## Funnel", ""]
    lines += _table(["stage", "rows"], [("rows generated", f.rows_in), ("kept (in the pair configs)", f.kept),
                                        ("dropped", f.dropped)]
                    + [(f"dropped: `{reason}`", n) for reason, n in f.dropped_by_reason.items()])
    if f.flags:
        lines += ["", "Flags (all rows): " + ", ".join(f"`{k}` {v}" for k, v in f.flags.items())]
    lines += ["", "## Statistics of the kept rows", "", "Response lengths:", ""]
    rows = []
    for variant in VARIANTS:
        t, c = stats.lengths.tokens[variant], stats.lengths.characters[variant]
        rows.append((VARIANT_LABELS[variant], _fmt(t.mean, 1), _fmt(t.median, 1), _fmt(t.p90, 1),
                     _fmt(c.mean, 1), _fmt(c.median, 1), _fmt(c.p90, 1)))
    lines += _table(["response", "tokens mean", "median", "p90", "characters mean", "median", "p90"], rows)
    b = stats.length_bias
    lines += ["", "Length bias (chosen y+ against rejected y-): mean-length ratio "
              f"{_fmt(b.ratio_tokens)} in tokens, {_fmt(b.ratio_characters)} in characters; chosen is longer in "
              f"{_pct(b.share_chosen_longer_tokens)} of pairs (tokens).", ""]
    d, leak, trunc = stats.duplicates, stats.leakage, stats.truncation
    lines += _table(["check", *[VARIANT_LABELS[v] for v in VARIANTS], "any"], [
        ("duplicate responses (rows)", *[d.responses[v] for v in VARIANTS], "–"),
        ("leakage (names a principle, adjective or 'guideline')", *[_pct(leak.rate[v]) for v in VARIANTS],
         _pct(leak.rows_any)),
        ("truncated at the token limit", *[_pct(trunc.rate[v]) for v in VARIANTS], _pct(trunc.rows_any)),
    ])
    lines += ["", f"Duplicate prompts: {d.prompts}. Rows with two equal responses: "
              f"{d.rows_with_equal_responses}."]
    if stats.features:
        lines += ["", "Principles chosen: " + ", ".join(f"{k} {v}" for k, v in stats.features.items())
                  + (". Extras: " + ", ".join(f"{k} {v}" for k, v in stats.extras.items()) if stats.extras
                     else ". Extras: none") + "."]
    s = stats.scoring
    if s is not None:
        lines += ["", "Scored with `ssogen score` (mean token log-probs under x, x+ and x-):", ""]
        lines += _table(["metric", "kept rows", "all scored rows"], [
            ("rows", s.scored_kept_rows, s.scored_rows),
            ("on-policy-ness: mean exp(avg log-prob) of y+ and y- under x", _fmt(s.on_policy_kept),
             _fmt(s.on_policy_all)),
            ("likelihood ordering holds", _pct(s.ordering_holds_kept), _pct(s.ordering_holds_all)),
        ])
    plots = _plot_links(out)
    if plots:
        lines += [""]
        for relative, caption in plots:
            lines += [f"![{caption}]({relative})", ""]
    return lines


def _how_made_lines(out: Path, manifest: dict[str, Any]) -> list[str]:
    lines = ["## How it was made", ""]
    selection = manifest.get("selection") if isinstance(manifest.get("selection"), dict) else {}
    model = manifest.get("model")
    if isinstance(model, dict):
        model = model.get("name") or model.get("path") or model.get("id")
    facts: list[tuple[str, Any]] = [
        ("model (policy)", f"`{model}`" if model else None),
        ("engine", manifest.get("engine")),
        ("ssogen version", _ssogen_version(manifest)),
        ("seed", manifest.get("seed", manifest.get("seeds"))),
        ("features per query (k)", selection.get("features_per_query", manifest.get("k"))),
        ("extra-principle probability (q)", selection.get("extra_prob", manifest.get("extra_probability"))),
        ("feature selection mode", selection.get("mode", manifest.get("selection_mode"))),
        ("principle source", selection.get("principle_source", manifest.get("principle_source"))),
        ("chat template without system role (system merged into the user turn)",
         manifest.get("system_role_merged")),
        ("created", manifest.get("created_at") or manifest.get("started_at")),
        ("finished", manifest.get("finished_at")),
    ]
    library = _library_info(manifest)
    if library:
        label = " ".join(str(library[k]) for k in ("name", "version") if library.get(k)) or "library"
        sha = f" (sha256 `{library['sha256']}`)" if library.get("sha256") else ""
        facts.insert(1, ("principle library", f"{label}{sha}"))
    lines += _table(["setting", "value"], [(k, _value_text(v)) for k, v in facts if v not in (None, "", {})])
    sampling = manifest.get("sampling")
    if isinstance(sampling, dict) and sampling:
        lines += ["", "Sampling:", ""]
        lines += _table(["parameter", "value"], [(k, _value_text(v)) for k, v in sampling.items()])
    score = manifest.get("score")
    if isinstance(score, dict) and score:
        lines += ["", "Scoring (`ssogen score`):", ""]
        lines += _table(["setting", "value"], [(k, _value_text(score[k])) for k in
                                               ("model", "engine", "convention", "filter", "rows_scored")
                                               if score.get(k) is not None])
    features = _library_features(out, manifest)
    if features:
        lines += ["", "Principle features (the library stored beside the data as `library.yaml`):", ""]
        lines += _table(["feature", "good", "bad", "meaning"], features)
    lines += ["", "For each query the policy picks the most relevant features, ssogen writes a good system "
              "prompt S+ and a bad one S- from their principles, and the same policy answers three times: "
              "under S+ (y+), under S- (y-) and with no system prompt (yo). Cheap filters drop rows with equal "
              "responses and note truncation; the optional likelihood filter keeps rows whose log-probs move "
              "the expected way under the two system prompts."]
    return lines


def _ssogen_version(manifest: dict[str, Any]) -> Any:
    versions = manifest.get("versions")
    nested = versions.get("ssogen") if isinstance(versions, dict) else None
    return manifest.get("ssogen_version") or nested


def _value_text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_value_text(v) for v in value)
    return str(value)


def _usage_lines(source: str) -> list[str]:
    return ["## Loading", "", "```python", "from datasets import load_dataset", "",
            f'dpo = load_dataset("{source}", "dpo", split="train")        # prompt / chosen / rejected',
            f'reward = load_dataset("{source}", "reward", split="train")  # chosen / rejected conversations',
            f'triplets = load_dataset("{source}", "triplets", split="train")', "```", "",
            "DPO (or IPO with `loss_type=\"ipo\"`) with TRL:", "", "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "from trl import DPOConfig, DPOTrainer", "",
            'model = AutoModelForCausalLM.from_pretrained("<the policy model>")',
            'tokenizer = AutoTokenizer.from_pretrained("<the policy model>")',
            'trainer = DPOTrainer(model=model, args=DPOConfig(output_dir="dpo-out", beta=0.1),',
            "                     train_dataset=dpo, processing_class=tokenizer)",
            "trainer.train()", "```", "", "A reward model with TRL:", "", "```python",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "from trl import RewardConfig, RewardTrainer", "",
            'model = AutoModelForSequenceClassification.from_pretrained("<base model>", num_labels=1)',
            'tokenizer = AutoTokenizer.from_pretrained("<base model>")',
            'trainer = RewardTrainer(model=model, args=RewardConfig(output_dir="rm-out"),',
            "                        train_dataset=reward, processing_class=tokenizer)",
            "trainer.train()", "```", "",
            "The full SSO objective (all three pairs with the W weight) is `ssogen train` on the `sso` config."]


LIMITS = [
    "## Known limits", "",
    "- Self-generated: every response comes from the policy model named above, with no human or stronger-model "
    "check. Preferences follow from the contrastive system prompts, not from judgments, so some pairs are wrong "
    "or nearly equal.",
    "- On-policy for one model: the responses are near the distribution of that model at generation time. They "
    "are less useful (off-policy) for other models and for later iterations of the same model.",
    "- The bad system prompt asks for deliberately worse answers; y- can contain unhelpful, inaccurate or unsafe "
    "text. Do not use y- as a response to show to users.",
    "- Leakage and length bias are measured above with simple word matching and length counts; they are hints, "
    "not guarantees.",
]

CITATION = [
    "## Citation", "",
    "Self-Steering Optimization (SSO), the method this data follows:", "", "```bibtex",
    "@inproceedings{xiang2025sso,",
    "  title     = {Self-Steering Optimization: Autonomous Preference Optimization for Large Language Models},",
    "  author    = {Xiang, Hao and Yu, Bowen and Lin, Hongyu and Lu, Keming and Lu, Yaojie and Han, Xianpei and",
    "               He, Ben and Sun, Le and Zhou, Jingren and Lin, Junyang},",
    "  booktitle = {Findings of the Association for Computational Linguistics: ACL 2025},",
    "  pages     = {9073--9085},",
    "  year      = {2025},",
    "  note      = {arXiv:2410.17131}",
    "}", "```",
]


def render_card(out_dir: str | Path, *, stats: DatasetStats | None = None, repo_id: str | None = None,
                license: str | None = None) -> str:
    """The card's text. Stats are computed from the triplets when not given (cheap; no plots are drawn,
    existing ones in OUT/plots are linked). `repo_id` goes into the loading snippets (else the folder)."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    if stats is None:
        try:
            stats = compute_stats(read_triplets(out), library_adjectives(out, manifest))
        except UserError:  # no triplets yet (an early card): render without the numbers
            stats = None
    counts = _counts(out)
    name = manifest.get("name") or (repo_id.split("/")[-1] if repo_id else out.resolve().name)
    license_id = license or manifest.get("license") or "unknown"
    header = card_yaml_header({
        "pretty_name": str(name),
        "license": license_id,
        "task_categories": TASK_CATEGORIES,
        "tags": ["ssogen", "sso", "synthetic", "preference", "dpo", "reward-modeling"],
        "size_categories": [size_category(counts.get("triplets", 0))],
    })
    body = [
        f"# {name}", "",
        "Synthetic preference data made with ssogen following Self-Steering "
        "Optimization (SSO, arXiv 2410.17131): one policy model answers each query three times, under a "
        "good contrastive system prompt (y+), a bad one (y-) and none (yo), and the answers form preference "
        "pairs without human labels.", "",
        "| pair | prompt | chosen | rejected | where |", "|---|---|---|---|---|",
        "| P1 | x (plain query) | y+ | y- | `dpo`, `reward`, `sso` |",
        "| P2 | x+ (good system prompt) | y+ | y- | `sso` |",
        "| P3 | x- (bad system prompt) | yo | y+ | `sso` |", "",
        "## Configs", "",
    ]
    body += _table(["config", "rows", "contents"],
                   [(f"`{c}`", counts.get(c, "–"), CONFIG_DESCRIPTIONS[c]) for c in CONFIGS])
    body += [""] + _how_made_lines(out, manifest) + [""]
    if stats is not None:
        body += _stats_lines(out, stats) + [""]
    # --- judge section: written by `ssogen judge` (ssogen/judge/card.py), absent until a folder is judged
    judged = judge_card_lines(out)
    body += judged + ([""] if judged else [])
    body += ["## Columns"] + _schema_lines(out) + [""]
    body += _usage_lines(repo_id or str(out)) + [""] + LIMITS + [""] + CITATION + ["", GENERATED_MARKER]
    return header + "\n" + "\n".join(body) + "\n"


def card_is_generated(out_dir: str | Path) -> bool:
    """True when OUT/README.md is missing or was written by ssogen (carries the marker): safe to re-render.
    A card a person wrote instead is left alone by `stats`, `score` and `push-to-hub`."""
    path = Path(out_dir) / CARD
    return not path.exists() or GENERATED_MARKER in path.read_text(encoding="utf-8", errors="replace")


def write_card(out_dir: str | Path, *, stats: DatasetStats | None = None, repo_id: str | None = None,
               license: str | None = None) -> Path:
    """(Re)write OUT/README.md from the folder's contents; atomically, so a crash keeps the old card."""
    out = Path(out_dir)
    path = out / CARD
    text = render_card(out, stats=stats, repo_id=repo_id, license=license)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
