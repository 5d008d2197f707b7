"""Placement: devices per engine, the memory estimate against hand-computed sizes, and the clear errors that
come before any engine starts (dry run included)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.engine.devices import Gpu
from ssogen.engine.options import EngineOptions
from ssogen.engine.placement import context_problem, cpu_slots, model_size, plan_placement, safetensors_weight_bytes
from ssogen.errors import UserError
from tests.engine.test_dtypes import cuda_torch_without_nvidia_smi

GiB = 2**30


def gpus(n: int, memory_gib: float = 80) -> list[Gpu]:
    return [Gpu(id=str(i), name="H100", memory_bytes=int(memory_gib * GiB)) for i in range(n)]


def test_weights_and_kv_cache_per_token_match_the_model(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    parameters = AutoModelForCausalLM.from_pretrained(tiny_model).num_parameters()  # a tied matrix once
    assert safetensors_weight_bytes(tiny_model, 4) == 4 * parameters
    assert safetensors_weight_bytes(tiny_model, 2) == 2 * parameters
    size = model_size(str(tiny_model), EngineOptions(), cpu=True)
    # K and V x 2 layers x 1 KV head x head size 32 (hidden 64 / 2 heads) x 4 bytes (float32 on CPU)
    assert size.kv_bytes_per_token == 2 * 2 * 1 * 32 * 4
    assert size.context_length == 4096


def test_cpu_engines_get_disjoint_cores() -> None:
    slots = cpu_slots(2, 1, [0, 1])
    assert [s.env["VLLM_CPU_OMP_THREADS_BIND"] for s in slots] == ["0", "1"]
    slots = cpu_slots(2, 2, list(range(16)))
    assert [s.env["VLLM_CPU_OMP_THREADS_BIND"] for s in slots] == ["0-3|4-7", "8-11|12-15"]
    assert slots[1].env["OMP_NUM_THREADS"] == "4"


def test_gpu_engines_get_their_own_gpus_and_count_is_checked(tiny_model: Path) -> None:
    options = EngineOptions(data_parallel_size=4, tensor_parallel_size=2)
    plan = plan_placement(str(tiny_model), options, "vllm", cpu=False, gpus=gpus(8))
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in plan.engines] == ["0,1", "2,3", "4,5", "6,7"]
    plan.check()
    too_many = plan_placement(str(tiny_model), options.model_copy(update={"data_parallel_size": 5}), "vllm",
                              cpu=False, gpus=gpus(8))
    with pytest.raises(UserError, match=r"--dp 5 x --tp 2 needs 10 GPUs but 8 are visible"):
        too_many.check()


def test_a_model_that_cannot_fit_is_refused_with_the_numbers(tiny_model: Path) -> None:
    # The tiny model is stored in float32 ('auto' keeps that on GPU): under 1 MiB of weights (the exact size
    # follows the vocabulary its tokenizer learned from the bundled texts), and one sequence of 4096 tokens needs
    # 2 MiB of KV cache (2 x 2 layers x 1 head x 32 x 4 bytes x 4096). 90% of 2 MiB is less.
    plan = plan_placement(str(tiny_model), EngineOptions(), "vllm", cpu=False, gpus=[Gpu(id="0", name="x",
                                                                                   memory_bytes=2 * 2**20)])
    weights = plan.weights_per_device_bytes
    assert weights is not None and weights < 2**20
    assert abs(weights - (tiny_model / "model.safetensors").stat().st_size) < 2**14  # float32 on disk, as loaded
    need = f"{(weights + 2 * 2**20) / 2**20:.1f}"
    with pytest.raises(UserError, match=rf"engine 0 \(GPUs 0\): the model needs at least {need} MiB per GPU .* "
                                        r"--gpu-memory-utilization 0.9 of 2.0 MiB gives 1.8 MiB"):
        plan.check()
    assert plan.kv_per_sequence_per_device_bytes == 2 * 2 * 1 * 32 * 4 * 4096
    plan_placement(str(tiny_model), EngineOptions(), "vllm", cpu=False, gpus=gpus(1)).check()


def test_cpu_kv_cache_must_hold_one_sequence_and_dp_needs_cores(tiny_model: Path) -> None:
    small_cache = EngineOptions(kv_cache_memory_bytes=2**20, max_model_len=4096)  # needs 2 MiB in float32
    with pytest.raises(UserError, match=r"KV cache of 1.0 MiB holds less than one sequence of --max-model-len "
                                        r"4096 \(2.0 MiB\): raise --kv-cache-gb to at least 0.01 or"):  # was 0.00
        plan_placement(str(tiny_model), small_cache, "vllm", cpu=True, cores=[0, 1]).check()
    with pytest.raises(UserError, match=r"--dp 3 x --tp 1 needs 3 CPU cores .* may use 2"):
        plan_placement(str(tiny_model), EngineOptions(data_parallel_size=3), "vllm", cpu=True,
                       cores=[0, 1]).check()
    both = EngineOptions(data_parallel_size=3, kv_cache_memory_bytes=2**20, max_model_len=4096)
    with pytest.raises(UserError, match=r"may use 2 \(and 1 more problem\)$"):  # was "1 more problem(s)"
        plan_placement(str(tiny_model), both, "vllm", cpu=True, cores=[0, 1]).check()


def test_dry_run_shows_the_placement_and_refuses_an_impossible_one(tiny_model: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ssogen.engine.placement.cpu_cores", lambda: [0, 1])
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    runner = CliRunner()
    base = ["generate", "--model", str(tiny_model), "--out", str(tmp_path / "o"), "--limit", "2", "--dry-run"]
    result = runner.invoke(app, [*base, "--dp", "2"])
    assert result.exit_code == 0, result.output
    assert "2 engine(s) of 1 CPU worker(s) each" in result.output
    assert "engine 1: CPU cores 1" in result.output and "KV cache given 0.25 GiB" in result.output
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")  # vLLM's variable: the size the engine will get
    assert "KV cache given 2.00 GiB" in runner.invoke(app, [*base, "--dp", "2"]).output
    refused = runner.invoke(app, [*base, "--dp", "3"])
    assert refused.exit_code == 2 and "needs 3 CPU cores" in refused.output and "Traceback" not in refused.output
    assert refused.stdout == ""  # refused before any of the plan is printed (it came after the plan and the rows)
    assert not (tmp_path / "o").exists()



@pytest.mark.parametrize("available", [True, False])
def test_without_nvidia_smi_the_transformers_engine_is_placed_where_torch_sees_cuda(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, available: bool) -> None:
    """hf_engine runs where `torch.cuda.is_available()` says, asked in a child process when nvidia-smi is missing:
    GPU slots for a CUDA torch that sees a GPU (they were CPU cores, as no nvidia-smi listed a GPU), CPU cores when
    it sees none. The vLLM CPU build installed here still runs vLLM engines on the CPU, without asking."""
    from ssogen.engine import placement

    asked = cuda_torch_without_nvidia_smi(tmp_path, monkeypatch, available=available)
    monkeypatch.setattr(placement, "visible_gpus", lambda: None)
    monkeypatch.setattr(placement, "cpu_cores", lambda: [0, 1])
    base = ["generate", "--model", str(tiny_model), "--out", str(tmp_path / "o"), "--limit", "2", "--dry-run",
            "--dp", "2"]
    result = CliRunner().invoke(app, [*base, "--engine", "transformers"])
    assert result.exit_code == 0, result.output
    assert int(asked.read_text()) != os.getpid()  # no CUDA in this process
    if available:
        assert "2 engine(s) of 1 GPU(s) each" in result.output and "engine 1: GPUs 1" in result.output
        assert "note: nvidia-smi is not available: the GPU count and memory are not checked" in result.output
    else:
        assert "2 engine(s) of 1 CPU worker(s) each" in result.output and "engine 1: CPU cores 1" in result.output
    asked.unlink()
    assert plan_placement(str(tiny_model), EngineOptions(data_parallel_size=2), "vllm", memory=False).cpu
    assert not asked.exists()


# nvidia-smi's answer on an H100 box (2026-11-27), plus a second GPU for the masks
SMI = ("0, GPU-63788909-0e2b-a131-bc48-1465dbaff030, NVIDIA H100 80GB HBM3, 81559\n"
       "1, GPU-11111111-0e2b-a131-bc48-1465dbaff031, NVIDIA H100 80GB HBM3, 81559\n")


@pytest.mark.parametrize(("mask", "expected"), [
    (None, ["0", "1"]), ("1", ["1"]), ("GPU-63788909", ["GPU-63788909"]), ("1,0", ["1", "0"]), ("", []),
    ("-1", []), ("0,7,1", ["0"]),  # CUDA stops at the first entry that names no GPU
])
def test_visible_gpus_follow_cuda_visible_devices(mask: str | None, expected: list[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from ssogen.engine import devices

    monkeypatch.setattr(devices.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(devices.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, SMI, ""))
    if mask is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mask)
    gpus = devices.visible_gpus()
    assert gpus is not None and [g.id for g in gpus] == expected
    assert all(g.memory_bytes == 81559 * 2**20 and g.name == "NVIDIA H100 80GB HBM3" for g in gpus)


def test_weights_count_only_the_shards_the_index_names(tiny_model: Path, tmp_path: Path) -> None:
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    single = safetensors_weight_bytes(folder, 4)
    shutil.copy(folder / "model.safetensors", folder / "consolidated.safetensors")  # as some repos ship
    assert safetensors_weight_bytes(folder, 4) == 2 * single  # without an index every file counts
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model.safetensors"}}))
    assert safetensors_weight_bytes(folder, 4) == single


@pytest.mark.parametrize(("config", "wanted", "refused"), [
    ({"max_position_embeddings": 4096}, 4096, False),
    ({"max_position_embeddings": 4096}, 4097, True),
    # vLLM allows up to the largest of the keys it reads (model_max_length may exceed the positions).
    ({"max_position_embeddings": 4096, "model_max_length": 8192}, 8192, False),
    ({"max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default"}}, 5000, True),
    # RoPE scaling raises vLLM's limit by rules of its own: left to vLLM.
    ({"max_position_embeddings": 4096, "rope_scaling": {"rope_type": "linear", "factor": 4.0}}, 10000, False),
    ({"n_positions": 1024}, 5000, False),  # no max_position_embeddings: left to vLLM
    ({"text_config": {"max_position_embeddings": 2048}}, 4096, True),
])
def test_a_context_longer_than_config_json_allows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  config: dict[str, object], wanted: int, refused: bool) -> None:
    import json

    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.delenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", raising=False)
    assert (context_problem(str(tmp_path), wanted) is not None) == refused
    assert context_problem(str(tmp_path), None) is None
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
    assert context_problem(str(tmp_path), wanted) is None


@pytest.mark.parametrize("text", ['{"model_type": \n', "[1, 2]\n", '"llama"', "\xff{}", "",
                                  '{"max_position_embeddings": 4096, "text_config": "llama"}'])
def test_a_config_json_no_loader_reads_gives_a_plan_without_its_sizes(tiny_model: Path, tmp_path: Path,
                                                                       text: str) -> None:
    """json.loads' traceback (JSONDecodeError, UnicodeDecodeError) or AttributeError of `.get` on a list: the plan
    has no sizes instead, and the model's own check names the file (`resolve_model`)."""
    import shutil

    folder = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    (folder / "config.json").write_bytes(text.encode("latin-1"))
    if text.startswith('{"max'):  # an object whose text model's part is no object: the object itself
        assert model_size(str(folder), EngineOptions(), cpu=True).context_length == 4096
        assert "max_position_embeddings 4096" in str(context_problem(str(folder), 10**6))
    else:
        assert model_size(str(folder), EngineOptions(), cpu=True).kv_bytes_per_token is None
        assert context_problem(str(folder), 10**6) is None
    placement = plan_placement(str(folder), EngineOptions(), "vllm", cpu=True, cores=[0, 1],
                               host_memory_bytes=64 * GiB)
    placement.lines()
    placement.check()
