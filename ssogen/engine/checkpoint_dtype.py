"""The dtype transformers loads a model at for `dtype="auto"` when its config names none, read from the checkpoint's
safetensors headers instead of loading it. transformers 5 (`modeling_utils._get_dtype`, with the files
`_get_resolved_checkpoint_files` picks and `load_state_dict(..., map_location="meta")`): a sharded checkpoint's
index `metadata.dtype`; else the dtype of the first floating tensor (float8 aside) of the first checkpoint file, in
the order safetensors lists them (names sorted), and float32 for a file holding no tensor.

Which files: the config's `transformers_weights` when it names one, else `model.safetensors`, else
`model.safetensors.index.json` and its first shard (the names sorted). A `.bin` checkpoint is left to the loaded
engine (torch.load would have to read it), and so is a hub model whose files the local cache does not hold."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Literal

from ssogen.engine.options import canonical_dtype

_FLOATING = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
# The other dtypes transformers reads (`str_to_torch_dtype`); a file holding any other is refused by the load.
_OTHER_KNOWN = {"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F8_E4M3", "F8_E5M2"}
_MAX_HEADER = 100_000_000  # what the safetensors reader accepts


def checkpoint_dtype(model: str, config: dict[str, Any]) -> str | None:
    """The dtype transformers' "auto" takes from the checkpoint of `model` (a folder or hub id) whose `config` names
    no dtype; None when only the load can tell (a .bin checkpoint, a quantized model, files not at hand)."""
    if config.get("quantization_config") is not None:
        return None  # the quantizer may change the dtype (`hf_quantizer.update_dtype`)
    explicit = config.get("transformers_weights")
    names = [explicit] if isinstance(explicit, str) else ["model.safetensors", "model.safetensors.index.json"]
    for name in names:
        found = _checkpoint_file(model, name)
        if found is None:
            return None
        if found is False:
            continue
        if name.endswith(".safetensors.index.json"):
            return _sharded_dtype(model, found)
        return _first_floating_dtype(found) if name.endswith(".safetensors") else None
    return None  # no safetensors checkpoint: a .bin one, which only torch.load reads


def _sharded_dtype(model: str, index_file: Path) -> str | None:
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        metadata, weight_map = index["metadata"], index["weight_map"]  # transformers reads both, or fails
        if "dtype" in metadata:  # `getattr(torch, dtype)`: a torch name
            named = metadata["dtype"]
            return canonical_dtype(named) if isinstance(named, str) and canonical_dtype(named) in (
                "float16", "bfloat16", "float32", "float64") else None
        first = sorted(set(weight_map.values()))[0]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    found = _checkpoint_file(model, first) if isinstance(first, str) else None
    return _first_floating_dtype(found) if found else None


def _first_floating_dtype(path: Path) -> str | None:
    """`get_state_dict_dtype` over the file's tensors, from its header: None when the load would fail (a dtype
    transformers does not read, or only integer tensors, which no model can be built at)."""
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > _MAX_HEADER:
                return None
            header = json.loads(f.read(length))
        dtypes = [tensor["dtype"] for name, tensor in sorted(header.items()) if name != "__metadata__"]
    except (OSError, ValueError, struct.error, KeyError, TypeError, AttributeError):
        return None
    if any(not isinstance(d, str) or d not in _FLOATING.keys() | _OTHER_KNOWN for d in dtypes):
        return None
    if not dtypes:
        return "float32"
    return next((_FLOATING[d] for d in dtypes if d in _FLOATING), None)


def _checkpoint_file(model: str, name: str) -> Path | Literal[False] | None:
    """The path of file `name` of the model: a folder's, or the local hub cache's (never a download); False when
    it is known not to be there (not in the folder, or the hub said so), None when the cache does not say."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        path = folder / name
        return path if path.is_file() else False
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, name)
    except ValueError:  # no valid repo id or file name
        return None
    if isinstance(cached, str):
        return Path(cached)
    return None if cached is None else False  # else `_CACHED_NO_EXIST`: the hub said it has no such file
