"""The resolved configuration of a `generate` run: defaults < `--config run.yaml` < command-line flags."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ssogen.engine import EngineOptions
from ssogen.errors import UserError

# Options that do not change any row's content: a run may be resumed with different values of these.
# (--dp and --ray-address only decide where the requests run; per-request seeds fix their answers.)
NOT_FINGERPRINTED = frozenset({"out", "limit", "chunk_size", "dp", "ray_address"})
# Rows per chunk for each engine: every engine of a --dp pool gets a full batch from each chunk.
CHUNK_ROWS_PER_ENGINE = 64


class RunConfig(BaseModel):
    """Every option of `ssogen generate`; the YAML config file uses the same names (dashes or underscores)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    out: str
    principles: str = "default"
    prompts: str | None = Field(None, description="Input file/folder/hub id; None = bundled demo queries.")
    prompt_field: str = "prompt"
    split: str = "train"
    limit: int | None = Field(None, ge=1)
    templates: str | None = None
    # Feature selection and principles (steps 1-3 of docs/method.md)
    features_per_query: int = Field(2, ge=1)
    selection: Literal["free", "guided"] = "free"
    selection_max_tokens: int = Field(32, ge=1)
    extra_prob: float | None = Field(None, ge=0.0, le=1.0)
    principle_source: Literal["library", "policy"] = "library"
    principle_max_tokens: int = Field(256, ge=1)
    # Sampling (step 5)
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(0.8, gt=0.0, le=1.0)
    max_tokens: int = Field(2048, ge=1)
    raw_greedy: bool = False
    seed: int = 0
    chunk_size: int = Field(CHUNK_ROWS_PER_ENGINE, ge=1, description=(
        f"Rows per batched engine call and per saved chunk; default {CHUNK_ROWS_PER_ENGINE} per engine "
        f"({CHUNK_ROWS_PER_ENGINE} x --dp)."))
    keep_truncated: bool = False
    keep_empty: bool = Field(False, description="Keep rows with an empty response (always flagged and counted).")
    # Engine
    engine: Literal["vllm", "transformers"] = "vllm"
    tp: int = Field(1, ge=1, description="Tensor-parallel GPUs per engine.")
    dp: int = Field(1, ge=1, description=(
        "Data-parallel engines, each of --tp GPUs in its own process (on the CPU build: its own cores), fed "
        "from one work queue; the rows equal those of --dp 1."))
    ray_address: str | None = Field(None, min_length=1, description=(
        "Run the --dp engines as Ray actors on this cluster: auto or ray://HOST:PORT (needs ssogen[ray])."))
    dtype: str = "auto"
    max_model_len: int | None = Field(None, ge=16)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    kv_cache_gb: float | None = Field(None, gt=0.0, description="KV-cache size in GiB (CPU build: default 0.25).")

    @model_validator(mode="before")
    @classmethod
    def _chunk_size_per_engine(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("chunk_size") is None:
            engines = data.get("dp") if isinstance(data.get("dp"), int) else 1
            data = {**data, "chunk_size": CHUNK_ROWS_PER_ENGINE * max(1, engines)}
        return data

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            tensor_parallel_size=self.tp,
            data_parallel_size=self.dp,
            ray_address=self.ray_address,
            gpu_memory_utilization=self.gpu_memory_utilization,
            kv_cache_memory_bytes=int(self.kv_cache_gb * 2**30) if self.kv_cache_gb else None,
            seed=self.seed,
        )

    def fingerprint(self, library_sha256: str, templates_digest: str) -> str:
        """Hash of everything that decides row contents; a resumed run must match it."""
        content = {k: v for k, v in self.model_dump().items() if k not in NOT_FINGERPRINTED}
        content["library_sha256"] = library_sha256
        content["templates_digest"] = templates_digest
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a YAML file (keys with dashes or underscores); unknown keys are an error."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise UserError(f"--config {path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of option names to values")
    options = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(options) - set(RunConfig.model_fields))
    if unknown:
        raise UserError(f"--config {path}: unknown key(s): {', '.join(unknown)}")
    return options


def resolve_config(flags: dict[str, Any], config_file: str | Path | None = None) -> RunConfig:
    """defaults < config file < flags (flags that were not given are None and do not override)."""
    merged: dict[str, Any] = read_config_file(config_file) if config_file is not None else {}
    merged.update({k: v for k, v in flags.items() if v is not None})
    source = f"--config {config_file}" if config_file is not None else "options"
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "--" + "-".join(str(x) for x in err["loc"]).replace("_", "-") if err["loc"] else source
        if err["type"] == "missing":
            raise UserError(f"{name} is required (give it on the command line or in the config file)") \
                from None
        raise UserError(f"{name}: {err['msg']} (got {err.get('input')!r}, from {source})") from None


def to_yaml(config: RunConfig) -> str:
    from io import StringIO

    from ruamel.yaml import YAML

    stream = StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(config.model_dump(), stream)
    return stream.getvalue()
