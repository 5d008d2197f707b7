"""CLI commands of the training area (`ssogen train`).

Options default to None so that `--config train.yaml` values apply unless the command line names them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ssogen.cli.common import console, user_errors

_OBJ = "Objective"
_OPT = "Optimisation"
_SEQ = "Sequences"
_LORA = "LoRA"


@user_errors
def train(
    data: Annotated[Path | None, typer.Option(help="A `ssogen generate` output folder (reads its `sso` config).")]
    = None,
    model: Annotated[str | None, typer.Option(help="Starting model: local folder or hub id.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder for the model, config, metrics and card.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of options (the command line wins).")]
    = None,
    objective: Annotated[str | None, typer.Option(help="v1 (policy, default) or v2 (generator: L+ + L-).",
                                                  rich_help_panel=_OBJ)] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="Base loss: ipo (default for v1) or dpo (v2).",
                                             rich_help_panel=_OBJ)] = None,
    beta: Annotated[float | None, typer.Option(help="β (IPO: τ). Default 0.1.", rich_help_panel=_OBJ)] = None,
    alpha: Annotated[float | None, typer.Option(help="α in W. Default 0.5.", rich_help_panel=_OBJ)] = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="λ, weight of G. Default 0.1.",
                                              rich_help_panel=_OBJ)] = None,
    w_placement: Annotated[str | None, typer.Option(help="g: L + λ·W·G (default); all: W·(L + λ·G).",
                                                    rich_help_panel=_OBJ)] = None,
    w_detach: Annotated[bool | None, typer.Option("--w-detach", help="Stop gradients through W.",
                                                  rich_help_panel=_OBJ)] = None,
    no_w: Annotated[bool | None, typer.Option("--no-w", help="Ablation: W = 1.", rich_help_panel=_OBJ)] = None,
    no_g: Annotated[bool | None, typer.Option("--no-g", help="Ablation: no G term (W·L).",
                                              rich_help_panel=_OBJ)] = None,
    sft_weight: Annotated[float | None, typer.Option("--sft-weight", help="γ, SFT mix. Default 0 (v1), 0.1 (v2).",
                                                     rich_help_panel=_OBJ)] = None,
    max_length: Annotated[int | None, typer.Option(help="Max tokens per sequence. Default 2048.",
                                                   rich_help_panel=_SEQ)] = None,
    max_prompt_length: Annotated[int | None, typer.Option(help="Max prompt tokens. Default 1024.",
                                                          rich_help_panel=_SEQ)] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs. Default 1.", rich_help_panel=_OPT)] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N steps (overrides --epochs).",
                                                  rich_help_panel=_OPT)] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate. Default 5e-7.", rich_help_panel=_OPT)] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per device per step (6 sequences each). Default 4.",
                                                   rich_help_panel=_OPT)] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Gradient accumulation steps. Default 1.",
                                                   rich_help_panel=_OPT)] = None,
    warmup_ratio: Annotated[float | None, typer.Option(help="Warmup share of steps. Default 0.04.",
                                                       rich_help_panel=_OPT)] = None,
    scheduler: Annotated[str | None, typer.Option(help="LR schedule (transformers name). Default cosine.",
                                                  rich_help_panel=_OPT)] = None,
    seed: Annotated[int | None, typer.Option(help="Seed. Default 42.", rich_help_panel=_OPT)] = None,
    bf16: Annotated[bool | None, typer.Option("--bf16/--no-bf16", help="bf16 mixed precision.",
                                              rich_help_panel=_OPT)] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in backward.",
        rich_help_panel=_OPT)] = None,
    logging_steps: Annotated[int | None, typer.Option(help="Log every N steps. Default 10.",
                                                      rich_help_panel=_OPT)] = None,
    save_steps: Annotated[int | None, typer.Option(help="Checkpoint every N steps (0: none). Default 500.",
                                                   rich_help_panel=_OPT)] = None,
    resume_from_checkpoint: Annotated[str | None, typer.Option(help="Checkpoint folder to resume from.",
                                                               rich_help_panel=_OPT)] = None,
    report_to: Annotated[str | None, typer.Option(help="none (default), or e.g. tensorboard,wandb.",
                                                  rich_help_panel=_OPT)] = None,
    final_eval: Annotated[bool | None, typer.Option("--final-eval/--no-final-eval",
                                                    help="After training, reward accuracies on all rows.",
                                                    rich_help_panel=_OPT)] = None,
    use_cpu: Annotated[bool | None, typer.Option("--cpu", help="Train on the CPU even with a GPU.",
                                                 rich_help_panel=_OPT)] = None,
    fused_head: Annotated[bool | None, typer.Option(
        "--fused-head/--no-fused-head", help="Log-probs from a chunked output layer (no full logits). Default on.",
        rich_help_panel=_OPT)] = None,
    head_kernel: Annotated[str | None, typer.Option(
        help="Output layer on CUDA: torch (default) or liger (liger-kernel's fused linear cross-entropy).",
        rich_help_panel=_OPT)] = None,
    packing: Annotated[bool | None, typer.Option(
        "--packing/--no-packing", help="Pack each row's three shared contexts once, both responses after each, no "
        "padding between rows (exact; left padding where the model cannot). Default on.", rich_help_panel=_OPT)]
    = None,
    keep_dropout: Annotated[bool | None, typer.Option(
        "--keep-dropout", help="Keep the model's dropout while training (default off, as in TRL).",
        rich_help_panel=_OPT)] = None,
    lora: Annotated[bool | None, typer.Option("--lora", help="Train a LoRA adapter (peft).",
                                              rich_help_panel=_LORA)] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank. Default 16.", rich_help_panel=_LORA)] = None,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha. Default 32.", rich_help_panel=_LORA)] = None,
    lora_dropout: Annotated[float | None, typer.Option(help="LoRA dropout. Default 0.",
                                                       rich_help_panel=_LORA)] = None,
) -> None:
    """Train a policy (v1) or generator (v2) with the weighted SSO objective on a generate output folder.

    Multi-GPU: `accelerate launch --config_file configs/accelerate_ddp.yaml -m ssogen train ...`."""
    options = dict(locals())  # first statement: exactly the parameters
    options.pop("config")
    from ssogen.train.config import build_config
    from ssogen.train.run import run_training

    options["loss_type"] = options.pop("loss")
    settings = build_config(options, config)
    run_training(settings, console)
