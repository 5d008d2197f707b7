"""`ssogen train` settings: one pydantic model, filled from `--config train.yaml` and then the command line.

Validation happens here so that every bad combination fails with one line naming the option."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ssogen.errors import UserError
from ssogen.train.loss import LossSettings

# Options that only mean something for the v1 objective (W and G do not exist in v2).
V1_ONLY = {"no_g": "--no-g", "no_w": "--no-w", "w_detach": "--w-detach"}


class TrainConfig(BaseModel):
    """Every `ssogen train` option; field names are the long flags with '_' for '-'."""

    model_config = ConfigDict(extra="forbid")

    data: Path
    model: str
    out: Path

    # Objective: the terms and defaults are those of docs/method.md ("The objective").
    objective: Literal["v1", "v2"] = "v1"
    loss_type: Literal["ipo", "dpo"] | None = Field(None, description="default: ipo for v1, dpo for v2")
    beta: float = Field(0.1, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)
    lam: float = Field(0.1, ge=0, description="λ, the weight of G")
    w_placement: Literal["g", "all"] = "g"
    w_detach: bool = False
    no_w: bool = False
    no_g: bool = False
    sft_weight: float | None = Field(None, ge=0, description="γ; default 0 for v1, 0.1 for v2")

    # Sequences.
    max_length: int = Field(2048, gt=1)
    max_prompt_length: int = Field(1024, gt=0)

    # Optimisation (handed to transformers.TrainingArguments).
    epochs: float = Field(1.0, gt=0)
    max_steps: int = -1
    lr: float = Field(5e-7, gt=0)
    batch_size: int = Field(4, ge=1, description="rows (triplets) per device per step; 6 sequences each")
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.04, ge=0, lt=1)
    scheduler: str = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    seed: int = 42
    bf16: bool = False
    gradient_checkpointing: bool = False
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=0, description="checkpoint every N steps; 0 = no intermediate checkpoints")
    save_total_limit: int | None = Field(None, ge=1)
    resume_from_checkpoint: str | None = None
    report_to: str = "none"
    reference_batch_size: int | None = Field(None, ge=1, description="default: --batch-size")
    final_eval: bool = Field(False, description="after training, one no-grad pass: reward accuracies on all rows")
    use_cpu: bool = Field(False, description="train on the CPU even when a GPU is present")
    fused_head: bool = Field(True, description="log-probs from a chunked output layer, never full logits")
    head_kernel: Literal["torch", "liger"] = Field(
        "torch", description="output layer on CUDA: torch (chunked, GEMMs in the compute dtype) or liger "
        "(liger-kernel's fused linear cross-entropy, exact for per-token log-probs; pip install liger-kernel)")
    packing: bool = Field(True, description="pack each row's three contexts once with both responses after each, "
                          "no padding between rows (exact; falls back to left padding where the model cannot)")
    keep_dropout: bool = Field(False, description="keep the model's dropout while training (default: off, as in "
                               "TRL, so that the policy's step-0 forward equals the reference pass)")

    # LoRA (peft).
    lora: bool = False
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target_modules: str = "all-linear"

    @model_validator(mode="after")
    def _compatible(self) -> TrainConfig:
        if self.objective == "v2":
            for name, flag in V1_ONLY.items():
                if getattr(self, name):
                    raise ValueError(f"{flag} cannot be used with --objective v2 (v2 has no W or G term)")
            if self.w_placement != "g":
                raise ValueError("--w-placement cannot be used with --objective v2 (v2 has no W term)")
        if self.no_w and self.w_detach:
            raise ValueError("--w-detach cannot be used with --no-w (there is no W to detach)")
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"--max-prompt-length ({self.max_prompt_length}) must be smaller than --max-length "
                             f"({self.max_length}) so that every response keeps at least one token")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("--max-steps must be a positive number of steps (or -1 for --epochs)")
        return self

    @property
    def resolved_loss_type(self) -> Literal["ipo", "dpo"]:
        return self.loss_type or ("dpo" if self.objective == "v2" else "ipo")

    @property
    def resolved_sft_weight(self) -> float:
        if self.sft_weight is not None:
            return self.sft_weight
        return 0.1 if self.objective == "v2" else 0.0

    def loss_settings(self) -> LossSettings:
        return LossSettings(
            objective=self.objective, loss_type=self.resolved_loss_type, beta=self.beta, alpha=self.alpha,
            lam=self.lam, w_placement=self.w_placement, w_detach=self.w_detach, use_w=not self.no_w,
            use_g=not self.no_g, sft_weight=self.resolved_sft_weight,
        )

    def resolved(self) -> dict[str, Any]:
        """All settings with defaults filled in (what is saved with the model)."""
        data = self.model_dump(mode="json")
        data["loss_type"] = self.resolved_loss_type
        data["sft_weight"] = self.resolved_sft_weight
        return data


# Fields whose command-line flag is not simply `--field-name`.
FLAG_NAMES = {"loss_type": "--loss", "lam": "--lambda", "use_cpu": "--cpu"}
LORA_ONLY = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")


def flag_name(field_name: str) -> str:
    return FLAG_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def _format_error(exc: ValidationError, source: str) -> str:
    first = exc.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:
        return f"{source}: {message}"
    return f"{source}: {flag_name(str(first['loc'][0]))}: {message}"


def load_yaml_config(path: Path) -> dict[str, Any]:
    """Read `train.yaml`: a mapping of option names (dashes or underscores) to values."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if not path.is_file():
        raise UserError(f"{path}: no such config file")
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of option names to values")
    aliases = {"lambda": "lam", "loss": "loss_type", "cpu": "use_cpu"}  # the flag names, as on the command line
    options = {aliases.get(str(k).replace("-", "_"), str(k).replace("-", "_")): v for k, v in data.items()}
    unknown = sorted(set(options) - set(TrainConfig.model_fields))
    if unknown:
        raise UserError(f"{path}: unknown option {unknown[0]!r}")
    return options


def build_config(cli_options: dict[str, Any], config_file: Path | None = None) -> TrainConfig:
    """YAML values first, then every command-line option that was given (not None) on top."""
    merged: dict[str, Any] = load_yaml_config(config_file) if config_file is not None else {}
    merged.update({k: v for k, v in cli_options.items() if v is not None})
    for required in ("data", "model", "out"):
        if merged.get(required) in (None, ""):
            raise UserError(f"--{required} is required (on the command line or in the config file)")
    for name in LORA_ONLY:
        if merged.get(name) is not None and not merged.get("lora"):
            raise UserError(f"{flag_name(name)} needs --lora")
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as exc:
        raise UserError(_format_error(exc, str(config_file) if config_file else "ssogen train")) from None
