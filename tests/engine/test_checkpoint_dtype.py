"""`--dtype auto` with the transformers engine on a GPU, for a config naming no dtype: the checkpoint's dtype as
transformers picks it, read from the safetensors headers before any load. Each case is checked against what
transformers itself loads (`from_pretrained(dtype="auto")`, what `hf_engine` passes on a GPU) on this CPU."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ssogen.engine import dtypes
from ssogen.engine.dtypes import expected_dtype, precision_names
from ssogen.engine.options import EngineOptions


@pytest.fixture
def on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dtypes, "engine_runs_on_cpu", lambda kind: False)


@pytest.fixture(scope="module")
def weights() -> dict[str, Any]:
    """A tiny Qwen2's float32 tensors (its lm_head sorts first: "lm_head.weight" < "model.…")."""
    from ssogen.testing.tiny_model import tiny_random_model

    model = tiny_random_model("qwen2", layers=1)
    return {"config": model.config.to_dict(),
            "state": {k: v.detach().contiguous() for k, v in model.state_dict().items()}}


def checkpoint(folder: Path, weights: dict[str, Any], dtype_of: Callable[[str], str],
               shards: Callable[[str], int] | None = None, metadata: dict[str, Any] | None = None) -> str:
    """A model folder whose config names no dtype, each tensor saved at `dtype_of(name)`; with `shards`, a sharded
    checkpoint (tensor name -> shard number) with its index and `metadata`."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir()
    config = {k: v for k, v in weights["config"].items() if k not in ("dtype", "torch_dtype")}
    (folder / "config.json").write_text(json.dumps(config))
    state = {name: tensor.to(getattr(torch, dtype_of(name))) for name, tensor in weights["state"].items()}
    if shards is None:
        save_file(state, str(folder / "model.safetensors"))
        return str(folder)
    files = {name: f"model-{shards(name):05d}-of-00002.safetensors" for name in state}
    for file in set(files.values()):
        save_file({name: t for name, t in state.items() if files[name] == file}, str(folder / file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": metadata or {}, "weight_map": files}))
    return str(folder)


def loaded(model: str) -> str:
    """What transformers loads the model at for dtype="auto" (the engine's `settings["dtype"]`)."""
    from transformers import AutoModelForCausalLM

    return str(AutoModelForCausalLM.from_pretrained(model, dtype="auto").dtype).removeprefix("torch.")


def test_auto_on_a_gpu_is_the_checkpoints_dtype_when_the_config_names_none(
        weights: dict[str, Any], tmp_path: Path, on_a_gpu: None) -> None:
    bf16 = checkpoint(tmp_path / "bf16", weights, lambda name: "bfloat16")
    assert expected_dtype("transformers", bf16, None) == loaded(bf16) == "bfloat16"
    assert precision_names("transformers", bf16, EngineOptions()) == ("bfloat16", ("auto", "bfloat16"))
    # vLLM reads no checkpoint for it: a config naming no dtype is float32 to it, which it gives bfloat16.
    assert expected_dtype("vllm", bf16, None) == "bfloat16"


def test_the_first_floating_tensor_by_name_decides_not_the_files_order(
        weights: dict[str, Any], tmp_path: Path, on_a_gpu: None) -> None:
    """safetensors lists a file's tensors sorted by name (its writer puts wider dtypes first in the file): lm_head
    in float16 comes after the float32 tensors in the file, and first by name."""
    mixed = checkpoint(tmp_path / "mixed", weights, lambda name: "float16" if name == "lm_head.weight" else "float32")
    assert expected_dtype("transformers", mixed, None) == loaded(mixed) == "float16"


def test_a_sharded_checkpoint_is_read_from_its_first_shard_or_the_index_metadata(
        weights: dict[str, Any], tmp_path: Path, on_a_gpu: None) -> None:
    """The first shard by file name decides, though the name first of all (lm_head) lies in the second."""
    def dtype_of(name: str) -> str:
        return "bfloat16" if name.startswith(("lm_head", "model.embed")) else "float16"

    def shards(name: str) -> int:
        return 2 if name.startswith(("lm_head", "model.embed")) else 1

    sharded = checkpoint(tmp_path / "sharded", weights, dtype_of, shards)
    assert expected_dtype("transformers", sharded, None) == loaded(sharded) == "float16"
    named = checkpoint(tmp_path / "named", weights, dtype_of, shards, metadata={"dtype": "bfloat16"})
    assert expected_dtype("transformers", named, None) == loaded(named) == "bfloat16"
    # model.safetensors wins over an index beside it, as transformers picks it.
    shutil.copy(Path(checkpoint(tmp_path / "single", weights, lambda name: "float32")) / "model.safetensors",
                tmp_path / "sharded" / "model.safetensors")
    assert expected_dtype("transformers", sharded, None) == loaded(sharded) == "float32"


def test_the_config_still_comes_first(weights: dict[str, Any], tmp_path: Path, on_a_gpu: None) -> None:
    model = checkpoint(tmp_path / "m", weights, lambda name: "bfloat16")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "dtype": "float16"}))
    assert expected_dtype("transformers", model, None) == loaded(model) == "float16"


def test_what_only_the_load_tells_stays_unknown(weights: dict[str, Any], tmp_path: Path, on_a_gpu: None) -> None:
    import torch

    bin_folder = Path(checkpoint(tmp_path / "bin", weights, lambda name: "bfloat16"))
    (bin_folder / "model.safetensors").unlink()
    torch.save({k: v.to(torch.bfloat16) for k, v in weights["state"].items()}, bin_folder / "pytorch_model.bin")
    assert expected_dtype("transformers", str(bin_folder), None) is None  # torch.load would have to read it
    quantized = Path(checkpoint(tmp_path / "q", weights, lambda name: "bfloat16"))
    config = json.loads((quantized / "config.json").read_text())
    (quantized / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "fp8"}}))
    assert expected_dtype("transformers", str(quantized), None) is None
    assert precision_names("transformers", str(bin_folder), EngineOptions()) == ("auto", ("auto",))


def test_a_hub_model_is_read_from_the_local_cache_only(weights: dict[str, Any], tmp_path: Path, on_a_gpu: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = tmp_path / "hub" / "models--org--name" / "snapshots" / "abc123"
    shutil.copytree(checkpoint(tmp_path / "m", weights, lambda name: "bfloat16"), snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    assert expected_dtype("transformers", "org/name", None) == "bfloat16"
    # The config alone in the cache: the weights' dtype is not known here.
    (snapshot / "model.safetensors").unlink()
    assert expected_dtype("transformers", "org/name", None) is None
    # The cache knows the hub has no model.safetensors: the sharded index it has is read, as transformers would.
    (snapshot.parents[1] / ".no_exist" / "abc123").mkdir(parents=True)
    (snapshot.parents[1] / ".no_exist" / "abc123" / "model.safetensors").write_text("")
    for file in Path(checkpoint(tmp_path / "s", weights, lambda name: "float16", lambda name: 1)).iterdir():
        shutil.copy(file, snapshot / file.name)
    (snapshot / "model.safetensors").unlink(missing_ok=True)
    assert expected_dtype("transformers", "org/name", None) == "float16"
