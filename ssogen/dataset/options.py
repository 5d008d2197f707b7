"""The options of `ssogen stats` and `ssogen push-to-hub`, each defined once as a settings field (its flag, help
with the default and check: `ssogen.settings.option`), and the card options that `ssogen score` shares with them.
Neither command reads a config file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ssogen.settings import command_settings, option


def templates_option(when: str) -> Any:
    """The `--templates FOLDER` option of a command that writes the card."""
    return option(None, f"Folder whose card.md.jinja replaces the bundled dataset card template {when} (as for the "
                  "prompt templates of generate).", metavar="FOLDER")


def license_option(when: str) -> Any:
    """The `--license ID` option of a command that writes the card (the card is rendered from the manifest)."""
    return option(None, f"Set the dataset's license {when}: a Hub license id (apache-2.0, cc-by-4.0, mit, other, "
                  "...); recorded in the manifest.", flags=("--license",), default_text="as generated")


@command_settings("ssogen stats")
class StatsOptions(BaseModel):
    """Every option of `ssogen stats`."""

    model_config = ConfigDict(extra="forbid")

    as_json: bool = option(False, "Print the statistics as JSON instead of tables.", flags=("--json",))
    plots: bool = option(True, "Draw PNG plots into FOLDER/plots/.")
    card: bool = option(True, "Refresh the dataset card (FOLDER/README.md) unless a person wrote it.")
    templates: Path | None = templates_option("when the card is refreshed")
    license_id: str | None = license_option("before the card is refreshed")


@command_settings("ssogen push-to-hub")
class PushOptions(BaseModel):
    """Every option of `ssogen push-to-hub`."""

    model_config = ConfigDict(extra="forbid")

    repo_id: str = option(..., "Dataset repository, ORG/NAME.")
    private: bool = option(False, "Create the repository as private.", flags=("--private",))
    revision: str | None = option(None, "Branch to commit to (created if missing).", default_text="main")
    commit_message: str | None = option(None, "Commit summary.",
                                        default_text="Upload ssogen dataset (N pairs, M files)")
    token: str | None = option(None, "Hub token with write access. Never printed.",
                               default_text="HF_TOKEN or the cached login")
    dry_run: bool = option(False, "List the files and show the card; contact nothing.", flags=("--dry-run",))
    allow_incomplete: bool = option(False, "Push even an unfinished run or pair configs with empty responses.",
                                    flags=("--allow-incomplete",))
    templates: Path | None = templates_option("when the card is re-rendered for the repository")
    license_id: str | None = license_option("before the card is rendered for the repository")
