"""One rule, for every command, that tells a local model folder from a hub id; checked before anything heavy
is imported.

* An existing folder is a local model: it must hold `config.json`, tokenizer files, and a chat template (ssogen
  renders every prompt through it).
* Anything else that looks like a path (starts with `.`, `/` or `~`, or has more than one `/`) is a missing
  folder.
* Otherwise it is a hub id, bare names such as `gpt2` included. Offline (HF_HUB_OFFLINE=1) a hub id that is
  not in the local hub cache is one clear line instead of a download attempt.

`model_fingerprint` says what a model is, not where: the parts that decide its outputs, each hashed from file
reads alone (no transformers), so that a run, a score cache or a reference cache never mixes two models."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssogen.errors import UserError

# Where a tokenizer keeps its chat template, in the order transformers looks (any one is enough).
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
# The files a tokenizer is built from (a folder needs at least one of the first six).
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                    "sentencepiece.bpe.model")
TOKENIZER_FILES = (*VOCABULARY_FILES, "merges.txt", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# Blocks read from each weight file: together with the names, sizes and safetensors headers they tell two
# checkpoints of one architecture apart without reading gigabytes.
SAMPLED_BLOCKS = 8
BLOCK_BYTES = 64 * 1024
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
ENVIRONMENT_ERROR = 1


@dataclass(frozen=True)
class ModelRef:
    """A model named on the command line: `name` as given, `local` folder or hub id."""

    name: str
    local: bool

    @property
    def path(self) -> str:
        """What to hand to `from_pretrained` / vLLM: the expanded folder, or the hub id."""
        return str(Path(self.name).expanduser()) if self.local else self.name


def resolve_model(name: str, *, flag: str = "--model", chat: bool = True) -> ModelRef:
    """Classify `name` and check what can be checked without loading it (see the module docstring).
    `chat`: the model must have a chat template."""
    folder = Path(name).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise UserError(f"{flag} {name}: is a file, not a model folder")
        if not (folder / "config.json").is_file():
            raise UserError(f"{flag} {name}: not a model folder (no config.json)")
        if not any((folder / file).is_file() for file in VOCABULARY_FILES) and not any(folder.glob("*.tiktoken")):
            raise UserError(f"{flag} {name}: no tokenizer files (none of {', '.join(VOCABULARY_FILES[:3])}, ...); "
                            "copy the tokenizer into the model folder")
        if chat and not _has_chat_template(folder):
            raise UserError(f"{flag} {name}: the tokenizer has no chat template (ssogen renders every prompt "
                            "through it)")
        return ModelRef(name, local=True)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or not HUB_ID.match(name):
        raise UserError(f"{flag} {name}: no such folder (and not a hub id, which is NAME or ORG/NAME)")
    return ModelRef(name, local=False)


def require_available(model: ModelRef, *, flag: str = "--model") -> None:
    """Before a model is loaded: offline, a hub id must already be in the local hub cache."""
    if model.local or not hub_offline():
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(model.name, "config.json"), str):
        raise UserError(f"{flag} {model.name}: not a local folder, so a hub id, but HF_HUB_OFFLINE is set and it "
                        "is not in the hub cache; download it first or give a model folder", ENVIRONMENT_ERROR)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _has_chat_template(folder: Path) -> bool:
    if any((folder / name).is_file() for name in CHAT_TEMPLATE_FILES):
        return True
    if (folder / "additional_chat_templates").is_dir():
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # No readable tokenizer config: let the tokenizer load decide (and say what is wrong).
        return True
    return bool(config.get("chat_template"))


def load_error(model: ModelRef, exc: BaseException, *, what: str = "load it", flag: str = "--model") -> UserError:
    """One line for a failed load: an unreachable hub (exit 1) told apart from a broken model (exit 2)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if not model.local and _network_failure(exc):
        return UserError(f"{flag} {model.name}: a hub id, and the hub cannot be reached ({first}); check the "
                         "network or give a model folder", ENVIRONMENT_ERROR)
    return UserError(f"{flag} {model.name}: cannot {what} ({type(exc).__name__}: {first})")


def _network_failure(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if any(word in type(exc).__name__ for word in ("Connection", "Timeout", "Offline", "LocalEntryNotFound")):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


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
        return hashlib.sha256(json.dumps(self.parts, sort_keys=True).encode()).hexdigest()

    def changed(self, other: dict[str, str]) -> list[str]:
        return sorted(k for k in set(self.parts) | set(other) if self.parts.get(k) != other.get(k))


def model_fingerprint(model: ModelRef, *, flag: str = "--model") -> ModelFingerprint:
    """A local folder by its contents (so a moved or copied folder keeps its fingerprint, changed weights do not);
    a hub id by the commit it resolves to. Truncated or missing weight files are one clear line."""
    if not model.local:
        return ModelFingerprint({"hub_id": model.name, "revision": hub_revision(model, flag=flag)})
    folder = Path(model.path)
    return ModelFingerprint({
        "config": _json_digest(folder / "config.json", drop=("_name_or_path", "transformers_version")),
        "generation_config": _json_digest(folder / "generation_config.json", drop=("transformers_version",)),
        "tokenizer": _tokenizer_digest(folder),
        "chat_template": _chat_template_digest(folder),
        "weights": _weights_digest(folder, flag=flag, name=model.name),
    })


def hub_revision(model: ModelRef, *, flag: str = "--model") -> str:
    """The commit a hub id resolves to now: asked of the hub when online (what a download would fetch), else the
    one the local cache holds."""
    from huggingface_hub import constants

    require_available(model, flag=flag)  # offline and not cached: the same line as everywhere
    if not hub_offline():
        try:
            from huggingface_hub import HfApi

            sha = HfApi().model_info(model.name, timeout=20).sha
            if sha:
                return str(sha)
        except Exception:  # unreachable or unknown: the local cache may still know it
            pass
    ref = Path(constants.HF_HUB_CACHE) / f"models--{model.name.replace('/', '--')}" / "refs" / "main"
    try:
        return ref.read_text(encoding="utf-8").strip()
    except OSError:
        raise UserError(f"{flag} {model.name}: cannot tell which revision of this hub model would be used (the hub "
                        "cannot be reached and it is not in the local hub cache)", ENVIRONMENT_ERROR) from None


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
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _tokenizer_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in [*TOKENIZER_FILES, *sorted(p.name for p in folder.glob("*.tiktoken"))]:
        path = folder / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        if name == "tokenizer_config.json":  # its chat template is a part of its own
            try:
                config = json.loads(data)
                config.pop("chat_template", None)
                data = json.dumps(config, sort_keys=True).encode()
            except (ValueError, AttributeError):
                pass
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
        try:
            files = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            raise UserError(f"{flag} {name}: {index.name} is not valid JSON") from None
        missing = sorted(f for f in files if not (folder / f).is_file())
        if missing:
            problem = f"{index.name} names {len(missing)} missing weight file(s), e.g. {missing[0]}"
            raise WeightFileError(f"{flag} {name}: {problem}", problem=problem)
