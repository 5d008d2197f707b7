"""The devices this process may use: GPUs (from nvidia-smi, honouring CUDA_VISIBLE_DEVICES), CPU cores, memory; and
which of them an engine will run on."""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import shutil
import subprocess
import sys

from pydantic import BaseModel

from ssogen.engine.options import EngineKind
from ssogen.envinfo import vllm_build


class Gpu(BaseModel):
    id: str  # as CUDA_VISIBLE_DEVICES names it (an index or a UUID)
    name: str
    memory_bytes: int | None


def visible_gpus() -> list[Gpu] | None:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES applied), from nvidia-smi, which creates no CUDA
    context; None when nvidia-smi is missing or fails (then the count cannot be checked)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        listing = subprocess.run([smi, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [[part.strip() for part in line.split(",")] for line in listing.splitlines() if line.strip()]
    gpus = {r[0]: (r[1], r[2], int(float(r[3])) * 2**20 if r[3].replace(".", "").isdigit() else None)
            for r in rows if len(r) == 4}
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return [Gpu(id=i, name=name, memory_bytes=mem) for i, (_, name, mem) in gpus.items()]
    visible = []
    for token in (t.strip() for t in mask.split(",")):
        if not token or token.startswith("-"):
            break  # CUDA stops at the first invalid entry
        match = [(i, v) for i, v in gpus.items() if token == i or v[0].startswith(token)]
        if not match:
            break
        visible.append(Gpu(id=token, name=match[0][1][1], memory_bytes=match[0][1][2]))
    return visible


# Asked in a child process: CUDA's answer initialises its driver (cuInit) in the process that asks, which may then
# not fork a CUDA worker (vLLM forks its workers). Even PYTORCH_NVML_BASED_CUDA_CHECK=1 falls back to cuInit where
# NVML cannot be loaded, mostly where nvidia-smi is missing too (both come with the driver's utilities): the case
# this is asked in. Without the driver library the answer is no, before torch loads (`cudaGetDeviceCount` fails).
_TORCH_CUDA_PROBE = """
import ctypes
try:
    ctypes.CDLL("libcuda.so.1")
except OSError:
    print("no driver")
else:
    import torch
    print("cuda" if torch.cuda.is_available() else "no cuda")
"""


@functools.cache  # a process (0.4 s without a driver, seconds with torch): once per command, which asks it more
def torch_sees_cuda() -> bool:
    """What `torch.cuda.is_available()` answers here (the transformers engine's choice of device), asked of a child
    process, so that this one creates no CUDA context and initialises no driver; False when it cannot tell."""
    try:
        answer = subprocess.run([sys.executable, "-c", _TORCH_CUDA_PROBE], capture_output=True, text=True,
                                timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return answer.strip() == "cuda"


def engine_runs_on_cpu(kind: EngineKind) -> bool:
    """Where an engine of `kind` will run, asked of the installed builds and nvidia-smi: the vLLM CPU build runs on
    the CPU, the GPU build on a GPU; the transformers engine on a GPU when torch is no CPU build and a GPU is visible
    (hf_engine asks `torch.cuda.is_available()`, which this process must not: see `torch_sees_cuda`, asked where
    nvidia-smi cannot tell)."""
    build = vllm_build()[1]
    if kind == "vllm" and build != "absent":
        return build == "cpu"
    try:
        torch_cpu_build = md.version("torch").endswith("+cpu")
    except md.PackageNotFoundError:
        torch_cpu_build = False
    if torch_cpu_build:
        return True
    gpus = visible_gpus()
    return not (gpus if gpus is not None else torch_sees_cuda())


def cpu_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def core_list(cores: list[int]) -> str:
    """1,2,3,7 -> "1-3,7" (the form VLLM_CPU_OMP_THREADS_BIND and people read)."""
    spans: list[list[int]] = []
    for core in cores:
        if spans and core == spans[-1][1] + 1:
            spans[-1][1] = core
        else:
            spans.append([core, core])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def host_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
