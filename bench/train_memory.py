"""Benchmark (not a test): the peak GPU memory of `ssogen train` at real model shapes, estimated without a GPU.

Fake tensors (shapes and dtypes, no storage) run ssogen's training step on the CPU at the shapes and with the
synthetic rows of bench/gpu_train.py: the packed batch (CUDA line widths), the model with `LogProbHead`, bf16
autocast over float32 weights (the attention mask in bf16, as `SSOTrainer` passes it), the SSO loss, backward,
gradient clipping at 1.0 and fused AdamW, as transformers.Trainer runs them. A dispatch-mode tracker sums the
bytes of every live tensor and keeps the list of live tensors at the highest sum: the estimate of
`torch.cuda.max_memory_allocated`, and what makes it up. It also counts the operators each training step
dispatches (views and metadata queries left out): on a GPU each is about one kernel launch, the host's share of a
step that the H200 profile found not GPU-bound at 0.5B.

It is an estimate: the CPU's attention kernel and autocast lists stand in for CUDA's (where ssogen's code takes a
CUDA-only path, the estimate takes it too: float32 products of bf16 operands as `mm`/`addmm(out_dtype=float32)`,
rms_norm as CUDA's fused operator), and cuDNN/cuBLAS workspaces and the allocator's rounding are not counted.
BENCHMARKS.md sets it beside the H200 measurements of gpu_train.py.

    python bench/train_memory.py                          # 0.5b and 1.5b, gradient checkpointing off and on
    python bench/train_memory.py --shapes 0.5b --gc on --top 15
    python bench/train_memory.py --shapes 0.5b --gc off --operator-names 30    # which operators a step dispatches
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # ssogen from this checkout when not installed
sys.path.insert(0, str(ROOT / "bench"))

MIB = 2**20
# Operators that launch no kernel on a GPU (views, metadata), left out of the per-step operator count.
NO_KERNEL = frozenset({"alias", "as_strided", "detach", "device", "dim", "empty", "empty_like", "empty_strided",
                       "expand", "lift_fresh", "new_empty", "permute", "promote_types", "select", "size", "slice",
                       "split", "split_with_sizes", "squeeze", "stride", "sym_numel", "sym_size", "sym_storage_offset",
                       "sym_stride", "t", "transpose", "unbind", "unsqueeze", "view", "_reshape_alias", "_unsafe_view"})


class LiveTensors(TorchDispatchMode):
    """Bytes of live tensor storages (each counted once), and the live set at the highest total."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[int, str, Any]] = {}
        self.total = 0
        self.peak = 0
        self.peak_phase = ""
        self.peak_live: list[tuple[int, str]] = []
        self.phase = "setup"
        self.operators: collections.Counter[str] = collections.Counter()  # by phase
        self.operator_names: collections.Counter[tuple[str, str]] = collections.Counter()  # by (phase, name)

    def add(self, tensor: torch.Tensor, label: str) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self.live:
            return
        size = storage.nbytes()

        def freed(_: Any, key: int = key, size: int = size) -> None:
            if self.live.pop(key, None) is not None:
                self.total -= size

        self.live[key] = (size, label, weakref.ref(storage, freed))
        self.total += size
        if self.total > self.peak:
            self.peak, self.peak_phase = self.total, self.phase
            self.peak_live = [(size, label) for size, label, _ in self.live.values()]

    def relabel(self, tensor: torch.Tensor, label: str) -> None:
        key = id(tensor.untyped_storage())
        if key in self.live:
            size, _, ref = self.live[key]
            self.live[key] = (size, label, ref)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func.__name__.split(".")[0] not in NO_KERNEL:
            self.operators[self.phase] += 1
            self.operator_names[self.phase, func.__name__] += 1
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                name = func.__name__.split(".")[0]
                self.add(tensor, f"{self.phase} {name} {tuple(tensor.shape)} {str(tensor.dtype)[6:]}")
        return out

    def composition(self, top: int) -> list[tuple[str, int, int]]:
        """(label, count, bytes) of the live set at the peak, largest first."""
        sizes: collections.Counter[str] = collections.Counter()
        counts: collections.Counter[str] = collections.Counter()
        for size, label in self.peak_live:
            sizes[label] += size
            counts[label] += 1
        return [(label, counts[label], size) for label, size in sizes.most_common(top)]


