"""Benchmark (not a test): what one attention call of a packed `ssogen train` batch costs the host and the GPU, per
SDPA kernel, on a shape seen before and on a new one.

The 0.5B profile on the H200 (BENCHMARKS.md) found the step host-bound, with cuDNN's attention holding most of the
host time: 2.4-2.7 ms per call, where launching a kernel costs microseconds. If that is paid once per new input
shape (cuDNN builds an execution plan per shape), the 128-token buckets of packed line widths remove it from a long
run; if every call pays it, only another kernel does. This script tells which, at the 0.5B attention shape: 10 lines
of 1,792 tokens, 14 query heads of 64, ssogen's packed mask (additive bf16; each line one context and its two
responses), bf16, forward and backward:

* per kernel asked for (torch's choice, cuDNN, memory-efficient, flash), with k and v repeated to the 14 query heads
  (as transformers does when it passes a mask) and with their 2 heads and `enable_gqa=True`;
* host time per call: the wall time of queueing forward and backward, without synchronising (median of the calls),
  on a shape seen before (after two warm-up calls) and on a new width at every call (1,792 + 16·k, never repeated);
* GPU time per call: the summed time of the call's kernels (the copies repeating k and v and making the output
  contiguous included) on the repeated shape (torch.profiler), with the SDPA operator that ran and what torch
  warned about;
* the largest difference of the output from torch's choice with repeated k and v (same inputs).

A kernel that refuses the inputs is listed with torch's reason. About 15 s on one GPU (estimated). On the CPU the
host times are the computation itself (and new widths differ in size), so there they say nothing about a GPU.

    python bench/gpu_attention.py                   # CUDA, the 0.5B shape
    python bench/gpu_attention.py --device cpu      # tiny lines on the CPU, to try the script
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # ssogen from this checkout when not installed

from ssogen.train.packing import PADDING_ID, attention_mask_4d  # noqa: E402


@dataclass(frozen=True)
class Shape:
    lines: int
    heads: int
    kv_heads: int
    head_dim: int
    width: int


SHAPES = {"cuda": Shape(lines=10, heads=14, kv_heads=2, head_dim=64, width=1792),  # 0.5B, the largest batch
          "cpu": Shape(lines=2, heads=4, kv_heads=2, head_dim=64, width=256)}
KERNELS: dict[str, list[SDPBackend] | None] = {
    "torch's choice": None, "cuDNN": [SDPBackend.CUDNN_ATTENTION],
    "memory-efficient": [SDPBackend.EFFICIENT_ATTENTION], "flash": [SDPBackend.FLASH_ATTENTION]}
# New widths: the base width + 16, + 32, ...; shared by all rows, so none repeats (64 calls reach +1,024 on CUDA).
OFFSETS = itertools.count(16, 16)


def packed_mask(lines: int, width: int, device: str) -> torch.Tensor:
    """ssogen's additive bf16 mask for lines that each hold one context (half the line), its two responses and 16
    padding tokens."""
    group = torch.zeros(lines, width, dtype=torch.long)
    span = torch.zeros(lines, width, dtype=torch.long)
    context, first = width // 2, width // 4
    span[:, context:context + first] = 1
    span[:, context + first:] = 2
    group[:, -16:] = span[:, -16:] = PADDING_ID
    return attention_mask_4d(group.to(device), span.to(device), "sdpa", torch.bfloat16)


class Call:
    """One attention call, laid out as in transformers' Qwen2 attention: q a transposed view of the projection's
    (lines, width, heads, dim) output; k and v repeated to the query heads (a contiguous copy) unless `gqa`, then
    transposed views with their own heads; the output transposed back and made contiguous, so that its gradient
    reaches SDPA in that layout."""

    def __init__(self, shape: Shape, width: int, gqa: bool, device: str) -> None:
        torch.manual_seed(width)
        self.leaves = [torch.randn(shape.lines, width, heads, shape.head_dim, device=device, dtype=torch.bfloat16,
                                   requires_grad=True) for heads in (shape.heads, shape.kv_heads, shape.kv_heads)]
        self.gqa, self.heads = gqa, shape.heads
        self.mask = packed_mask(shape.lines, width, device)
        self.grad = torch.randn(shape.lines, width, shape.heads, shape.head_dim, device=device, dtype=torch.bfloat16)

    def __call__(self) -> torch.Tensor:
        for leaf in self.leaves:  # no gradient accumulation from call to call
            leaf.grad = None
        q, k, v = (leaf.transpose(1, 2) for leaf in self.leaves)
        if not self.gqa:
            repeat = self.heads // k.size(1)
            k, v = (t[:, :, None].expand(-1, -1, repeat, -1, -1).flatten(1, 2) for t in (k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, enable_gqa=self.gqa)
        out = out.transpose(1, 2).contiguous()
        out.backward(self.grad)
        return out.detach()

    def timed(self, cuda: bool) -> float:
        """Host seconds to queue the call; the GPU's queue is drained before, not after."""
        if cuda:
            torch.cuda.synchronize()
        began = time.perf_counter()
        self()
        return time.perf_counter() - began


