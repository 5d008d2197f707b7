"""Matrix products in the compute dtype with float32 sums: shared by the output layer, the tiled MLP and the
stacked projections, which run their GEMMs by hand under autocast (bf16 operands, float32 gradient sums)."""

from __future__ import annotations

import torch


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a matrix product of `tensor` in, or its own dtype without autocast."""
    device_type = tensor.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return tensor.dtype


def stacked(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...], dtype: torch.dtype) -> torch.Tensor:
    """The tensors concatenated along their first dimension, in `dtype`: one `cat` into a buffer of that dtype,
    the cast included (weights stacked for one GEMM where the model has one per projection)."""
    first = tensors[0]
    shape = (sum(t.size(0) for t in tensors), *first.shape[1:])
    return torch.cat(tensors, out=first.new_empty(shape, dtype=dtype))


def float_accumulator(shape: torch.Size | tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Zeros for a gradient sum: float32 for half-precision operands, else their own dtype."""
    return torch.zeros(shape, dtype=torch.promote_types(like.dtype, torch.float32), device=like.device)


def float_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`a @ b` summed and returned in float32 for half-precision operands, else in their own dtype: what
    `accumulate_float` adds to zeros, without the zeros (one kernel fewer; CUDA can: out_dtype)."""
    if a.dtype.itemsize >= 4:
        return torch.mm(a, b)
    if a.device.type == "cuda":
        return torch.mm(a, b, out_dtype=torch.float32)
    return torch.mm(a.float(), b.float())


def accumulate_float(accumulator: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """`accumulator += a @ b` without rounding `a @ b` to a half dtype first (CUDA can: out_dtype)."""
    if a.dtype == accumulator.dtype:
        accumulator.addmm_(a, b)
    elif accumulator.device.type == "cuda":
        torch.addmm(accumulator, a, b, out_dtype=torch.float32, out=accumulator)
    else:
        accumulator.addmm_(a.float(), b.float())


def add_product(total: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`total += a @ b` as `accumulate_float` adds it, or `float_product(a, b)` while there is no total yet (a sum
    over tiles: the first tile's product is the total, no zeros to add it to)."""
    if total is None:
        return float_product(a, b)
    accumulate_float(total, a, b)
    return total
