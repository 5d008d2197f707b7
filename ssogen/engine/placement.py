"""Where the engines of a run go and whether the model fits there, decided before any engine starts.

`plan_placement` gives each of the `--dp` engines its devices (`--tp` GPUs, or on the CPU build its own CPU
cores) as the environment its process sets before vLLM is imported, and a memory estimate per device: the
weights (from the safetensors headers, at the run's dtype) plus the KV cache of one sequence of
`--max-model-len` tokens, the least vLLM needs to start. The estimate leaves out activations and CUDA graphs,
so it is a lower bound: a plan refused here would certainly fail in vLLM, minutes later."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ssogen.engine.devices import Gpu, core_list, cpu_cores, engine_runs_on_cpu, host_memory, visible_gpus
from ssogen.engine.options import EngineKind, EngineOptions, cpu_kv_cache_bytes
from ssogen.errors import UserError
from ssogen.formatting import counted
from ssogen.models import read_model_config

GiB = 2**30
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}
_FLOAT_TENSORS = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
# vLLM takes the smallest of these config keys as the model's context length (before any RoPE scaling, which
# only raises it), so the smallest is a safe lower bound.
_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length",
                "model_max_length")


class EngineSlot(BaseModel):
    index: int
    devices: str  # for people: "GPUs 0,1" or "CPU cores 0-3"
    env: dict[str, str]  # set in the engine's process before vLLM is imported
    gpu_memory_bytes: int | None = None  # the smallest of its GPUs


class ModelSize(BaseModel):
    weights_bytes: int | None  # at the run's dtype, whole model
    kv_bytes_per_token: int | None  # whole model (all layers, all KV heads)
    kv_heads: int | None
    context_length: int | None


class Placement(BaseModel):
    cpu: bool
    engines: list[EngineSlot]
    tensor_parallel_size: int
    model: ModelSize
    max_model_len: int | None
    weights_per_device_bytes: int | None
    kv_per_sequence_per_device_bytes: int | None
    kv_cache_per_device_bytes: int | None  # explicit size (CPU build: always), else None = what GPU memory leaves
    notes: list[str]
    problems: list[str]

    def check(self) -> None:
        """Raise the first problem as a UserError (exit 2), before any engine starts."""
        if self.problems:
            more = f" (and {counted(len(self.problems) - 1, 'more problem')})" if len(self.problems) > 1 else ""
            raise UserError(self.problems[0] + more)

    def lines(self) -> list[str]:
        """The plan as text for --dry-run."""
        per = "process" if self.cpu else "GPU"
        out = [f"{len(self.engines)} engine(s) of {self.tensor_parallel_size} "
               f"{'CPU worker(s)' if self.cpu else 'GPU(s)'} each"]
        for slot in self.engines:
            out.append(f"  engine {slot.index}: {slot.devices}")
        weights, kv_seq = self.weights_per_device_bytes, self.kv_per_sequence_per_device_bytes
        out.append(f"memory per {per}: weights {_gib(weights)}, KV cache for one sequence of "
                   f"{self.max_model_len or '?'} tokens {_gib(kv_seq)}"
                   + (f", KV cache given {_gib(self.kv_cache_per_device_bytes)}"
                      if self.kv_cache_per_device_bytes else ""))
        return out + [f"note: {n}" for n in self.notes]


def _gib(value: int | None) -> str:
    if value is None:
        return "unknown"
    return f"{value / GiB:.2f} GiB" if value >= GiB // 4 else f"{value / 2**20:.1f} MiB"


def _local_config(model: str) -> dict[str, Any] | None:
    """A model folder's config.json (its text model's part for a multimodal one); None for a hub id or a broken
    file (`resolve_model`, the model's own check, names what is wrong with it)."""
    folder = Path(model).expanduser()
    try:
        data = read_model_config(folder, model) if (folder / "config.json").is_file() else {}
    except UserError:
        return None
    text = data.get("text_config")
    return (text if isinstance(text, dict) and text else data) or None


def _config(model: str, trust_remote_code: bool) -> dict[str, Any] | None:
    local = _local_config(model)
    if local is not None:
        return local
    try:  # a hub id: only what the local cache holds, never a download in a plan
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code, local_files_only=True)
        return config.get_text_config().to_dict()
    except Exception:
        return None


def context_problem(model: str, max_model_len: int | None) -> str | None:
    """--max-model-len beyond every length key of a local model's config.json, which vLLM refuses as it loads:
    found before anything is written. Only the plain case: RoPE scaling (it raises the limit) and
    VLLM_ALLOW_LONG_MAX_MODEL_LEN are left to vLLM."""
    if max_model_len is None or os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN"):
        return None
    config = _local_config(model)
    if config is None:
        return None
    rope = config.get("rope_scaling") or config.get("rope_parameters")
    lengths = {k: int(config[k]) for k in _LENGTH_KEYS if isinstance(config.get(k), int)}
    if "factor" in json.dumps(rope) or "max_position_embeddings" not in lengths:
        return None
    key, longest = max(lengths.items(), key=lambda item: item[1])
    if max_model_len <= longest:
        return None
    return (f"--max-model-len {max_model_len}: longer than the model's context ({key} {longest} in "
            f"{Path(model).expanduser() / 'config.json'}); give at most {longest}, or leave it out for the model's own")


