"""One worker process of bench/gpu_train.py: one trainer kind over every shape and gradient-checkpointing setting.

Prints one JSON line {"runs": [...]}; each run: kind, shape, gc, step_s (median interval between step ends after the
first two; on CUDA between CUDA events recorded at the step ends), operators (the operators one step dispatched,
views and metadata left out: about one kernel launch each on a GPU; Triton kernels such as liger-kernel's are not
operators and not counted), syncs (CUDA only: the host-GPU synchronisations of that step, by the Python line that
made them), peak_mib (`torch.cuda.max_memory_allocated`, or peak RSS on the
CPU), steps, or error. Kinds: ssogen, ssogen-unpacked (--no-packing), ssogen-liger-head (liger-kernel's fused linear
cross-entropy as the output layer), ssogen-pad16 (packed line widths in multiples of 16, the default before widths
were bucketed to 128), ssogen-efficient-attn (SDPA restricted to its memory-efficient kernel, no cuDNN),
ssogen-stock-backward (with gradient checkpointing, the stock MLP and the output layer's weight gradient inside
backward: `SSOTrainer.lean_backward` off), ssogen-separate-projections (--no-stacked-projections: q, k, v and
gate, up as separate products), ssogen-stock-norms (--no-fused-norms: transformers' RMSNorm modules),
ssogen-stock-rotary (--no-fused-rotary: transformers' apply_rotary_pos_emb), trl, trl-liger (TRL with
use_liger_kernel=True)."""

from __future__ import annotations

import contextlib
import gc as garbage
import io
import json
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from train_memory import NO_KERNEL
from transformers import TrainerCallback

from ssogen.train.fused_rotary import ROTARY_MODEL_TYPES
from ssogen.train.output import CONFIG_FILE
from ssogen.train.stacked_projections import ORDERED_MODEL_TYPES
from ssogen.train.tiled_mlp import SAFE_MODEL_TYPES

# Steps left out of the timing: the first carries cuBLAS/allocator warm-up, the second the first optimizer state.
WARMUP_STEPS = 2
# The step (by global_step at its start) whose operators and host-GPU synchronisations are counted (not timed: the
# counting costs host time), after the profiled two.
COUNTED_STEP = WARMUP_STEPS + 3


class OperatorCount(TorchDispatchMode):
    """Counts the operators dispatched while active (autograd's backward threads included), views left out."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func.__name__.split(".")[0] not in NO_KERNEL:
            self.count += 1
        return func(*args, **(kwargs or {}))


class StepClock(TrainerCallback):
    """Times optimizer steps end to end (data, forward, backward, optimizer); optionally profiles two steps.

    On CUDA a step ends at a CUDA event recorded when the host has queued its last kernel (intervals read when the
    run is over): a `torch.cuda.synchronize()` at every step end would drain the GPU's queue there, hiding what a
    trainer gains by queueing the next step's work while the GPU still runs the last one, as a real run does."""

    def __init__(self, cuda: bool, profile_to: Path | None) -> None:
        self.cuda = cuda
        self.ends: list[Any] = []
        self.profiled: set[int] = set()
        self.untimed: set[int] = set()  # steps left out of the median: profiled, after the profile, sync-counted
        self.profile_to = profile_to
        self.profiler: Any = None
        self.syncs: dict[str, int] | None = None
        self.operators: int | None = None
        self._sync_count: tuple[Any, list[warnings.WarningMessage]] | None = None
        self._operator_count: OperatorCount | None = None

    def _now(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.profile_to is not None and state.global_step == WARMUP_STEPS + 1 and self.profiler is None:
            activities = [torch.profiler.ProfilerActivity.CPU] + (
                [torch.profiler.ProfilerActivity.CUDA] if self.cuda else [])
            self.profiler = torch.profiler.profile(activities=activities, record_shapes=False)
            self.profiler.__enter__()
        if state.global_step == COUNTED_STEP:
            self._operator_count = OperatorCount()
            self._operator_count.__enter__()
        if self.cuda and state.global_step == COUNTED_STEP:
            catcher = warnings.catch_warnings(record=True)
            self._sync_count = (catcher, catcher.__enter__())
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")  # every synchronising call warns, from the line that made it

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ends.append(self._now())
        if self._operator_count is not None:
            self._operator_count.__exit__(None, None, None)
            self.operators, self._operator_count = self._operator_count.count, None
            self.untimed.add(len(self.ends) - 1)  # counting costs host time: not a timed step
        if self._sync_count is not None:
            torch.cuda.set_sync_debug_mode("default")
            catcher, caught = self._sync_count
            catcher.__exit__(None, None, None)
            self.syncs = dict(Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                                      if "synchroniz" in str(w.message)))
            self._sync_count = None
            self.untimed.add(len(self.ends) - 1)  # the warnings cost time: not a timed step
        if self.profiler is not None and self.profile_to is not None:
            self.profiled.add(len(self.ends) - 1)
            self.untimed.add(len(self.ends) - 1)
            if len(self.profiled) == 2:
                self.profiler.__exit__(None, None, None)
                self._write_profile()
                self.untimed.add(len(self.ends))  # the next step waits for the profile's table: not timed either
                self.profile_to, self.profiler = None, None

    def _write_profile(self) -> None:
        assert self.profile_to is not None
        averages = self.profiler.key_averages()
        table, used = "", ""
        keys = ("self_device_time_total", "self_cuda_time_total") if self.cuda else ("self_cpu_time_total",)
        for key in keys:
            try:
                table, used = averages.table(sort_by=key, row_limit=40, max_name_column_width=70), key
                break
            except (AttributeError, KeyError, RuntimeError, ValueError):
                continue
        self.profile_to.write_text(f"two optimizer steps, sorted by {used}\n{table}\n")

    def median_step(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        seconds = ([a.elapsed_time(b) / 1000 for a, b in zip(self.ends, self.ends[1:], strict=False)] if self.cuda
                   else [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)])
        intervals = [s for i, s in enumerate(seconds, start=1) if i >= WARMUP_STEPS and i not in self.untimed]
        return statistics.median(intervals)


