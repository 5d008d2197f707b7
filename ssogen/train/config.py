"""`ssogen train` settings: one pydantic model, filled from `--config train.yaml` and then the command line.

Each field is the whole definition of one option (flag, help with its default, YAML key, validation), and
validation happens here, so every bad combination fails with one line naming the option, before torch loads.
The config file also takes every field of transformers' TrainingArguments under its own name (`hf_arguments`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, field_validator, model_validator

from ssogen.origins import RemembersOrigins
from ssogen.settings import PassThrough, command_settings, flag_name, option
from ssogen.settings_resolution import resolve_settings
from ssogen.train.hf_arguments import ALIASES, REFUSED, training_argument_names
from ssogen.train.objective import LossSettings

OBJECTIVE = "Objective"
SEQUENCES = "Sequences"
OPTIMISATION = "Optimisation"
LORA = "LoRA"

# Options a rerun may change and still resume the run in --out: paths (their contents are fingerprinted instead),
# where and how the same arithmetic runs (device, checkpointing, packing and the output layer are exact), and what
# is logged, saved or measured. Everything else decides the trained weights.
NOT_FINGERPRINTED = frozenset({
    "data", "model", "out", "overwrite", "resume_from_checkpoint", "report_to", "logging_steps", "save_steps",
    "save_total_limit", "final_eval", "reference_batch_size", "use_cpu", "gradient_checkpointing", "fused_head",
    "head_kernel", "packing", "stacked_projections", "fused_norms", "fused_rotary"})
# Options that only mean something for the v1 objective (W and G do not exist in v2).
V1_ONLY = ("no_g", "no_w", "w_detach")
LORA_ONLY = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
REGEX_CHARACTERS = re.compile(r"[\\*+?()\[\]{}|^$]")  # --lora-target-modules is a regex (a dot is part of a name too)


def lora_names(value: str) -> str:
    """--lora-target-modules written one way: names without regex characters as `q_proj,v_proj` (an earlier ssogen
    recorded them as typed, `q_proj, v_proj`); all-linear and a regex as given."""
    if REGEX_CHARACTERS.search(value):
        return value
    return ",".join(name.strip() for name in value.split(",") if name.strip())


@command_settings("ssogen train")
class TrainConfig(RemembersOrigins):
    """Every `ssogen train` option; field names are the long flags with '_' for '-' unless a field says so."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf or nan is no setting
    PASS_THROUGH: ClassVar[PassThrough] = PassThrough(
        field="train_args", label="TrainingArguments", names=training_argument_names, aliases=ALIASES,
        refused=REFUSED)

    data: Path = option(..., "A `ssogen generate` output folder (its `sso` config is read).", metavar="FOLDER")
    model: str = option(..., "Starting model: local folder or hub id.")
    out: Path = option(..., "Output folder for the model, config, metrics and card; a rerun of the same command "
                       "resumes the run there from its newest complete checkpoint.", metavar="FOLDER")
    overwrite: bool = option(False, "Replace a training run of another configuration in --out (removes only what "
                             "ssogen train wrote there).", flags=("--overwrite",))

    # Objective: L(x,y+,y-) + λ·W·G (v1) or L+ + L- (v2).
    objective: Literal["v1", "v2"] = option("v1", "v1 (policy) or v2 (generator: L+ + L-).", panel=OBJECTIVE)
    loss_type: Literal["ipo", "dpo"] | None = option(None, "Base loss: ipo or dpo.", flags=("--loss",),
                                                     panel=OBJECTIVE, default_text="ipo for v1, dpo for v2")
    beta: float = option(0.1, "β (IPO: τ).", gt=0, panel=OBJECTIVE)
    alpha: float = option(0.5, "α in W.", ge=0, le=1, panel=OBJECTIVE)
    lam: float = option(0.1, "λ, the weight of G.", ge=0, flags=("--lambda",), panel=OBJECTIVE)
    w_placement: Literal["g", "all"] = option("g", "g: L + λ·W·G; all: W·(L + λ·G).", panel=OBJECTIVE)
    w_detach: bool = option(False, "Stop gradients through W.", flags=("--w-detach",), panel=OBJECTIVE)
    no_w: bool = option(False, "Ablation: W = 1.", flags=("--no-w",), panel=OBJECTIVE)
    no_g: bool = option(False, "Ablation: no G term (W·L).", flags=("--no-g",), panel=OBJECTIVE)
    sft_weight: float | None = option(None, "γ, the SFT mix.", ge=0, panel=OBJECTIVE,
                                      default_text="0 for v1, 0.1 for v2")

    # Sequences.
    max_length: int = option(2048, "Max tokens per sequence.", gt=1, panel=SEQUENCES)
    max_prompt_length: int = option(1024, "Max prompt tokens.", gt=0, panel=SEQUENCES)

    # Optimisation (handed to transformers.TrainingArguments).
    epochs: float = option(1.0, "Epochs.", gt=0, panel=OPTIMISATION)
    max_steps: int = option(-1, "Stop after N steps (overrides --epochs; -1: use --epochs).", panel=OPTIMISATION)
    lr: float = option(5e-7, "Learning rate.", gt=0, panel=OPTIMISATION)
    batch_size: int = option(4, "Rows (triplets) per device per step; 6 sequences each.", ge=1,
                             panel=OPTIMISATION)
    grad_accum: int = option(1, "Gradient accumulation steps.", ge=1, panel=OPTIMISATION)
    warmup_ratio: float = option(0.04, "Warmup share of the steps.", ge=0, lt=1, panel=OPTIMISATION)
    scheduler: str = option("cosine", "LR schedule (a transformers scheduler name).", panel=OPTIMISATION)
    weight_decay: float = option(0.0, "Weight decay.", ge=0, panel=OPTIMISATION)
    max_grad_norm: float = option(1.0, "Gradient clipping norm.", ge=0, panel=OPTIMISATION)
    seed: int = option(42, "Seed.", ge=0, lt=2**32, panel=OPTIMISATION)
    bf16: bool | None = option(
        None, "bf16 mixed precision (autocast; the weights stay float32).", panel=OPTIMISATION,
        default_text="on for a CUDA GPU with native bf16, else off")
    gradient_checkpointing: bool = option(
        False, "Recompute activations in backward: less memory for more time (the README says what else it does).",
        panel=OPTIMISATION)
    logging_steps: int = option(10, "Log every N steps.", ge=1, panel=OPTIMISATION)
    save_steps: int = option(500, "Checkpoint every N steps (0: no intermediate checkpoints).", ge=0,
                             panel=OPTIMISATION)
    save_total_limit: int | None = option(None, "Keep at most N checkpoints.", ge=1, panel=OPTIMISATION,
                                          default_text="all")
    resume_from_checkpoint: str | None = option(None, "Checkpoint folder to resume from.", panel=OPTIMISATION,
                                                metavar="FOLDER")
    report_to: str | list[str] = option("none", "none, or loggers such as tensorboard,wandb (each must be "
                                        "installed).", panel=OPTIMISATION)
    reference_batch_size: int | None = option(None, "Rows per batch of the reference pass.", ge=1,
                                              panel=OPTIMISATION, default_text="--batch-size")
    final_eval: bool = option(False, "After training, one no-grad pass: reward accuracies on all rows.",
                              panel=OPTIMISATION)
    use_cpu: bool = option(False, "Train on the CPU even when a GPU is present.", flags=("--cpu",),
                           panel=OPTIMISATION)
    fused_head: bool = option(True, "Log-probs from a chunked output layer, never the full logits.",
                              panel=OPTIMISATION)
    head_kernel: Literal["torch", "liger"] = option(
        "torch", "Output layer on CUDA: torch (chunked, GEMMs in the compute dtype) or liger (liger-kernel's fused "
        "linear cross-entropy, exact for per-token log-probs; pip install liger-kernel).", panel=OPTIMISATION)
    packing: bool = option(True, "Pack each row's three contexts once with both responses after each, no padding "
                           "between rows (exact; left padding where the model cannot).", panel=OPTIMISATION)
    stacked_projections: bool = option(
        True, "Run each layer's q, k and v projections as one matrix product on their stacked weights, and its MLP's "
        "gate and up as another (Llama, Mistral, Qwen, Gemma, Granite, OLMo, GLM and the other families the README "
        "lists, with plain Linear projections; not under DeepSpeed or FSDP). Agrees with separate products to "
        "rounding.",
        panel=OPTIMISATION)
    fused_norms: bool = option(
        True, "Run each RMSNorm through torch's rms_norm, one kernel forward and one backward on CUDA (Llama, "
        "Mistral, Qwen, Gemma, Granite, Phi-3, OLMo, GLM and the other families the README lists; in the model's own "
        "rounding order). Equal "
        "to rounding on CUDA, bit-equal on the CPU.", panel=OPTIMISATION)
    fused_rotary: bool = option(
        True, "Compute rotary position embeddings in four operators each way per q and k, where transformers' "
        "function takes five forward and up to nine backward, and under SDPA or eager attention q already in the "
        "dtype attention computes in (Llama, Mistral, Qwen, Gemma, Granite, OLMo and the other families the README "
        "lists). Bit-equal.",
        panel=OPTIMISATION)
    keep_dropout: bool = option(False, "Keep the model's dropout while training (off by default, as in TRL, so "
                                "that the policy's step-0 forward equals the reference pass).",
                                flags=("--keep-dropout",), panel=OPTIMISATION)

    # LoRA (peft).
    lora: bool = option(False, "Train a LoRA adapter (peft).", flags=("--lora",), panel=LORA)
    lora_r: int = option(16, "LoRA rank.", ge=1, panel=LORA)
    lora_alpha: int = option(32, "LoRA alpha.", ge=1, panel=LORA)
    lora_dropout: float = option(0.0, "LoRA dropout.", ge=0, lt=1, panel=LORA)
    lora_target_modules: str = option(
        "all-linear", "Modules that get an adapter: all-linear, names separated by commas (q_proj,v_proj: each "
        "matches modules whose name ends with it), or a regex over full module names.", panel=LORA)
    # Every other TrainingArguments field the config file names, handed over unchanged (no flag).
    train_args: dict[str, Any] = option({}, "Other transformers.TrainingArguments fields (config file only).",
                                        cli=False)

    @field_validator("lora_target_modules", mode="before")
    @classmethod
    def _names_as_a_list(cls, value: Any) -> Any:
        """A YAML list of names is the comma list, and the flag's names are written the same way (`q_proj, v_proj`
        is `q_proj,v_proj`): one text, one fingerprint, however given (a default run's stays the same)."""
        if isinstance(value, list) and all(isinstance(name, str) for name in value):
            value = ",".join(name.strip() for name in value)
        if isinstance(value, str) and not value.strip(", "):
            raise ValueError("names no module")
        if isinstance(value, str):
            value = lora_names(value)
        if isinstance(value, str) and REGEX_CHARACTERS.search(value) and value.strip() != "all-linear":
            try:
                re.compile(value.strip())
            except re.error as exc:  # peft compiles it only after the model loaded: a traceback then
                raise ValueError(f"not a valid regex ({exc})") from None
        return value

    def lora_targets(self) -> str | list[str]:
        """peft's target_modules: all-linear or a regex as given (peft matches a text against full names); names
        without regex characters as a list (peft matches each against the ends of module names)."""
        value = self.lora_target_modules.strip()
        if value == "all-linear" or REGEX_CHARACTERS.search(value):
            return value
        return [name.strip() for name in value.split(",") if name.strip()]

    @model_validator(mode="after")
    def _compatible(self) -> TrainConfig:
        if self.objective == "v2":
            for name in V1_ONLY:
                if getattr(self, name):
                    raise ValueError(f"{flag_name(TrainConfig, name)} cannot be used with --objective v2 (v2 has "
                                     "no W or G term)")
            if "w_placement" in self.model_fields_set:  # given, even as its default: it would be ignored
                raise ValueError("--w-placement cannot be used with --objective v2 (v2 has no W term)")
            for name in ("alpha", "lam"):
                if name in self.model_fields_set:
                    raise ValueError(f"{flag_name(TrainConfig, name)} cannot be used with --objective v2 (v2 has no "
                                     "W or G term)")
        if self.no_w and self.w_detach:
            raise ValueError("--w-detach cannot be used with --no-w (there is no W to detach)")
        # An option of a term the ablation removes would be ignored (and still enter the run's fingerprint).
        if self.no_w and ("alpha" in self.model_fields_set or "w_placement" in self.model_fields_set):
            raise ValueError(f"{'--alpha' if 'alpha' in self.model_fields_set else '--w-placement'} cannot be used "
                             "with --no-w (there is no W)")
        if self.no_g and "lam" in self.model_fields_set:
            raise ValueError("--lambda cannot be used with --no-g (there is no G term to weigh)")
        for name in LORA_ONLY:
            if name in self.model_fields_set and not self.lora:
                raise ValueError(f"{flag_name(TrainConfig, name)} needs --lora")
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"--max-prompt-length ({self.max_prompt_length}) must be smaller than --max-length "
                             f"({self.max_length}) so that every response keeps at least one token")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("--max-steps must be a positive number of steps (or -1 for --epochs)")
        if "warmup_steps" in self.train_args and "warmup_ratio" in self.model_fields_set:
            raise ValueError("--warmup-ratio and warmup_steps both set the warmup; keep one")
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

    def fingerprinted(self) -> dict[str, Any]:
        """The settings that decide the trained weights (see NOT_FINGERPRINTED)."""
        return {k: v for k, v in self.resolved().items() if k not in NOT_FINGERPRINTED}

    def resolved(self) -> dict[str, Any]:
        """All settings with defaults filled in (what is saved with the model)."""
        data = self.model_dump(mode="json")
        data["loss_type"] = self.resolved_loss_type
        data["sft_weight"] = self.resolved_sft_weight
        return data


def build_config(cli_options: dict[str, Any], config_file: Path | None = None) -> TrainConfig:
    """YAML values first, then every command-line option that was given (not None) on top."""
    return resolve_settings(TrainConfig, cli_options, config_file)
