"""The dataset card (README.md of the output folder): YAML header declaring the configs, then prose."""

from __future__ import annotations

from pathlib import Path

from ssogen.dataset import card_yaml_header, read_manifest


def write_card(out_dir: str | Path) -> Path:
    """(Re)write OUT/README.md from the manifest (and stats, when present)."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    body = [
        f"# {manifest.get('name', out.name)}",
        "",
        "Synthetic preference data generated with ssogen (Self-Steering Optimization, arXiv 2410.17131).",
        "",
        f"Model: `{manifest.get('model', '?')}`",
    ]
    path = out / "README.md"
    path.write_text(card_yaml_header({"tags": ["ssogen", "sso", "synthetic", "preference"]}) + "\n"
                    + "\n".join(body) + "\n", encoding="utf-8")
    return path
