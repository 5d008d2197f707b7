"""The dataset card: YAML header the Hub and `datasets` understand, provenance, stats, plots, schemas, usage."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.dataset.card import GENERATED_MARKER, render_card, size_category, write_card
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.refresh import refresh
from ssogen.principles import load_library
from ssogen.templating import BUNDLED_TEMPLATES
from ssogen.testing.folders import make_record, write_dataset
from tests.dataset.test_stats import hand_records


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    header = card.split("---\n")[1]
    return YAML(typ="safe").load(header)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    out = write_dataset(tmp_path / "out", hand_records(),
                        library={"name": "default", "version": "1.0", "sha256": "f00d" * 16})
    shutil.copy(load_library("default").path, out / "library.yaml")
    return out


def test_generate_style_card_without_stats_file(dataset: Path) -> None:
    path = write_card(dataset)  # the call generate makes at the end of a run
    card = path.read_text()
    meta = front_matter(card)
    assert [c["config_name"] for c in meta["configs"]] == ["triplets", "dpo", "sso", "reward", "pairs"]
    assert meta["license"] == "unknown"  # set yours in your own card template (see below)
    assert meta["size_categories"] == ["n<1K"]
    assert "text-generation" in meta["task_categories"]
    assert "`tiny-model`" in card
    assert "f00d" * 16 in card
    assert "| Safety | Safe | Unsafe |" in card  # feature table from the stored library
    assert "| temperature | 0.7 |" in card
    # stats are computed on the fly; no plots exist yet so none are linked
    assert "| dropped: `equal_responses` | 2 |" in card
    assert "plots/" not in card


def test_the_card_states_the_three_pairs_with_the_spec_s_chosen_and_rejected(dataset: Path) -> None:
    # SPEC §2.1 step 8: P3 is yo over y+ under x- (the order users are most likely to get wrong).
    card = write_card(dataset).read_text()
    assert "| P1 | x (plain query) | y+ | y- | `dpo`, `reward`, `sso`, `pairs` |" in card
    assert "| P2 | x+ (good system prompt) | y+ | y- | `sso`, `pairs` |" in card
    assert "| P3 | x- (bad system prompt) | yo | y+ | `sso`, `pairs` |" in card


def test_the_card_says_where_the_pairs_prompts_hold_the_system_text(tmp_path: Path) -> None:
    native = write_card(write_dataset(tmp_path / "native", hand_records())).read_text()
    merged = write_card(write_dataset(tmp_path / "merged", hand_records(), system_role_merged=True)).read_text()
    sentence = "the `pairs` prompts of P2 and P3 hold S+ or S- at the top of the user turn"
    assert sentence in merged and sentence not in native


def test_card_after_stats_has_numbers_plots_schemas_usage_and_citation(dataset: Path) -> None:
    stats = refresh(dataset)
    card = (dataset / "README.md").read_text()
    assert "| y+ (good system) | 20.0 | 20.0 | 28.0 |" in card
    assert f"{100 * stats.leakage.rows_any:.1f}%" in card
    assert "| likelihood ordering holds | 66.7% | 50.0% |" in card
    assert "](plots/lengths.png)" in card and "](plots/on_policy.png)" in card
    for config in ("triplets", "dpo", "sso", "reward", "pairs"):
        assert f"### `{config}`" in card
    assert "| `pair` | `string` | which SSO pair the row is: P1 (x: y+ over y-)" in card
    assert 'train_dataset=pairs, processing_class=tokenizer' in card
    assert "| `lp_good_bad` | `double` | mean token log-prob of y+ under x- (set by `ssogen score`) |" in card
    assert "DPOTrainer(" in card and "RewardTrainer(" in card
    assert "arXiv:2410.17131" in card
    assert "## Known limits" in card


def test_load_dataset_still_works_after_stats(dataset: Path, tmp_path: Path) -> None:
    from datasets import load_dataset

    refresh(dataset)
    assert (dataset / "plots" / "lengths.png").exists() and (dataset / "stats.json").exists()
    dpo = load_dataset(str(dataset), "dpo", split="train", cache_dir=str(tmp_path / "cache"))
    assert len(dpo) == 3
    assert dpo[0]["chosen"] == [{"role": "assistant", "content": "Here is a safe plan."}]
    triplets = load_dataset(str(dataset), "triplets", split="train", cache_dir=str(tmp_path / "cache"))
    assert len(triplets) == 6


def test_repo_id_goes_into_loading_snippets(dataset: Path) -> None:
    card = render_card(dataset, repo_id="org/sso-data")
    assert 'load_dataset("org/sso-data", "dpo", split="train")' in card
    assert front_matter(card)["pretty_name"]


def test_the_engine_row_names_the_weights_dtype_the_engine_used(tmp_path: Path) -> None:
    settings = {"dtype": "bfloat16", "max_model_len": 4096}
    out = write_dataset(tmp_path / "out", hand_records(), engine="vllm", engine_settings=settings)
    assert "| engine | vllm (bfloat16 weights) |" in render_card(out)
    older = write_dataset(tmp_path / "older", hand_records(), engine="vllm")  # a manifest without the settings
    assert "| engine | vllm |" in render_card(older)


def test_card_for_a_run_that_kept_nothing(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "empty", [make_record(0, kept=False, drop_reason="equal_responses")])
    refresh(out)
    card = (out / "README.md").read_text()
    assert "| kept (in the pair configs) | 0 |" in card
    assert "| y+ (good system) | – | – | – |" in card


def test_size_categories() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 54_321, 2_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]


def test_hand_written_card_is_left_alone(dataset: Path) -> None:
    (dataset / "README.md").write_text("---\nlicense: mit\n---\n# My own card\n")
    refresh(dataset)
    assert (dataset / "README.md").read_text() == "---\nlicense: mit\n---\n# My own card\n"
    assert (dataset / "stats.json").exists()
    assert write_card(dataset) is None  # nor does the call at the end of generate (or judge) replace it
    assert (dataset / "README.md").read_text() == "---\nlicense: mit\n---\n# My own card\n"
    (dataset / "README.md").unlink()
    write_card(dataset)
    assert "## Funnel" in (dataset / "README.md").read_text()


# -- the card template ------------------------------------------------------------------------------------------

def test_card_renders_from_an_overriding_template_folder(dataset: Path, tmp_path: Path) -> None:
    templates = tmp_path / "my-templates"
    templates.mkdir()
    bundled = (BUNDLED_TEMPLATES / "card.md.jinja").read_text()
    assert "license: {{ license }}" in bundled and "## Known limits" in bundled
    mine = bundled.replace("license: {{ license }}", "license: apache-2.0").replace(
        "## Known limits", "## Known limits\n\n- House rule: review y- by hand before any use.")
    (templates / "card.md.jinja").write_text(mine)
    result = CliRunner().invoke(app, ["stats", str(dataset), "--templates", str(templates), "--no-plots"])
    assert result.exit_code == 0, result.output
    card = (dataset / "README.md").read_text()
    assert front_matter(card)["license"] == "apache-2.0"
    assert "- House rule: review y- by hand before any use." in card
    assert "| Safety | Safe | Unsafe |" in card and "| dropped: `equal_responses` | 2 |" in card  # data still fills it
    assert card.endswith(GENERATED_MARKER + "\n")  # still ssogen's card: a later run may re-render it
    refresh(dataset, plots=False)  # without --templates: the bundled template again
    assert "House rule" not in (dataset / "README.md").read_text()


def test_a_small_card_template_sees_the_folder_data(dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "card.md.jinja").write_text(
        "# {{ name }} from {{ source }}\n{% for c in configs %}{{ c.name }}={{ c.rows }} {% endfor %}\n"
        "kept {{ stats.funnel.kept }}, library {{ library.name }}, model {{ manifest.model }}, "
        "seed {{ raw_manifest['seed'] }}\n")
    card = render_card(dataset, templates=tmp_path, repo_id="org/name")
    assert card == ("# name from org/name\ntriplets=6 dpo=3 sso=3 reward=3 pairs=9 \n"
                    f"kept 3, library default, model tiny-model, seed 7\n\n{GENERATED_MARKER}\n")


def test_a_template_folder_without_the_card_falls_back_to_the_bundled_card(dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "system.jinja").write_text("only the system prompt is mine")
    assert render_card(dataset, templates=tmp_path) == render_card(dataset)


@pytest.mark.parametrize(("text", "fragment"), [
    ("{% if %}", "card.md.jinja:1: template syntax error"),
    ("line one\n{{ no_such_variable }}", "card.md.jinja:2: 'no_such_variable' is undefined"),
])
def test_a_broken_card_template_is_one_line_and_writes_nothing(dataset: Path, tmp_path: Path, text: str,
                                                               fragment: str) -> None:
    (tmp_path / "card.md.jinja").write_text(text)
    result = CliRunner().invoke(app, ["stats", str(dataset), "--templates", str(tmp_path)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert not (dataset / "README.md").exists()
    if "syntax" in fragment:  # found before any work
        assert not (dataset / "stats.json").exists()


def test_a_missing_templates_folder_is_one_line(dataset: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["stats", str(dataset), "--templates", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert f"error: --templates {tmp_path / 'nope'}: no such folder" in result.stderr
    assert not (dataset / "stats.json").exists()


def test_license_examples_and_dataset_info(dataset: Path) -> None:
    card = render_card(dataset)
    assert front_matter(card)["license"] == "unknown"  # ssogen cannot know the license of generated text
    result = CliRunner().invoke(app, ["stats", str(dataset), "--no-plots", "--license", "cc-by-sa-4.0"])
    assert result.exit_code == 0, result.output
    card = (dataset / "README.md").read_text()
    header = front_matter(card)
    assert header["license"] == "cc-by-sa-4.0" and json.loads((dataset / "manifest.json").read_text())[
        "license"] == "cc-by-sa-4.0"
    kept = [r for r in OutputFolder(dataset).read_triplets() if r.kept]
    # A few kept rows, in input order; dropped rows are never shown as examples.
    assert card.count("### Example ") == min(3, len(kept))
    for record in kept[:3]:
        assert record.response_good in card and record.response_bad in card
    info = {entry["config_name"]: entry for entry in header["dataset_info"]}
    assert info["dpo"]["splits"] == [{"name": "train", "num_bytes": info["dpo"]["splits"][0]["num_bytes"],
                                      "num_examples": len(kept)}]
    assert [f["name"] for f in info["dpo"]["features"]] == ["id", "prompt", "chosen", "rejected", "truncated_chosen",
                                                         "truncated_rejected"]
    result = CliRunner().invoke(app, ["stats", str(dataset), "--no-plots", "--license", "Not A License"])
    assert result.exit_code == 2 and "--license: 'Not A License' is not a Hub license id" in result.stderr


def test_the_examples_are_the_first_kept_rows_by_position_across_the_splits(tmp_path: Path) -> None:
    """Chosen from the triplets' columns (not every row as a record): the first three kept rows in input order,
    whichever split holds them, dropped rows never."""
    from ssogen.dataset.splits import SplitSpec

    dropped = {0, 2}
    records = [make_record(i, response_good=f"answer number {i}.", kept=i not in dropped,
                           drop_reason="identical_responses" if i in dropped else None) for i in range(12)]
    out = write_dataset(tmp_path / "out", [])
    OutputFolder(out).write_configs(records, SplitSpec(test_size=0.5, seed=3))
    in_test = {row["position"] for row in OutputFolder(out).read_config("triplets", split="test").to_pylist()}
    assert in_test & {1, 3, 4} and {1, 3, 4} - in_test  # the first kept rows are in both splits
    examples = render_card(out).split("### Example ")[1:]
    assert [re.findall(r"answer number (\d+)\.", part)[0] for part in examples] == ["1", "3", "4"]


def test_code_fences_in_responses_cannot_break_out_of_the_example_block(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "out", [make_record(0, response_good="```python\nx = 1\n```\n# Heading")])
    card = render_card(out)
    assert "````text\n```python\nx = 1\n```\n# Heading\n````" in card


def test_the_card_names_what_the_cheap_filters_dropped(tmp_path: Path) -> None:
    """It said "drop rows with equal responses and note truncation" even where the run dropped truncated and empty
    rows (the defaults), or kept them."""
    default = render_card(write_dataset(tmp_path / "default", hand_records()))
    assert ("Cheap filters drop rows with two equal responses, an empty response or a response cut at the token "
            "limit and flag") in default
    kept = write_dataset(tmp_path / "kept", hand_records(), filters={"keep_truncated": True, "keep_empty": False})
    assert "Cheap filters drop rows with two equal responses or an empty response and flag" in render_card(kept)
    both = write_dataset(tmp_path / "both", hand_records(), filters={"keep_truncated": True, "keep_empty": True})
    assert "Cheap filters drop rows with two equal responses and flag" in render_card(both)
