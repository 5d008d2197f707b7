"""Hand-built ssogen output folders for the stats, card, publish and score tests (no model needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssogen.dataset.folder import OutputFolder
from ssogen.records import TripletRecord, row_id


def make_record(position: int, prompt: str = "", **fields: Any) -> TripletRecord:
    """A kept row with short distinct responses; override any field."""
    prompt = prompt or f"question {position}"
    values: dict[str, Any] = {
        "id": row_id(prompt, position), "position": position, "prompt": prompt,
        "features": ["Safety", "Accuracy"], "extra": [], "selection_filled": False,
        "selection_mode": "free", "principle_source": "library",
        "system_good": "be good", "system_bad": "be bad",
        "response_good": f"good answer {position}", "response_bad": f"bad answer {position}",
        "response_raw": f"plain answer {position}",
        "finish_reason_good": "stop", "finish_reason_bad": "stop", "finish_reason_raw": "stop",
        "num_tokens_good": 4, "num_tokens_bad": 4, "num_tokens_raw": 4,
        "seed_good": 1, "seed_bad": 2, "seed_raw": 3, "kept": True,
    }
    values.update(fields)
    return TripletRecord(**values)


def row_counts(out: Path) -> dict[str, int]:
    """Rows per config of a dataset folder, every split, from the parquet footers."""
    return {config: sum(n for n, _ in sizes.values()) for config, sizes in OutputFolder(out).split_sizes().items()}


def write_dataset(out: Path, records: list[TripletRecord], **manifest: Any) -> Path:
    """An output folder as generate leaves it: the five configs and a manifest (status complete by default)."""
    folder = OutputFolder(out)
    folder.write_configs(records, system_supported=not manifest.get("system_role_merged", False))
    data = {"model": "tiny-model", "status": "complete", "seed": 7,
            "sampling": {"temperature": 0.7, "top_p": 0.8, "max_tokens": 64},
            "library": {"name": "default", "version": "1.0", "sha256": "ab" * 32}}
    data.update(manifest)
    folder.write_manifest(data)
    return out


# The folder of the issue-10 report: a person's project, which `--out . --overwrite` once emptied.
PROJECT_FILES = {"README.md": "# my project", "data/train.csv": "a,b\n", "logs/run.log": "x", "stats.json": "{}",
                 "plots/figure.png": "png"}


def write_project_folder(root: Path) -> Path:
    """A folder of files a person wrote, with names ssogen also uses (README.md, data/, logs/, plots/)."""
    for name, text in PROJECT_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under the folder with its bytes (None for a folder): equal snapshots = nothing touched."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def damage_pages(file: Path) -> None:
    """Flip every byte of each column chunk of a parquet file, its footer left intact: the schema and row counts
    still read, while no page decodes (a file damaged inside, found only by reading its rows)."""
    import pyarrow.parquet as pq

    data, metadata = bytearray(file.read_bytes()), pq.read_metadata(file)
    for group in range(metadata.num_row_groups):
        for index in range(metadata.num_columns):
            chunk = metadata.row_group(group).column(index)
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            data[start:start + chunk.total_compressed_size] = bytes(b ^ 0x5A for b in
                                                                     data[start:start + chunk.total_compressed_size])
    file.write_bytes(bytes(data))
