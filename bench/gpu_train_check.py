"""One-shot check of `ssogen train` on a GPU: the learning test in bf16 (and with gradient checkpointing).

Self-contained: builds the tiny model and a synthetic `sso` dataset, then runs the same learning test as
tests/test_train.py (40 steps at a raised lr) through `ssogen.train.run_training`, on CUDA in bf16, with and
without gradient checkpointing, plus the same on the ~10M-parameter "small" model for a memory figure. Prints
a markdown table (P1 implicit-reward accuracy over all rows after training, loss first/last, median time per
step, peak memory) and writes `$OUT/gpu_train_check.json` when OUT is set. Exit 1 if a tiny-model run misses
P1 accuracy > 0.9. Needs only torch, transformers, accelerate, pyarrow, pydantic, ruamel.yaml, rich and ssogen
(run from the repository root or with ssogen installed). Budget: well under 3 minutes on one H100.

    python bench/gpu_train_check.py                 # CUDA
    python bench/gpu_train_check.py --device cpu    # the same on the CPU (fp32 unless --bf16-on-cpu)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # ssogen from this checkout when not installed

ACCURACY_TARGET = 0.9


def run_case(root: Path, name: str, *, model: Path, data: Path, device: str, bf16: bool, checkpointing: bool,
             steps: int, lr: float, batch: int) -> dict[str, Any]:
    import torch
    from rich.console import Console

    from ssogen.train.config import TrainConfig
    from ssogen.train.run import run_training

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    outcome = run_training(TrainConfig(
        data=data, model=str(model), out=root / f"out-{name}", max_steps=steps, lr=lr, batch_size=batch,
        warmup_ratio=0.0, logging_steps=5, save_steps=0, seed=0, bf16=bf16, gradient_checkpointing=checkpointing,
        max_length=512, max_prompt_length=384, final_eval=True, use_cpu=device == "cpu",
    ), Console(file=io.StringIO()))
    logged = [entry for entry in outcome.log_history if "loss" in entry]
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    final = outcome.final_eval or {}
    return {
        "case": name, "bf16": bf16, "gradient_checkpointing": checkpointing, "steps": outcome.steps, "lr": lr,
        "p1_accuracy": final.get("rewards/p1/accuracy"), "p2_accuracy": final.get("rewards/p2/accuracy"),
        "p3_accuracy": final.get("rewards/p3/accuracy"),
        "loss_first": logged[0]["loss"], "loss_last": logged[-1]["loss"],
        "seconds_per_step": outcome.seconds_per_step, "peak_memory_mib": peak,
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device == "cuda" else "process peak RSS",
        "wall_seconds": time.perf_counter() - start,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--skip-small", action="store_true", help="only the tiny-model learning runs")
    parser.add_argument("--bf16-on-cpu", action="store_true", help="with --device cpu, use bf16 autocast too")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    from ssogen.testing.synthetic import write_synthetic_sso
    from ssogen.testing.tiny_model import build_tiny_model

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (use --device cpu)", file=sys.stderr)
        return 2
    bf16 = args.device == "cuda" or args.bf16_on_cpu
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu"
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ssogen-gpu-check-") as tmp:
        root = Path(tmp)
        tiny = build_tiny_model(root / "tiny", size="tiny")
        data = write_synthetic_sso(root / "data", args.rows, seed=0)
        cases = [("tiny", tiny, False), ("tiny+gc", tiny, True)]
        if not args.skip_small:
            small = build_tiny_model(root / "small", size="small")
            cases += [("small", small, False), ("small+gc", small, True)]
        for name, model, checkpointing in cases:
            # The small model's row is for memory and speed: a gentler lr than the tiny learning test.
            lr = args.lr if name.startswith("tiny") else min(args.lr, 5e-4)
            result = run_case(root, name, model=model, data=data, device=args.device, bf16=bf16,
                              checkpointing=checkpointing, steps=args.steps, lr=lr, batch=args.batch)
            results.append(result)
            print(f"{name}: done in {result['wall_seconds']:.1f}s", flush=True)

    precision = "bf16" if bf16 else "fp32"
    print(f"\n`ssogen train` learning check on {device_name} ({args.device}, {precision}), {args.rows} synthetic "
          f"rows, batch {args.batch}, {args.steps} steps; torch {torch.__version__}, transformers "
          f"{transformers.__version__}\n")
    print("| model | grad. ckpt | lr | P1 acc. | P2 acc. | P3 acc. | loss first → last | s/step (median) | "
          f"peak mem (MiB, {results[0]['peak_memory_kind']}) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case'].split('+')[0]} | {'yes' if r['gradient_checkpointing'] else 'no'} | {r['lr']:g} | "
              f"{r['p1_accuracy']:.3f} | {r['p2_accuracy']:.3f} | {r['p3_accuracy']:.3f} | "
              f"{r['loss_first']:.3f} → {r['loss_last']:.4f} | {r['seconds_per_step']:.4f} | "
              f"{r['peak_memory_mib']:.1f} |")
    failed = [r["case"] for r in results if r["case"].startswith("tiny") and
              not (r["p1_accuracy"] or 0) > ACCURACY_TARGET]
    verdict = "PASS" if not failed else f"FAIL ({', '.join(failed)}: P1 accuracy <= {ACCURACY_TARGET})"
    print(f"\nlearning test (tiny model, P1 accuracy > {ACCURACY_TARGET}): {verdict}")
    report = {"device": device_name, "device_kind": args.device, "precision": precision,
              "torch": torch.__version__, "transformers": transformers.__version__, "rows": args.rows,
              "batch": args.batch, "steps": args.steps, "results": results, "verdict": verdict}
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_train_check.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