def peak_mib(cuda: bool) -> float:
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_ssogen(spec: dict[str, Any], shape: str, gc: bool, clock: StepClock, out: Path) -> int:
    from rich.console import Console
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ssogen.train import packing
    from ssogen.train.config import TrainConfig
    from ssogen.train.run import run_training
    from ssogen.train.trainer import SSOTrainer

    # Saving a 2-6 GB model after each run would only cost the benchmark time: skipped here.
    SSOTrainer.save_model = lambda self, *a, **k: None  # type: ignore[method-assign]
    cuda = spec["device"] == "cuda"
    kind = spec["kind"]
    if kind == "ssogen-pad16":
        packing.CUDA_LINE_MULTIPLE = 16
    if kind == "ssogen-stock-backward":
        SSOTrainer.lean_backward = lambda self: None  # type: ignore[method-assign,assignment,return-value]
    attention: Any = contextlib.nullcontext()
    if kind == "ssogen-efficient-attn":
        if not cuda:
            raise RuntimeError("the memory-efficient SDPA kernel is CUDA only")
        attention = sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION])
    with attention:
        outcome = run_training(TrainConfig(
            data=Path(spec["data"]), model=spec["models"][shape], out=out, epochs=1, lr=1e-6,
            batch_size=spec["batch"], warmup_ratio=0.0, save_steps=0, logging_steps=10_000, seed=0,
            max_length=spec["max_length"], max_prompt_length=spec["max_length"] // 2, use_cpu=not cuda,
            gradient_checkpointing=gc, packing=kind != "ssogen-unpacked",
            head_kernel="liger" if kind == "ssogen-liger-head" else "torch",
            stacked_projections=kind != "ssogen-separate-projections", fused_norms=kind != "ssogen-stock-norms",
            fused_rotary=kind != "ssogen-stock-rotary",
        ), Console(file=io.StringIO()), callbacks=[clock])
    if kind != "ssogen-unpacked" and not str(outcome.extra.get("batches", "")).startswith("packed"):
        raise RuntimeError(f"ssogen did not pack: {outcome.extra.get('batches')}")
    # What ssogen does for this model type: the tiled MLP and the stacked projections are for the listed types only.
    model_type = json.loads((Path(spec["models"][shape]) / "config.json").read_text())["model_type"]
    lean = str(outcome.extra.get("lean_backward"))
    tiles = gc and kind != "ssogen-stock-backward" and model_type in SAFE_MODEL_TYPES
    if ("MLP backward in token tiles" in lean) != tiles or (kind == "ssogen-stock-backward" and lean != "off"):
        raise RuntimeError(f"{kind} ({model_type}, checkpointing {'on' if gc else 'off'}) ran lean backward {lean!r}")
    stacked = outcome.extra.get("stacked_projections")
    if (stacked != "off") != (kind != "ssogen-separate-projections" and model_type in ORDERED_MODEL_TYPES):
        raise RuntimeError(f"{kind} ({model_type}) ran stacked projections {stacked!r}")
    norms = outcome.extra.get("fused_norms")
    if (norms == "off") != (kind == "ssogen-stock-norms"):
        raise RuntimeError(f"{kind} ran fused norms {norms!r}")
    rotary = outcome.extra.get("fused_rotary")
    if (rotary != "off") != (kind != "ssogen-stock-rotary" and model_type in ROTARY_MODEL_TYPES):
        raise RuntimeError(f"{kind} ({model_type}) ran fused rotary {rotary!r}")
    # --bf16 is left to its default, which is bf16 on a GPU with native bf16 and float32 on the CPU: TRL's side
    # sets the same precision explicitly.
    if json.loads((out / CONFIG_FILE).read_text())["config"]["bf16"] is not cuda:
        raise RuntimeError(f"ssogen's default precision was not {'bf16' if cuda else 'float32'} on {spec['device']}")
    return outcome.steps


