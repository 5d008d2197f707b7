"""Check (not a benchmark): the leaner checkpointed backward of `ssogen train` gives the stock gradients on a GPU.

tests/train/test_lean_backward.py checks it on the CPU; this runs the same comparisons where the GPU's kernels
(bf16 tensor-core GEMMs, `addmm(out_dtype=float32)`, cuDNN/flash attention) compute them, at the 0.5B model's
widths (hidden 896, intermediate 4,864; vocabulary 151,936), bf16 autocast over float32 weights:

* the tiled MLP (`ssogen.train.tiled_mlp`) against the stock Qwen2 MLP, 8,192 tokens;
* the output layer's deferred weight gradient against the one computed inside backward, 4,096 positions;
* q, k and v as one stacked GEMM (`ssogen.train.stacked_projections`) against three Linear layers (with bias, 14 query
  and 2 key/value heads of 64), 8,192 tokens;
* an RMSNorm through torch's rms_norm (`ssogen.train.fused_norms`: one fused kernel each way on CUDA) against
  transformers' module, float32 input of 8,192 tokens, bf16 input of 8 heads of 128 per token (as Qwen3's q
  norm), and OLMo 2's norm on a bf16 input of 8,192 tokens (as its q norm);
* a 2-layer model of those widths with gradient checkpointing: tiled MLP + deferred head + stacked q, k, v + fused
  norms + fused rotary embedding against stock;
* the fused rotary embedding (`ssogen.train.fused_rotary`) against transformers' function, bf16 q and k from a
  stacked projection with float32 tables as under autocast, 8,192 tokens: bit-equal values and gradients; and
  again with q consumed in bf16 (as SDPA and eager attention consume it), where the fused function rounds q itself.

Each gradient is compared with a float64 reference of the same computation; the lean path passes when its error
is at most twice the stock path's plus 1e-6 (bf16 rounding makes both differ from float64). Prints a table,
exit 1 on a failure. About 10 s on one GPU (estimated).

    python bench/gpu_lean_check.py                  # CUDA
    python bench/gpu_lean_check.py --device cpu     # on the CPU: vocabulary 8,192 and an eighth of the tokens
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # ssogen from this checkout when not installed

HIDDEN, INTERMEDIATE = 896, 4864
VOCAB = {"cuda": 151_936, "cpu": 8192}
TOKENS = {"cuda": 8192, "cpu": 1024}  # the MLP's; the output layer gets half, the model a quarter


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.double() - reference).norm() / reference.norm().clamp_min(1e-30))


def mlp_gradients(device: str, tokens: int, tiled: bool, reference: bool) -> list[torch.Tensor]:
    from transformers import Qwen2Config
    from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

    from ssogen.train.tiled_mlp import _TiledSwiGLU

    torch.manual_seed(0)
    mlp = Qwen2MLP(Qwen2Config(hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, hidden_act="silu")).to(device)
    x = torch.randn(tokens, HIDDEN, device=device)
    if reference:
        mlp, x = mlp.double(), x.double()
    x.requires_grad_(True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=not reference):
        weights = (mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
        out = _TiledSwiGLU.apply(x, *weights) if tiled else mlp(x)
    return list(torch.autograd.grad(out.float().square().mean(), [x, *weights]))


def head_gradients(device: str, positions: int, deferred: bool, reference: bool) -> list[torch.Tensor]:
    from ssogen.train.output_layer import LogProbHead

    torch.manual_seed(1)
    vocab = VOCAB[device]
    linear = torch.nn.Linear(HIDDEN, vocab, bias=False, device=device)
    hidden = torch.randn(1, positions, HIDDEN, device=device)
    if reference:
        linear, hidden = linear.double(), hidden.double()
    hidden.requires_grad_(True)
    head = LogProbHead(linear, keep_probabilities=False)
    head.defer_weight_grad = deferred
    head.positions = torch.arange(positions, device=device)
    head.targets = torch.randint(0, vocab, (positions,), device=device)
    weights = torch.linspace(-1, 1, positions, device=device)
    with head.weight_grad_after_backward(), torch.autocast(device, dtype=torch.bfloat16, enabled=not reference):
        (head(hidden).float() * weights).sum().backward()
    return [hidden.grad, linear.weight.grad]


def qkv_gradients(device: str, tokens: int, stacked: bool, reference: bool) -> list[torch.Tensor]:
    from ssogen.train.stacked_projections import _StackedProjections

    torch.manual_seed(4)
    group = [torch.nn.Linear(HIDDEN, width, device=device) for width in (HIDDEN, 128, 128)]
    x = torch.randn(tokens, HIDDEN, device=device)
    if reference:
        group, x = [linear.double() for linear in group], x.double()
    x.requires_grad_(True)
    params = [x, *(p for linear in group for p in linear.parameters())]
    with torch.autocast(device, dtype=torch.bfloat16, enabled=not reference):
        outs = (_StackedProjections.apply(x, 3, *(p.weight for p in group), *(p.bias for p in group)) if stacked
                else [linear(x) for linear in group])
    return list(torch.autograd.grad(sum(out.float().square().mean() for out in outs), params))


def norm_gradients(device: str, tokens: int, fused: bool, reference: bool, dtype: torch.dtype = torch.float32,
                   width: int = HIDDEN, olmo: bool = False) -> list[torch.Tensor]:
    """An RMSNorm on a `dtype` input: float32 as the layers' norms get it, bf16 as Qwen3's per-head q and k norms
    get theirs under autocast (then the fused path normalizes only and the weight follows, as in the module); with
    `olmo`, OLMo 2's norm (the weight before the cast: the fused path takes the weight into the kernel for a bf16
    input too)."""
    from transformers.models.olmo2.modeling_olmo2 import Olmo2RMSNorm
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    from ssogen.train.fused_norms import install_fused_norms

    torch.manual_seed(5)
    norm = (Olmo2RMSNorm if olmo else Qwen2RMSNorm)(width, eps=1e-6).to(device)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(width, device=device))
    x = (4 * torch.randn(tokens, width, device=device)).to(dtype)
    if reference:  # the module's formula in float64 (the module itself would compute in float32)
        weight, x = norm.weight.detach().double().requires_grad_(), x.double().requires_grad_()
        out = weight * (x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6))
        return list(torch.autograd.grad(out.square().mean(), [x, weight]))
    if fused:
        assert install_fused_norms(norm) == 1
    x.requires_grad_(True)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = norm(x)
    return list(torch.autograd.grad(out.float().square().mean(), [x, norm.weight]))


def model_gradients(device: str, tokens: int, lean: bool, reference: bool) -> list[torch.Tensor]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ssogen.train.fused_norms import install_fused_norms
    from ssogen.train.fused_rotary import install_fused_rotary
    from ssogen.train.output_layer import install_logprob_head, output_layer
    from ssogen.train.stacked_projections import install_stacked_projections
    from ssogen.train.tiled_mlp import install_tiled_mlp

    torch.manual_seed(2)
    config = Qwen2Config(hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=2,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=VOCAB[device],
                         tie_word_embeddings=True,
                         use_cache=False)
    config._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(config).to(device, torch.float64 if reference else torch.float32)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    install_logprob_head(model, keep_probabilities=False)
    head: Any = output_layer(model)
    if lean:
        install_tiled_mlp(model)
        install_stacked_projections(model)
        install_fused_norms(model)
        install_fused_rotary(model)
        head.defer_weight_grad = True
    ids = torch.randint(0, VOCAB[device], (2, tokens // 2), generator=torch.Generator().manual_seed(3)).to(device)
    head.positions, head.targets = torch.arange(ids.numel() - 1, device=device), ids.view(-1)[1:]
    with head.weight_grad_after_backward(), torch.autocast(device, dtype=torch.bfloat16, enabled=not reference):
        logps = model(input_ids=ids, logits_to_keep=0).logits
        (logps.float() * torch.linspace(-1, 1, logps.numel(), device=device)).sum().backward()
    return [p.grad for p in model.parameters()]


def rotary_outputs(device: str, tokens: int, fused: bool, round_q: bool = False) -> list[torch.Tensor]:
    """q and k rotated, and the gradient reaching their stacked projection (14 query and 2 key/value heads of 64).
    `round_q`: q is consumed in bf16, as SDPA and eager attention consume it under autocast, and the fused function
    rounds it to bf16 itself (as ssogen installs it for those attentions)."""
    from transformers.models.qwen2 import modeling_qwen2

    from ssogen.train.fused_rotary import FusedApplyRotary

    stock = modeling_qwen2.apply_rotary_pos_emb
    apply = FusedApplyRotary(stock, q_in_autocast_dtype=round_q) if fused else stock
    torch.manual_seed(4)
    projected = torch.randn(2, tokens // 2, 18 * 64, device=device, dtype=torch.bfloat16, requires_grad=True)
    angles = torch.randn(2, tokens // 2, 32, device=device) * 100
    cos, sin = torch.cat((angles.cos(), angles.cos()), -1), torch.cat((angles.sin(), angles.sin()), -1)
    q, k, _ = projected.view(2, tokens // 2, 18, 64).transpose(1, 2).split([14, 2, 2], dim=1)
    with torch.autocast(device, dtype=torch.bfloat16):
        q_embed, k_embed = apply(q, k, cos, sin)
    consumed = q_embed.to(torch.bfloat16).float() if round_q else q_embed
    loss = (consumed * torch.linspace(-1, 1, q_embed.numel(), device=device).view_as(q_embed)).sum() + k_embed.sum()
    return [q_embed.detach().to(torch.bfloat16) if round_q else q_embed.detach(), k_embed.detach(),
            *torch.autograd.grad(loss, [projected])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    device, tokens = args.device, TOKENS[args.device]
    cases = [
        ("tiled MLP", "gradient of x, gate, up, down",
         lambda lean, ref: mlp_gradients(device, tokens, tiled=lean, reference=ref)),
        ("deferred head", "gradient of hidden, weight",
         lambda lean, ref: head_gradients(device, tokens // 2, deferred=lean, reference=ref)),
        ("stacked q, k, v", "gradient of x, weights, biases",
         lambda lean, ref: qkv_gradients(device, tokens, stacked=lean, reference=ref)),
        ("fused RMSNorm", "gradient of x, weight",
         lambda lean, ref: norm_gradients(device, tokens, fused=lean, reference=ref)),
        ("fused RMSNorm, bf16 input", "gradient of x, weight (8 heads of 128 per token)",
         lambda lean, ref: norm_gradients(device, tokens * 8, fused=lean, reference=ref, dtype=torch.bfloat16,
                                          width=128)),
        ("fused RMSNorm, OLMo 2, bf16 input", "gradient of x, weight (q's norm over the whole width)",
         lambda lean, ref: norm_gradients(device, tokens, fused=lean, reference=ref, dtype=torch.bfloat16,
                                          olmo=True)),
        ("checkpointed model", "every parameter's gradient",
         lambda lean, ref: model_gradients(device, tokens // 4, lean=lean, reference=ref)),
    ]
    print(f"device: {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'}, torch {torch.__version__}")
    # Whether this torch has the kernels ssogen's CUDA paths count on (elsewhere rms_norm runs the module's operators).
    for op in ("aten::_fused_rms_norm", "aten::mm.dtype", "aten::addmm.dtype"):
        has = torch._C._dispatch_has_kernel_for_dispatch_key(op, device.upper())
        print(f"{op} kernel for {device.upper()}: {'yes' if has else 'no'}")
    print()
    print("| case | compared | worst relative error, stock | worst relative error, lean | pass |")
    print("|---|---|---|---|---|")
    failed = False
    for name, what, gradients in cases:
        reference = gradients(False, True)
        stock = max(relative_error(g, r) for g, r in zip(gradients(False, False), reference, strict=True))
        lean = max(relative_error(g, r) for g, r in zip(gradients(True, False), reference, strict=True))
        ok = lean <= 2 * stock + 1e-6
        failed |= not ok
        print(f"| {name} | {what} | {stock:.2e} | {lean:.2e} | {'yes' if ok else 'NO'} |", flush=True)
    print()
    for round_q, what in ((False, ""), (True, ", q rounded to bf16 for an attention that casts it")):
        equal = all(torch.equal(a, b) for a, b in zip(rotary_outputs(device, tokens, True, round_q),
                                                      rotary_outputs(device, tokens, False, round_q), strict=True))
        failed |= not equal
        print(f"fused rotary embedding{what}, values and gradient bit-equal to transformers' on {device}: "
              f"{'yes' if equal else 'NO'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
