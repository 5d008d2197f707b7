"""Utility commands: `ssogen make-tiny-model` (an offline test model) and `ssogen env` (versions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ssogen.cli.common import console, fail, user_errors, with_default, writes_nothing


@user_errors
def make_tiny_model(
    folder: Annotated[Path, typer.Argument(help="Folder to write the model into.")],
    size: Annotated[str, typer.Option(help="'tiny' (~0.2M parameters) or 'small' (~10M, for benchmarks).",
                                      metavar="[tiny|small]")] = "tiny",
    reject_system_role: Annotated[bool, typer.Option(
        "--reject-system-role", help=with_default("Use a chat template that raises on a system message (like "
                                                  "Gemma's).", "off"), show_default=False)] = False,
    seed: Annotated[int, typer.Option(help="Seed for the random weights.")] = 0,
    base_eos: Annotated[bool, typer.Option(
        "--base-eos", help=with_default("eos <|endoftext|> while the template closes turns with <|im_end|> (like a "
                                        "base model).", "off"), show_default=False)] = False,
) -> None:
    """Build a small Qwen2 model with random weights and a locally trained tokenizer (no download)."""
    from ssogen.io import check_writable_folder
    from ssogen.testing.tiny_model import SETTINGS_FILE, SIZES, build_tiny_model

    if size not in SIZES:
        raise fail(f"--size: unknown size {size!r} (choose from {', '.join(SIZES)})")
    check_writable_folder(folder, flag="make-tiny-model")
    # Rebuilding a tiny model in place is fine; writing config.json and weights over a real model is not.
    if folder.is_dir() and any(folder.iterdir()) and not (folder / SETTINGS_FILE).is_file():
        raise fail(f"make-tiny-model {folder}: folder is not empty and holds no model make-tiny-model wrote (no "
                   f"{SETTINGS_FILE}); choose a new or empty folder")
    try:  # a parent that looks writable may still refuse a new folder (/proc, a full disk)
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"make-tiny-model {folder}: cannot create the folder ({exc.strerror or exc})", code=1) from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar for a one-file model
    out = build_tiny_model(folder, size=size, reject_system_role=reject_system_role, seed=seed,  # type: ignore[arg-type]
                           base_eos=base_eos)
    console.print(f"wrote {size} model to {out}", highlight=False)


@user_errors
def env(
    as_json: Annotated[bool, typer.Option(
        "--json", help=with_default("Print JSON instead of a table.", "off"), show_default=False)] = False,
) -> None:
    """Print versions of python, torch, transformers, vllm (CPU or GPU build) and friends, and CUDA devices."""
    writes_nothing()  # first: a Ctrl-C in the import below says nothing is lost
    from ssogen.envinfo import collect_env

    info = collect_env()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(show_header=False)
    for key, value in info.items():
        table.add_row(key, ("\n".join(value) or "none") if isinstance(value, list) else str(value))
    console.print(table)