def disable_datasets_fingerprints() -> None:
    """On Python 3.12 (the GPU machines) datasets' fingerprint hashing fails inside DPOTrainer (PicklingError on
    pyarrow's MonthDayNano); random fingerprints only disable datasets' cache, which a benchmark does not need."""
    import datasets.arrow_dataset
    import datasets.fingerprint as fingerprint

    def random_fingerprint(*args: Any, **kwargs: Any) -> str:
        return str(fingerprint.generate_random_fingerprint())

    fingerprint.Hasher.hash = classmethod(lambda cls, value: random_fingerprint())  # type: ignore[method-assign,assignment]
    for module in (fingerprint, datasets.arrow_dataset):
        for name in ("generate_fingerprint", "update_fingerprint"):
            if hasattr(module, name):
                setattr(module, name, random_fingerprint)


def train_trl(spec: dict[str, Any], shape: str, gc: bool, clock: StepClock, out: Path) -> int:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from trl_pairs import trl_dpo_pairs

    from ssogen.train.inputs import read_sso_rows

    cuda = spec["device"] == "cuda"
    model_dir = spec["models"][shape]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    pairs = trl_dpo_pairs(tokenizer, read_sso_rows(Path(spec["data"])))
    config = DPOConfig(
        output_dir=str(out), loss_type=["ipo"], beta=0.1, learning_rate=1e-6,
        per_device_train_batch_size=3 * spec["batch"], num_train_epochs=1, precompute_ref_log_probs=True,
        max_length=spec["max_length"], save_strategy="no", logging_steps=10_000, report_to=[], use_cpu=not cuda,
        disable_tqdm=True, seed=0, dataset_num_proc=None, bf16=cuda, gradient_checkpointing=gc,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gc else None,
        use_liger_kernel=spec["kind"] == "trl-liger",
    )
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer,
                         callbacks=[clock])
    trainer.train()
    return int(trainer.state.global_step)


def main() -> None:
    spec = json.loads(sys.argv[1])
    cuda = spec["device"] == "cuda"
    if not cuda:
        torch.set_num_threads(spec["threads"])
    trl = spec["kind"].startswith("trl")
    if trl:
        disable_datasets_fingerprints()
    runs = []
    for shape in spec["models"]:
        for setting in spec["gc"]:
            run: dict[str, Any] = {"kind": spec["kind"], "shape": shape, "gc": setting}
            profile_dir = spec.get("profile_dir")
            profile_to = (Path(profile_dir) / f"profile-{spec['kind']}-{shape}.txt"
                          if profile_dir and setting == spec.get("profile_gc", spec["gc"][0])
                          and shape == next(iter(spec["models"]))
                          else None)
            clock = StepClock(cuda, profile_to)
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            began = time.perf_counter()
            try:
                with tempfile.TemporaryDirectory(dir=spec["root"]) as out:
                    train = train_trl if trl else train_ssogen
                    run["steps"] = train(spec, shape, setting == "on", clock, Path(out))
                run.update(step_s=clock.median_step(), peak_mib=peak_mib(cuda))
                if clock.syncs is not None:
                    run["syncs"] = clock.syncs
                if clock.operators is not None:
                    run["operators"] = clock.operators
            except torch.OutOfMemoryError:
                run["error"] = "out of GPU memory"
            except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others' numbers
                run["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc) else ''}"
            run["wall_s"] = time.perf_counter() - began
            runs.append(run)
            print(f"{spec['kind']} {shape} gc={setting}: {run}", file=sys.stderr, flush=True)
            garbage.collect()
    print(json.dumps({"runs": runs}))


if __name__ == "__main__":
    main()