def cuda_style_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The CUDA branch of `mixed_precision.float_product`: one GEMM with a float32 output."""
    return torch.mm(a, b) if a.dtype.itemsize >= 4 else torch.mm(a, b, out_dtype=torch.float32)


def cuda_style_accumulation(accumulator: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """The CUDA branch of `mixed_precision.accumulate_float`: no float32 copies of half-precision operands."""
    if a.dtype == accumulator.dtype:
        accumulator.addmm_(a, b)
    else:
        torch.addmm(accumulator, a, b, out_dtype=torch.float32, out=accumulator)


class CudaFusedRMSNorm(torch.autograd.Function):
    """What CUDA's `aten::_fused_rms_norm` (torch's rms_norm on a GPU) dispatches and keeps: one operator forward
    (its output and the per-token scale), one backward (`_fused_rms_norm_backward`); it saves the input, the scale
    and the weight. On the CPU rms_norm runs as the module's operators instead."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:  # type: ignore[override]
        out = x.clone()  # one kernel writing an output of x's shape
        scale = x.new_empty((*x.shape[:-1], 1))
        ctx.save_for_backward(x, scale, weight)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, None]:  # type: ignore[override]
        x, scale, weight = ctx.saved_tensors
        grad_x, grad_weight = torch.ops.aten._fused_rms_norm_backward(grad, x, [x.size(-1)], scale, weight,
                                                                      [True, weight is not None])
        return grad_x, grad_weight if weight is not None else None, None