def kernel_time(call: Call, calls: int, cuda: bool) -> tuple[float | None, str]:
    """GPU seconds per call summed over its kernels (None on the CPU), and the SDPA operator that ran."""
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(calls):
            call()
        if cuda:
            torch.cuda.synchronize()
    averages = profile.key_averages()
    ran = sorted({e.key.removeprefix("aten::") for e in averages if e.key.startswith("aten::_")
                  and ("attention" in e.key or "_flash" in e.key or "_efficient" in e.key)
                  and "backward" not in e.key})
    if not cuda:
        return None, ", ".join(ran)
    # The kernels' own events (device type CUDA), as the profiler's table sums its "Self CUDA time total": the
    # operators that launched them report the same time again.
    total = sum(e.self_device_time_total for e in averages
                if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False))
    return total / 1e6 / calls, ", ".join(ran)


def measure(kernel: list[SDPBackend] | None, gqa: bool, shape: Shape, device: str, calls: int,
            reference: torch.Tensor | None) -> dict[str, Any]:
    cuda = device == "cuda"
    with sdpa_kernel(kernel) if kernel else contextlib.nullcontext(), warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        call = Call(shape, shape.width, gqa, device)
        try:
            out = call()
        except RuntimeError as error:
            reasons = [str(w.message).splitlines()[0] for w in said] or [str(error).splitlines()[0]]
            return {"refused": "; ".join(dict.fromkeys(reasons))[:300]}
        call.timed(cuda)  # the second warm-up call
        same = statistics.median(call.timed(cuda) for _ in range(calls))
        new = statistics.median(Call(shape, shape.width + next(OFFSETS), gqa, device).timed(cuda)
                                for _ in range(calls))
        gpu, ran = kernel_time(call, calls, cuda)
    # What torch warned about meanwhile (a gradient copied to another layout, say), once each.
    notes = "; ".join(dict.fromkeys(str(w.message).splitlines()[0][:160] for w in said))
    difference = None if reference is None else float((out.float() - reference.float()).abs().max())
    return {"same": same, "new": new, "gpu": gpu, "ran": ran + (f" (warned: {notes})" if notes else ""), "out": out,
            "difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--calls", type=int, default=8, help="timed calls per row and shape setting")
    args = parser.parse_args()
    device, shape = args.device, SHAPES[args.device]
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    cudnn = torch.backends.cudnn.version() if device == "cuda" else None
    print(f"device: {name}, torch {torch.__version__}, cuDNN {cudnn}; q ({shape.lines}, {shape.heads}, {shape.width}, "
          f"{shape.head_dim}) bf16, k and v {shape.kv_heads} heads, packed additive bf16 mask; "
          f"median of {args.calls} calls\n")
    print("| kernel asked for | k, v heads | SDPA operator that ran | host ms per call, shape seen before | "
          "host ms per call, new shape | GPU ms per call | max abs difference from torch's choice |")
    print("|---|---|---|---|---|---|---|")
    reference = None
    for (label, kernel), gqa in itertools.product(KERNELS.items(), (False, True)):
        heads = f"{shape.kv_heads} (enable_gqa)" if gqa else f"{shape.heads} (repeated)"
        row = measure(kernel, gqa, shape, device, args.calls, reference)
        if "refused" in row:
            print(f"| {label} | {heads} | refused: {row['refused']} | | | | |", flush=True)
            continue
        if reference is None:
            reference = row["out"]
        gpu = "-" if row["gpu"] is None else f"{row['gpu'] * 1e3:.3f}"
        difference = "-" if row["difference"] is None else f"{row['difference']:.2e}"
        print(f"| {label} | {heads} | {row['ran']} | {row['same'] * 1e3:.3f} | {row['new'] * 1e3:.3f} | {gpu} | "
              f"{difference} |", flush=True)


if __name__ == "__main__":
    main()
