"""The dtype an engine will run at, known before it loads: each precision named one way, `auto` resolved as vLLM
and the transformers engine resolve it on the CPU and on a GPU."""

from __future__ import annotations

import functools
import importlib.metadata as md
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from ssogen.engine import devices, dtypes
from ssogen.engine.devices import engine_runs_on_cpu, torch_sees_cuda
from ssogen.engine.dtypes import engine_dtype, expected_dtype, precision_names
from ssogen.engine.options import EngineOptions, canonical_dtype


def model_folder(root: Path, config: dict[str, object]) -> str:
    root.mkdir()
    (root / "config.json").write_text(json.dumps(config))
    return str(root)


def test_a_named_dtype_is_that_dtype_whatever_its_spelling(tmp_path: Path) -> None:
    model = model_folder(tmp_path / "m", {"dtype": "bfloat16"})
    for kind in ("vllm", "transformers"):
        assert expected_dtype(kind, model, EngineOptions(dtype="half")) == "float16"
        assert expected_dtype(kind, model, EngineOptions(dtype="float")) == "float32"
        assert expected_dtype(kind, model, EngineOptions(dtype="bfloat16")) == "bfloat16"
    assert [canonical_dtype(n) for n in ("half", "float", "float16", "auto")] == ["float16", "float32", "float16",
                                                                                  "auto"]
    assert engine_dtype({"dtype": "float32", "device": "cpu"}) == "float32" and engine_dtype({}) is None
    assert engine_dtype(None) is None


def test_auto_is_float32_on_the_cpu_for_both_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engines load float32 for auto on the CPU (`vllm_llm_kwargs`, `causal_lm_dtype`), whatever the config."""
    monkeypatch.setattr(dtypes, "engine_runs_on_cpu", lambda kind: True)
    model = model_folder(tmp_path / "m", {"dtype": "bfloat16"})
    assert expected_dtype("vllm", model, None) == expected_dtype("transformers", model, EngineOptions()) == "float32"


def test_this_machine_runs_both_engines_on_the_cpu() -> None:
    """The test machines have the vLLM CPU build and a CPU torch: what the engines really load here."""
    assert engine_runs_on_cpu("vllm") and engine_runs_on_cpu("transformers")


def test_auto_on_a_gpu_follows_the_models_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dtypes, "engine_runs_on_cpu", lambda kind: False)
    bf16 = model_folder(tmp_path / "bf16", {"torch_dtype": "bfloat16"})
    fp32 = model_folder(tmp_path / "fp32", {"dtype": "float32"})
    silent = model_folder(tmp_path / "silent", {"model_type": "qwen2"})
    multimodal = model_folder(tmp_path / "vl", {"text_config": {"dtype": "float16"}})
    assert expected_dtype("vllm", bf16, None) == expected_dtype("transformers", bf16, None) == "bfloat16"
    # vLLM downcasts a float32 model (and one whose config names no dtype) to bfloat16; transformers keeps it.
    assert expected_dtype("vllm", fp32, None) == expected_dtype("vllm", silent, None) == "bfloat16"
    assert expected_dtype("transformers", fp32, None) == "float32"
    # transformers then takes the checkpoint's dtype (tests/engine/test_checkpoint_dtype.py): none here.
    assert expected_dtype("transformers", silent, None) is None
    assert expected_dtype("vllm", multimodal, None) == "float16"
    # A hub id not in the local cache: no config at hand.
    assert expected_dtype("transformers", "no-such-org/no-such-model", None) is None


def test_the_names_of_a_precision_are_its_spellings_and_auto_where_it_resolves_to_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What an earlier generate run, which recorded --dtype as typed, may have recorded for a precision."""
    bf16 = model_folder(tmp_path / "bf16", {"torch_dtype": "bfloat16"})
    silent = model_folder(tmp_path / "silent", {"model_type": "qwen2"})
    monkeypatch.setattr(dtypes, "engine_runs_on_cpu", lambda kind: True)
    assert precision_names("vllm", bf16, EngineOptions()) == ("float32", ("auto", "float32", "float"))
    assert precision_names("vllm", bf16, EngineOptions(dtype="half")) == ("float16", ("float16", "half"))
    assert precision_names("transformers", bf16, EngineOptions(dtype="bfloat16")) == ("bfloat16", ("bfloat16",))
    monkeypatch.setattr(dtypes, "engine_runs_on_cpu", lambda kind: False)
    assert precision_names("vllm", bf16, EngineOptions(dtype="bfloat16")) == ("bfloat16", ("auto", "bfloat16"))
    assert precision_names("transformers", bf16, EngineOptions(dtype="float")) == ("float32", ("float32", "float"))
    # Only the loaded engine can tell: auto is its only name; a named precision is not auto's.
    assert precision_names("transformers", silent, EngineOptions()) == ("auto", ("auto",))
    assert precision_names("transformers", silent, EngineOptions(dtype="bfloat16")) == ("bfloat16", ("bfloat16",))


def cuda_torch_without_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, available: bool) -> Path:
    """A machine whose torch is a CUDA build and which has no nvidia-smi, where a child process finds a CUDA driver
    library (any shared object named libcuda.so.1) and a torch whose `cuda.is_available()` says `available` and
    writes the id of the process that asked it to the file returned."""
    import _ctypes

    monkeypatch.setattr(devices, "visible_gpus", lambda: None)
    monkeypatch.setattr(devices, "torch_sees_cuda", functools.cache(torch_sees_cuda.__wrapped__))  # asked afresh
    monkeypatch.setattr(devices, "md", SimpleNamespace(version=lambda name: "2.13.0+cu128",
                                                       PackageNotFoundError=md.PackageNotFoundError))
    (tmp_path / "lib").mkdir()
    shutil.copy(_ctypes.__file__, tmp_path / "lib" / "libcuda.so.1")
    (tmp_path / "fake" / "torch").mkdir(parents=True)
    asked = tmp_path / "asked"
    (tmp_path / "fake" / "torch" / "__init__.py").write_text(
        "import os\n\n\nclass cuda:\n    @staticmethod\n    def is_available():\n"
        f"        open({str(asked)!r}, 'w').write(str(os.getpid()))\n        return {available}\n")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path / "lib"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "fake"), os.environ.get("PYTHONPATH", "")]))
    return asked


@pytest.mark.parametrize(("available", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_without_nvidia_smi_a_cuda_torch_is_asked_in_a_child_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, available: bool, expected: str) -> None:
    """What hf_engine's `torch.cuda.is_available()` will say, asked where its answer cannot initialise CUDA here."""
    model = model_folder(tmp_path / "bf16", {"dtype": "bfloat16"})
    asked = cuda_torch_without_nvidia_smi(tmp_path, monkeypatch, available=available)
    assert expected_dtype("transformers", model, EngineOptions()) == expected
    assert int(asked.read_text()) != os.getpid()