def batches(args: argparse.Namespace, work: Path) -> tuple[list[dict[str, torch.Tensor]], Any]:
    """The packed batches of bench/gpu_train.py's synthetic rows, with CUDA's line widths."""
    from gpu_train_setup import write_rows
    from transformers import AutoTokenizer

    from ssogen.testing.tiny_model import build_tiny_model
    from ssogen.train.collator import SSOCollator, collator_multiples
    from ssogen.train.data import encode_rows
    from ssogen.train.inputs import read_sso_rows

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(work / "tokenizer"))
    data = write_rows(work / "data", tokenizer, args.batch * args.steps, args.length_scale)
    encoded, _, _ = encode_rows(read_sso_rows(data), tokenizer, max_length=args.max_length,
                                max_prompt_length=args.max_length // 2)
    examples = list(encoded)
    multiples = collator_multiples("cuda")
    if args.line_multiple:
        multiples["line_multiple"] = args.line_multiple
    collate = SSOCollator(tokenizer.pad_token_id, packing=True, **multiples)
    return [collate(examples[i:i + args.batch]) for i in range(0, len(examples), args.batch)], tokenizer


def estimate(shape: str, gc: bool, packed: list[dict[str, torch.Tensor]], tokenizer: Any, top: int,
             code: argparse.Namespace) -> dict[str, Any]:
    """`code`: the command line's choices of what ssogen runs (`bool_mask`, `no_lean_backward`,
    `separate_projections`, `stock_norms`, `stock_rotary`)."""
    from gpu_train_setup import model_config
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import AutoModelForCausalLM

    from ssogen.train import fused_norms, fused_rotary, mixed_precision, output_layer, stacked_projections, tiled_mlp
    from ssogen.train.logprobs import sequence_logps
    from ssogen.train.loss import sso_loss
    from ssogen.train.objective import LossSettings

    config = model_config(shape, tokenizer, use_cache=False)
    config._attn_implementation = "sdpa"
    mixed_precision.accumulate_float = cuda_style_accumulation  # type: ignore[assignment]
    mixed_precision.float_product = cuda_style_product  # type: ignore[assignment]
    fused_norms.rms_norm = CudaFusedRMSNorm.apply  # type: ignore[assignment]
    mask_dtype = None if code.bool_mask else torch.bfloat16
    tracker = LiveTensors()
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        model = AutoModelForCausalLM.from_config(config)
        parameters = sum(p.numel() for p in model.parameters())
        if gc:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        output_layer.install_logprob_head(model, keep_probabilities=not gc)
        head = output_layer.output_layer(model)
        if gc and not code.no_lean_backward:  # as SSOTrainer.lean_backward on one process
            tiled_mlp.install_tiled_mlp(model)
            head.defer_weight_grad = True
        if not code.separate_projections:  # as SSOTrainer does by default (after the tiled MLP)
            stacked_projections.install_stacked_projections(model)
        if not code.stock_norms:
            fused_norms.install_fused_norms(model)
        if not code.stock_rotary:
            fused_rotary.install_fused_rotary(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
        for parameter in model.parameters():
            tracker.add(parameter, "weights (float32)")
            parameter.register_post_accumulate_grad_hook(lambda p: tracker.relabel(p.grad, "gradients (float32)"))
        with tracker:
            # The first batch twice: the first step creates AdamW's moments; then every batch, as a run would.
            for step, batch in enumerate([packed[0], *packed]):
                tracker.phase = f"step {step} forward"
                inputs = {key: fake.from_tensor(value) for key, value in batch.items()}
                reference = torch.zeros(batch["response_lengths"].shape)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    policy, lengths = sequence_logps(model, inputs, mask_dtype)
                    output = sso_loss(policy, reference, lengths, LossSettings())
                    output.metric_means()  # what SSOTrainer.compute_loss keeps for logging
                    loss = output.loss
                tracker.phase = f"step {step} backward"
                loss.backward()
                head.apply_deferred_weight_grad()
                tracker.phase = f"step {step} optimizer"
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)  # CUDA's default
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                for state in optimizer.state.values():
                    for value in state.values():
                        if isinstance(value, torch.Tensor) and value.dim() > 0:
                            tracker.relabel(value, "AdamW moments (float32)")
    fixed = 16 * parameters
    # The median step's operators; step 0 (the one that creates AdamW's moments) left out.
    parts = ("forward", "backward", "optimizer")
    steps = sorted(range(1, len(packed) + 1),
                   key=lambda step: sum(tracker.operators[f"step {step} {part}"] for part in parts))
    median_step = steps[len(steps) // 2]
    names: collections.Counter[str] = collections.Counter()
    for (phase, name), count in tracker.operator_names.items():
        if phase.startswith(f"step {median_step} "):
            names[f"{phase.split()[-1]} {name}"] += count
    return {"shape": shape, "gc": "on" if gc else "off", "parameters": parameters, "peak": tracker.peak,
            "fixed": fixed, "phase": tracker.peak_phase, "composition": tracker.composition(top),
            "tokens": max(int(b["input_ids"].numel()) for b in packed),
            "operators": [tracker.operators[f"step {median_step} {part}"] for part in parts],
            "operator_names": names.most_common(code.operator_names)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="0.5b,1.5b", help="comma-separated, from bench/gpu_train_setup.py SHAPES")
    parser.add_argument("--gc", default="off,on", help="gradient checkpointing settings: off,on")
    parser.add_argument("--batch", type=int, default=4, help="triplets per step")
    parser.add_argument("--steps", type=int, default=8, help="batches (the peak is the highest over all)")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--length-scale", type=float, default=1.0)
    parser.add_argument("--top", type=int, default=8, help="largest live groups shown per peak")
    parser.add_argument("--operator-names", type=int, default=0, metavar="N",
                        help="list the N most frequent operators of the median step, by phase")
    parser.add_argument("--line-multiple", type=int, help="packed line width multiple (default: ssogen's on CUDA)")
    parser.add_argument("--no-lean-backward", action="store_true",
                        help="with checkpointing, the stock MLP and the head's weight gradient inside backward (as "
                             "ssogen did before its tiled MLP and deferred head gradient)")
    parser.add_argument("--separate-projections", action="store_true",
                        help="q, k, v and gate, up as separate products (as before `--stacked-projections`)")
    parser.add_argument("--stock-norms", action="store_true",
                        help="transformers' RMSNorm modules (as before `--fused-norms`)")
    parser.add_argument("--stock-rotary", action="store_true",
                        help="transformers' apply_rotary_pos_emb (as before `--fused-rotary`)")
    parser.add_argument("--bool-mask", action="store_true",
                        help="give SDPA a boolean mask (as ssogen did before its bf16 additive one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        packed, tokenizer = batches(args, Path(work))
    rows = []
    for shape in args.shapes.split(","):
        for setting in args.gc.split(","):
            began = time.perf_counter()
            rows.append(estimate(shape, setting == "on", packed, tokenizer, args.top, args))
            print(f"[{shape} gc={setting}: {time.perf_counter() - began:.0f}s]", file=sys.stderr, flush=True)
    print(f"largest packed batch: {rows[0]['tokens']:,} tokens; fixed = 16 B per parameter (float32 weights, "
          "gradients, AdamW moments)\n")
    print("| shape | grad. ckpt | parameters | estimated peak | fixed part | above it | peak during | "
          "operators per step (forward + backward + optimizer) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['shape']} | {row['gc']} | {row['parameters'] / 1e6:,.0f}M | {row['peak'] / MIB:,.0f} MiB | "
              f"{row['fixed'] / MIB:,.0f} MiB | {(row['peak'] - row['fixed']) / MIB:,.0f} MiB | {row['phase']} | "
              f"{sum(row['operators']):,} ({' + '.join(f'{n:,}' for n in row['operators'])}) |")
    for row in rows:
        print(f"\n{row['shape']}, gradient checkpointing {row['gc']}: live at the peak (largest first)")
        for label, count, size in row["composition"]:
            print(f"  {size / MIB:9,.0f} MiB  {count:4d} x  {label}")
        if row["operator_names"]:
            print(f"\n{row['shape']}, gradient checkpointing {row['gc']}: most frequent operators of the median step")
            for name, count in row["operator_names"]:
                print(f"  {count:6,d}  {name}")


if __name__ == "__main__":
    main()
