"""What a model is, not where it is: `model_fingerprint` hashes the parts that decide a model's outputs from file
reads alone (no transformers), so that a generate run, a training run, a score cache or a reference cache never
mixes two models, and a refusal can name the part that changed. Reading the weight files also finds a copy cut
short (one clear line instead of a loader's traceback)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ssogen.errors import UserError
from ssogen.models import (
    CHAT_TEMPLATE_FILES,
    TOKENIZER_FILES,
    WEIGHT_SUFFIXES,
    ModelRef,
    ask_hub,
    hub_offline,
    neither_folder_nor_hub,
    require_available,
)

# Blocks read from each weight file: together with the names, sizes and safetensors headers they tell two
# checkpoints of one architecture apart without reading gigabytes.
SAMPLED_BLOCKS = 8
BLOCK_BYTES = 64 * 1024


def json_sha256(data: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """sha256 (hex) of `data` as JSON with sorted keys, the digest of every run fingerprint and cache key. The bytes
    hashed are part of every stored fingerprint: a change here orphans existing runs and caches. `default`: as
    json.dumps's (str for values such as paths; None refuses them)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=default).encode()).hexdigest()


class WeightFileError(UserError):
    """A weight file that does not hold what it declares; `problem` says so without naming the flag."""

    def __init__(self, message: str, *, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class ModelFingerprint:
    """What a model is: `parts` maps each part (config, tokenizer, chat_template, weights, ...; hub_id and
    revision for a hub model) to a digest, so that a refusal can say which part changed."""

    parts: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return json_sha256(self.parts)

    def changed(self, other: dict[str, str]) -> list[str]:
        return sorted(k for k in set(self.parts) | set(other) if self.parts.get(k) != other.get(k))


def model_fingerprint(model: ModelRef, *, flag: str = "--model") -> ModelFingerprint:
    """A local folder by its contents (so a moved or copied folder keeps its fingerprint, changed weights do not);
    a hub id by the commit it resolves to. Truncated or missing weight files are one clear line."""
    if not model.local:
        return ModelFingerprint({"hub_id": model.name, "revision": model.revision or hub_revision(model, flag=flag)})
    folder = Path(model.path)
    return ModelFingerprint({
        "config": _json_digest(folder / "config.json", drop=("_name_or_path", "transformers_version")),
        "generation_config": _json_digest(folder / "generation_config.json", drop=("transformers_version",)),
        "tokenizer": _tokenizer_digest(folder),
        "chat_template": _chat_template_digest(folder),
        "weights": _weights_digest(folder, flag=flag, name=model.name),
    })


def check_model_available(model: ModelRef, *, flag: str = "--model") -> ModelRef:
    """Before a command loads a model: a hub id is looked up now (`hub_revision`), so an unknown one or an
    unreachable hub is one line at once; loading would retry for up to a minute first, printing every try. Returns
    the model with the commit found, for its fingerprint (the hub is not asked again)."""
    return model if model.local else replace(model, revision=hub_revision(model, flag=flag))


def hub_revision(model: ModelRef, *, flag: str = "--model") -> str:
    """The commit a hub id resolves to now: asked of the hub when online (what a download would fetch), else the
    one the local cache holds."""
    from huggingface_hub import constants

    require_available(model, flag=flag)  # offline and not cached: the same line as everywhere
    sha = None if hub_offline() else _asked_revision(model, flag=flag)
    if sha:
        return sha
    ref = Path(constants.HF_HUB_CACHE) / f"models--{model.name.replace('/', '--')}" / "refs" / "main"
    try:
        return ref.read_text(encoding="utf-8").strip()
    except OSError:
        raise neither_folder_nor_hub(model, "not a hub model in the local cache (the hub cannot be reached)",
                                     flag=flag) from None


def _asked_revision(model: ModelRef, *, flag: str) -> str | None:
    """The commit the hub names for a hub id; None when it cannot be asked or will not say (a gated model): the
    local cache may still know it. A model the hub says does not exist is one line (exit 2)."""
    answer = ask_hub(model.name, "model")
    if answer.missing:
        raise neither_folder_nor_hub(model, "no such model on the hub (a private one needs HF_TOKEN)", flag=flag,
                                     exit_code=2)
    return answer.sha


def _json_digest(path: Path, *, drop: tuple[str, ...]) -> str:
    """sha256 of a JSON file's content without the keys that only say who wrote it ("absent" when missing)."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "absent"
    except (OSError, ValueError):
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "unreadable"
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in drop}
    return json_sha256(data, default=str)


def _tokenizer_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in [*TOKENIZER_FILES, *sorted(p.name for p in folder.glob("*.tiktoken"))]:
        path = folder / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        if name == "tokenizer_config.json":  # its chat template is a part of its own
            # A file that is not a JSON object is hashed as it is: any change to it still changes the digest.
            with contextlib.suppress(ValueError, AttributeError):
                config = json.loads(data)
                config.pop("chat_template", None)
                data = json.dumps(config, sort_keys=True).encode()
        digest.update(f"{name}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def _chat_template_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    paths = [folder / name for name in CHAT_TEMPLATE_FILES]
    extra = folder / "additional_chat_templates"
    paths += sorted(extra.iterdir()) if extra.is_dir() else []
    for path in paths:
        if path.is_file():
            digest.update(f"{path.relative_to(folder)}\0".encode() + path.read_bytes())
    try:
        embedded = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError, AttributeError):
        embedded = None
    digest.update(json.dumps(embedded, sort_keys=True).encode())
    return digest.hexdigest()


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def _weights_digest(folder: Path, *, flag: str, name: str) -> str:
    digest = hashlib.sha256()
    for path in weight_files(folder):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as f:
            start = _check_weight_file(f, path, size, flag=flag, name=name, digest=digest)
            span = size - start
            if span <= SAMPLED_BLOCKS * BLOCK_BYTES:
                f.seek(start)
                digest.update(f.read())
                continue
            for k in range(SAMPLED_BLOCKS):  # evenly spaced, the first and the last block included
                f.seek(start + (span - BLOCK_BYTES) * k // (SAMPLED_BLOCKS - 1))
                digest.update(f.read(BLOCK_BYTES))
    _check_shard_index(folder, flag=flag, name=name)
    return digest.hexdigest()


def check_weight_files(folder: Path, *, flag: str = "--model", name: str | None = None) -> None:
    """Every weight file of the folder holds the bytes it declares, and every shard its index names is there."""
    for path in weight_files(folder):
        with path.open("rb") as f:
            _check_weight_file(f, path, path.stat().st_size, flag=flag, name=name or str(folder))
    _check_shard_index(folder, flag=flag, name=name or str(folder))


def _check_weight_file(f: Any, path: Path, size: int, *, flag: str, name: str, digest: Any = None) -> int:
    """Hash a safetensors header and check the file holds every byte it declares (a copy cut short fails here,
    not deep inside a loader); a torch zip archive must end with its directory. Returns where the data starts."""
    def truncated(detail: str) -> UserError:
        return WeightFileError(f"{flag} {name}: {path.name} is truncated or corrupt ({detail}); copy the model "
                               "again", problem=f"{path.name} is truncated or corrupt ({detail})")

    if path.suffix == ".safetensors":
        head = f.read(8)
        if len(head) < 8:
            raise truncated(f"{size} bytes")
        (header_size,) = struct.unpack("<Q", head)
        if 8 + header_size > size:
            raise truncated(f"header of {header_size} bytes in a file of {size}")
        header = f.read(header_size)
        try:
            tensors = json.loads(header)
            end = max((t["data_offsets"][1] for k, t in tensors.items() if k != "__metadata__"), default=0)
            if not isinstance(end, int):  # an offset written as text: no safetensors writer does that
                raise TypeError(end)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise truncated("unreadable header") from None
        if 8 + header_size + end > size:
            raise truncated(f"{size} of {8 + header_size + end} bytes")
        if digest is not None:
            digest.update(header)
        return 8 + header_size
    # torch.save writes a zip archive, whose directory is at the very end: a copy cut short has none.
    if path.suffix in (".bin", ".pt", ".pth") and f.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(f):
        raise truncated(f"{size} bytes, no zip directory at the end")
    return 0


def _check_shard_index(folder: Path, *, flag: str, name: str) -> None:
    """Every file a sharded checkpoint's index names must be there."""
    for index in folder.glob("*.index.json"):
        try:  # an OSError (an index that may not be read) is the file system's line, not "not valid JSON"
            files = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (ValueError, AttributeError):
            raise UserError(f"{flag} {name}: {index.name} is not valid JSON") from None
        missing = sorted(f for f in files if not (folder / f).is_file())
        if missing:
            problem = f"{index.name} names {len(missing)} missing weight file(s), e.g. {missing[0]}"
            raise WeightFileError(f"{flag} {name}: {problem}", problem=problem)


def folder_fingerprint(folder: Path) -> str:
    """The digest of a local model folder's `model_fingerprint`: what published files and iterate's records name
    a model by (a copied or moved folder keeps it)."""
    return model_fingerprint(ModelRef(str(folder), local=True)).digest


def model_record(model: ModelRef, fingerprint: Callable[[], str] | None = None) -> dict[str, str]:
    """What a published file says about a model: a hub id as it is; a local folder by its name and fingerprint,
    never its path (which would put the user's home folder into a published dataset). `fingerprint`: the folder's
    digest from a caller that needs it anyway (hashing the weights again costs a read of them)."""
    if not model.local:
        return {"model": model.name, "model_origin": "hub"}
    folder = Path(model.path).resolve()
    digest = fingerprint() if fingerprint is not None else folder_fingerprint(folder)
    return {"model": folder.name, "model_origin": "local folder", "model_fingerprint": digest}
