"""The gated MLP, down(silu(gate(x)) * up(x)), with a backward that recomputes its intermediates tile by tile.

With gradient checkpointing each layer's activations are recomputed in backward, and the MLP's are the largest:
six (tokens × intermediate) tensors at once (gate and up outputs, silu, their product and the gradients), about
1 GB at 0.5B shapes for an 18k-token batch, which sets the training step's peak memory. `_TiledSwiGLU` saves
only its input (in the compute dtype) and, in backward, recomputes gate and up for a tile of tokens at a time
(`TILE_ELEMENTS`), so at most a few tile-sized intermediates exist; forward runs in tiles too. Inside a
checkpoint's recompute it returns zeros without computing: the recompute only needs what the layer saves for
backward, the MLP's output is not one of them in the decoder layers listed in `SAFE_MODEL_TYPES` (it is only
added to the residual stream), and checkpointing stops the recompute once the last saved tensor is there. So the
MLP costs the same matrix products as without checkpointing (3 forward, 2 recomputed, 6 backward), one forward
fewer than plain checkpointing. That reasoning holds for one level of checkpoints around the decoder layers
(transformers' gradient checkpointing, reentrant or not); a checkpoint around several layers would feed the zeros
to the next layers' recompute, which is why DeepSpeed's and FSDP's activation checkpointing are left out
(`SSOTrainer.lean_backward`).

Gate and up run as one GEMM on their stacked weights, and so do their two input gradients and their two weight
gradients: fewer, larger kernels, so fewer launches for the host to queue per tile. The dtypes are the stock
module's under autocast; the input gradient sums its two products before rounding (the stock path rounds each)
and the weight gradients are summed over tiles in float32 (the stock path rounds each to bf16 once), so results
agree to rounding and are no less accurate (tests compare both against float64).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssogen.train import mixed_precision
from ssogen.train.mixed_precision import compute_dtype, stacked
from ssogen.train.model_parts import give_forward, take_back, text_config, unwrap

# Elements of the (tokens × intermediate) tensors one tile keeps alive at once: 320 MiB in bf16. Backward keeps
# four (gate|up output: 2, silu, the gradient of silu·up), so its tiles are a third of an 18k-token batch at 0.5B;
# forward keeps three (gate|up output, silu·up), so its tiles are larger and fewer (fewer launches). Against half
# this budget (bench/train_memory.py, checkpointed step): 672 operators fewer at 0.5B and 1,355 at 1.5B, for a
# peak 41 MiB (0.5%) and 133 MiB (0.6%) higher; at 0.5B the peak moves from the output layer's forward to backward.
TILE_ELEMENTS = 5 << 25
_LIVE_IN_BACKWARD = 4
_LIVE_IN_FORWARD = 3
# Decoder layers whose MLP output feeds only the residual addition (which saves nothing for backward), so that a
# checkpoint's recompute may skip computing it. Gemma's, OLMo 2's and EXAONE 4's post-feedforward norms, for some,
# save their input; Seed-OSS's MLP adds a dropout of its own. tests/train/test_lean_backward.py runs each listed type.
SAFE_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "ministral", "ernie4_5", "hunyuan_v1_dense"})


def _inside_backward() -> bool:
    """True while the autograd engine runs a backward pass: a non-reentrant checkpoint recomputes from there."""
    return torch._C._current_graph_task_id() != -1


def _tiles(tokens: int, intermediate: int, live: int) -> list[tuple[int, int]]:
    """Token ranges whose `live` (tokens × intermediate) tensors fit TILE_ELEMENTS together."""
    count = max(1, math.ceil(tokens * intermediate * live / TILE_ELEMENTS))
    rows = max(1, math.ceil(tokens / count))
    return [(start, min(start + rows, tokens)) for start in range(0, tokens, rows)]


def _gated(rows: torch.Tensor, gate_up: torch.Tensor, width: int) -> torch.Tensor:
    """silu(gate(rows)) * up(rows), from one GEMM with the stacked weight."""
    projected = F.linear(rows, gate_up)
    return F.silu(projected[:, :width]).mul_(projected[:, width:])


class _TiledSwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, gate_weight: torch.Tensor, up_weight: torch.Tensor,
                down_weight: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype(x)
        ctx.input_dtype = x.dtype
        shape = (*x.shape[:-1], down_weight.size(0))
        with torch.autocast(x.device.type, enabled=False):
            flat = x.reshape(-1, x.size(-1)).to(dtype)
            ctx.save_for_backward(flat, gate_weight, up_weight, down_weight)
            if _inside_backward():
                return flat.new_zeros(shape)
            gate_up, down, width = stacked((gate_weight, up_weight), dtype), down_weight.to(dtype), gate_weight.size(0)
            tiles = _tiles(flat.size(0), width, _LIVE_IN_FORWARD)
            if len(tiles) == 1:
                return F.linear(_gated(flat, gate_up, width), down).view(shape)
            out = flat.new_empty((flat.size(0), down.size(0)))
            for start, stop in tiles:
                torch.mm(_gated(flat[start:stop], gate_up, width), down.t(), out=out[start:stop])
        return out.view(shape)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        flat, gate_weight, up_weight, down_weight = ctx.saved_tensors
        want_x, want_gate, want_up, want_down = ctx.needs_input_grad
        dtype, width = flat.dtype, gate_weight.size(0)
        with torch.autocast(flat.device.type, enabled=False):
            gate_up, down = stacked((gate_weight, up_weight), dtype), down_weight.to(dtype)
            dy = grad_output.reshape(-1, grad_output.size(-1)).to(dtype)
            grad_x = torch.empty(flat.shape, dtype=ctx.input_dtype, device=flat.device) if want_x else None
            grad_gate_up: torch.Tensor | None = None  # float32 sums over the tiles, from the first tile's product
            grad_down: torch.Tensor | None = None
            for start, stop in _tiles(flat.size(0), width, _LIVE_IN_BACKWARD):
                rows, dy_rows = flat[start:stop], dy[start:stop]
                projected = F.linear(rows, gate_up)
                gate_out, up_out = projected[:, :width], projected[:, width:]
                act = F.silu(gate_out)
                if want_down:
                    grad_down = mixed_precision.add_product(grad_down, dy_rows.t(), act * up_out)
                # The gradients of gate's and up's outputs end up in `projected`, side by side as the stacked
                # weight's GEMMs want them: d(up) in place over silu, d(gate) over gate's output, then d(up) copied
                # over up's output. Four tile-sized tensors at most (projected: 2, silu, d(product)).
                d_product = dy_rows @ down
                d_up = act.mul_(d_product)
                torch.ops.aten.silu_backward(d_product.mul_(up_out), gate_out, grad_input=gate_out)
                up_out.copy_(d_up)
                del act, d_up, d_product, gate_out, up_out
                if grad_x is not None:
                    grad_x[start:stop] = projected @ gate_up
                if want_gate or want_up:
                    grad_gate_up = mixed_precision.add_product(grad_gate_up, projected.t(), rows)
                del projected  # before the next tile's exists, not when the name is bound again
        shape = (*grad_output.shape[:-1], flat.size(-1))
        grad_gate = grad_up = None
        if grad_gate_up is not None:
            grad_gate = grad_gate_up[:width].to(gate_weight.dtype) if want_gate else None
            grad_up = grad_gate_up[width:].to(up_weight.dtype) if want_up else None
        return (None if grad_x is None else grad_x.view(shape), grad_gate, grad_up,
                None if grad_down is None else grad_down.to(down_weight.dtype))


def is_tiled(module: Any) -> bool:
    """True for an MLP that `install_tiled_mlp` gave the tiled backward."""
    return isinstance(module, _Tiled)


def _is_silu(module: Any) -> bool:
    # transformers' own class (what ACT2FN["silu"] gives; a hub kernel may replace its forward) or torch's.
    return isinstance(module, nn.SiLU) or type(module).__name__ == "SiLUActivation"


def _is_plain_swiglu(module: nn.Module) -> bool:
    projections = [getattr(module, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
    return all(type(p) is nn.Linear and p.bias is None for p in projections) and _is_silu(getattr(module, "act_fn",
                                                                                                   None))


class _Tiled:
    """Mixed in front of an MLP's own class (a subclass per class, so replicas and copies keep it)."""

    stock_class: type[nn.Module]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        module: Any = self
        if not _is_plain_swiglu(module):  # an adapter (peft) wrapped a projection after installation: stock path
            return self.stock_class.forward(module, x)
        return _TiledSwiGLU.apply(x, module.gate_proj.weight, module.up_proj.weight, module.down_proj.weight)


def install_tiled_mlp(model: Any) -> int:
    """Give every plain SwiGLU MLP of a model in SAFE_MODEL_TYPES the tiled backward; returns how many. For
    training with gradient checkpointing only (without it, backward recomputes what the stock module keeps)."""
    inner = unwrap(model)
    if getattr(text_config(inner), "model_type", None) not in SAFE_MODEL_TYPES:
        return 0
    count = 0
    for module in inner.modules():
        if isinstance(module, _Tiled):
            count += 1
        elif _is_plain_swiglu(module):
            give_forward(module, _Tiled, "Tiled")
            count += 1
    return count


def remove_tiled_mlp(model: Any) -> None:
    take_back(model, _Tiled)
