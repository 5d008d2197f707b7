"""The dataset card: YAML header the Hub and `datasets` understand, provenance, stats, plots, schemas, usage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from ssogen.dataset.card import render_card, size_category, write_card
from ssogen.dataset.stats import refresh
from ssogen.principles import load_library
from ssogen.testing.folders import make_record, write_dataset
from tests.dataset.test_stats import hand_records


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    header = card.split("---\n")[1]
    return YAML(typ="safe").load(header)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    out = write_dataset(tmp_path / "out", hand_records(), license="apache-2.0",
                        library={"name": "default", "version": "1.0", "sha256": "f00d" * 16})
    shutil.copy(load_library("default").path, out / "library.yaml")
    return out


def test_generate_style_card_without_stats_file(dataset: Path) -> None:
    path = write_card(dataset)  # the call generate makes at the end of a run
    card = path.read_text()
    meta = front_matter(card)
    assert [c["config_name"] for c in meta["configs"]] == ["triplets", "dpo", "sso", "reward"]
    assert meta["license"] == "apache-2.0"
    assert meta["size_categories"] == ["n<1K"]
    assert "text-generation" in meta["task_categories"]
    assert "`tiny-model`" in card
    assert "f00d" * 16 in card
    assert "| Safety | Safe | Unsafe |" in card  # feature table from the stored library
    assert "| temperature | 0.7 |" in card
    # stats are computed on the fly; no plots exist yet so none are linked
    assert "| dropped: `equal_responses` | 2 |" in card
    assert "plots/" not in card


def test_card_after_stats_has_numbers_plots_schemas_usage_and_citation(dataset: Path) -> None:
    stats = refresh(dataset)
    card = (dataset / "README.md").read_text()
    assert "| y+ (good system) | 20.0 | 20.0 | 28.0 |" in card
    assert f"{100 * stats.leakage.rows_any:.1f}%" in card
    assert "| likelihood ordering holds | 66.7% | 50.0% |" in card
    assert "](plots/lengths.png)" in card and "](plots/on_policy.png)" in card
    for config in ("triplets", "dpo", "sso", "reward"):
        assert f"### `{config}`" in card
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
    write_card(dataset)  # generate's explicit call still writes the card
    assert "## Funnel" in (dataset / "README.md").read_text()