def _run_dtype_bytes(options: EngineOptions, config: dict[str, Any], cpu: bool) -> int:
    if options.dtype != "auto":
        return _DTYPE_BYTES.get(options.dtype, 2)
    if cpu:
        return 4  # the engine adapter runs float32 on the CPU build
    return _DTYPE_BYTES.get(str(config.get("dtype") or config.get("torch_dtype") or "bfloat16"), 2)


def safetensors_weight_bytes(folder: Path, dtype_bytes: int) -> int | None:
    """Bytes of the weights at `dtype_bytes` per float element (other tensors, e.g. packed quantized ones, as
    stored), read from the safetensors headers only. None when the folder has no safetensors files."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():  # only the shards the index names: some repos also ship a consolidated copy
        names = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        files = [folder / name for name in sorted(names)]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            stored = tensor["data_offsets"][1] - tensor["data_offsets"][0]
            width = _FLOAT_TENSORS.get(tensor["dtype"])
            total += stored // width * dtype_bytes if width else stored
    return total


def model_size(model: str, options: EngineOptions, cpu: bool) -> ModelSize:
    config = _config(model, options.trust_remote_code)
    if config is None:
        return ModelSize(weights_bytes=None, kv_bytes_per_token=None, kv_heads=None, context_length=None)
    width = _run_dtype_bytes(options, config, cpu)
    folder = Path(model).expanduser()
    weights = safetensors_weight_bytes(folder, width) if folder.is_dir() else None
    layers, heads = config.get("num_hidden_layers"), config.get("num_attention_heads")
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or (config["hidden_size"] // heads if heads and "hidden_size" in config
                                          else None)
    kv_token = 2 * layers * kv_heads * head_dim * width if layers and kv_heads and head_dim else None
    lengths = [int(config[k]) for k in _LENGTH_KEYS if isinstance(config.get(k), int)]
    return ModelSize(weights_bytes=weights, kv_bytes_per_token=kv_token, kv_heads=kv_heads,
                     context_length=min(lengths) if lengths else None)


def cpu_slots(dp: int, tp: int, cores: list[int]) -> list[EngineSlot]:
    """Each engine's ranks get disjoint cores (an even share of the cores this process may use): without an
    explicit binding every CPU engine binds its threads to the same cores."""
    share = len(cores) // (dp * tp)
    slots = []
    for engine in range(dp):
        ranks = [cores[(engine * tp + r) * share:(engine * tp + r + 1) * share] for r in range(tp)]
        slots.append(EngineSlot(index=engine, devices="CPU cores " + " | ".join(core_list(r) for r in ranks),
                                env={"VLLM_CPU_OMP_THREADS_BIND": "|".join(core_list(r) for r in ranks),
                                     "OMP_NUM_THREADS": str(share)}))
    return slots


def gpu_slots(dp: int, tp: int, gpus: list[Gpu]) -> list[EngineSlot]:
    slots = []
    for engine in range(dp):
        mine = gpus[engine * tp:(engine + 1) * tp]
        memory = [g.memory_bytes for g in mine if g.memory_bytes is not None]
        slots.append(EngineSlot(index=engine, devices="GPUs " + ",".join(g.id for g in mine),
                                env={"CUDA_VISIBLE_DEVICES": ",".join(g.id for g in mine)},
                                gpu_memory_bytes=min(memory) if len(memory) == len(mine) else None))
    return slots


def plan_placement(model: str, options: EngineOptions, kind: EngineKind, *, memory: bool = True,
                   cpu: bool | None = None, gpus: list[Gpu] | None = None, cores: list[int] | None = None,
                   host_memory_bytes: int | None = None) -> Placement:
    """The devices of engines of `kind` and (with `memory`, for vLLM's KV cache) the memory check. `cpu` (where
    they run), `gpus`, `cores`, `host_memory_bytes` default to this machine's. With `ray_address` the devices are
    Ray's to choose."""
    cpu = engine_runs_on_cpu(kind) if cpu is None else cpu
    dp, tp = options.data_parallel_size, options.tensor_parallel_size
    notes: list[str] = []
    problems: list[str] = []
    engines: list[EngineSlot] = []
    if options.ray_address is not None:
        notes.append(f"Ray cluster {options.ray_address}: {dp} actor(s) of {tp} {'CPU' if cpu else 'GPU'}(s); "
                     "Ray places them and its free resources are checked when the run starts")
        cores = cpu_cores() if cores is None else cores
        if cpu and dp * tp <= len(cores):
            # Ray counts CPUs but pins nothing: without a binding each actor's engine takes the same cores.
            engines = cpu_slots(dp, tp, cores)
    elif cpu:
        cores = cpu_cores() if cores is None else cores
        if dp > 1 and dp * tp > len(cores):
            problems.append(f"--dp {dp} x --tp {tp} needs {dp * tp} CPU cores (one engine worker per core at "
                            f"least) but this process may use {len(cores)}")
        elif dp > 1:
            engines = cpu_slots(dp, tp, cores)
    else:
        gpus = visible_gpus() if gpus is None else gpus
        if gpus is None:
            notes.append("nvidia-smi is not available: the GPU count and memory are not checked; "
                         f"assuming GPUs 0..{dp * tp - 1}")
            gpus = [Gpu(id=str(i), name="?", memory_bytes=None) for i in range(dp * tp)]
        if dp * tp > len(gpus):
            problems.append(f"--dp {dp} x --tp {tp} needs {dp * tp} GPUs but {len(gpus)} are visible"
                            + (f" (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']})"
                               if "CUDA_VISIBLE_DEVICES" in os.environ else ""))
        else:
            engines = gpu_slots(dp, tp, gpus)
    if not engines and not problems:
        engines = [EngineSlot(index=i, devices="chosen by Ray" if options.ray_address else
                              ("this process's CPU cores" if cpu else f"GPUs 0..{tp - 1}"), env={})
                   for i in range(dp)]
    if memory and (too_long := context_problem(model, options.max_model_len)):
        problems.append(too_long)
    size = model_size(model, options, cpu)
    length = options.max_model_len or size.context_length
    weights = -(-size.weights_bytes // tp) if size.weights_bytes is not None else None
    kv_seq = None
    if size.kv_bytes_per_token is not None and size.kv_heads and length:
        # vLLM splits the KV heads over the ranks and copies them when there are fewer heads than ranks.
        heads_per_rank = max(1, size.kv_heads // tp)
        kv_seq = size.kv_bytes_per_token // size.kv_heads * heads_per_rank * length
    kv_given = cpu_kv_cache_bytes(options) if cpu else options.kv_cache_memory_bytes
    placement = Placement(cpu=cpu, engines=engines, tensor_parallel_size=tp, model=size, max_model_len=length,
                          weights_per_device_bytes=weights, kv_per_sequence_per_device_bytes=kv_seq,
                          kv_cache_per_device_bytes=kv_given, notes=notes, problems=problems)
    if memory:
        _check_memory(placement, options, host_memory_bytes)
    return placement


def _check_memory(p: Placement, options: EngineOptions, host_memory_bytes: int | None) -> None:
    weights, kv_seq, kv_given = p.weights_per_device_bytes, p.kv_per_sequence_per_device_bytes, \
        p.kv_cache_per_device_bytes
    fix = "lower --max-model-len" + (" or raise --tp" if not p.cpu else "")
    if kv_given is not None and kv_seq is not None and kv_given < kv_seq:
        p.problems.append(f"the KV cache of {_gib(kv_given)} holds less than one sequence of --max-model-len "
                          f"{p.max_model_len} ({_gib(kv_seq)}): raise --kv-cache-gb to at least "
                          f"{math.ceil(kv_seq / GiB * 100) / 100:g} or {fix}")  # 2 MiB: 0.01, not 0.00
    if p.cpu:
        host = host_memory() if host_memory_bytes is None else host_memory_bytes
        need = (weights or 0) * p.tensor_parallel_size + (kv_given or 0) * p.tensor_parallel_size
        if host and need * len(p.engines) > host:
            p.problems.append(f"{len(p.engines)} engine(s) need about {_gib(need * len(p.engines))} of memory "
                              f"(weights + KV cache each) but this machine has {_gib(host)}")
        return
    for slot in p.engines:
        if slot.gpu_memory_bytes is None or weights is None:
            continue
        budget = int(options.gpu_memory_utilization * slot.gpu_memory_bytes)
        need = weights + (kv_given if kv_given is not None else kv_seq or 0)
        if need > budget:
            p.problems.append(
                f"engine {slot.index} ({slot.devices}): the model needs at least {_gib(need)} per GPU (weights "
                f"{_gib(weights)} + KV cache {_gib(need - weights)}) but --gpu-memory-utilization "
                f"{options.gpu_memory_utilization} of {_gib(slot.gpu_memory_bytes)} gives {_gib(budget)}: {fix}")
            break
    if kv_given is None and kv_seq and weights is not None and p.engines and p.engines[0].gpu_memory_bytes:
        room = int(options.gpu_memory_utilization * p.engines[0].gpu_memory_bytes) - weights
        if room > 0:
            p.notes.append(f"KV cache room per GPU about {_gib(room)}: at most {room // kv_seq} sequences of "
                           f"{p.max_model_len} tokens at once per engine (less activations)")
