"""The resolved configuration of a `generate` run: defaults < `--config run.yaml` < command-line flags.

Each field is the whole definition of one `ssogen generate` option (flag, help, YAML key, validation)."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, field_validator, model_validator

from ssogen.dataset.license import LICENSE_DEFAULT, LICENSE_HELP, check_license
from ssogen.engine.options import CHUNK_ROWS_PER_ENGINE, EngineFields, EngineOptions
from ssogen.fingerprint import json_sha256
from ssogen.generate.prompt_files import FILE_TYPES
from ssogen.settings import command_settings, option
from ssogen.settings_resolution import resolve_settings

# Options a run may be resumed with different values of: they decide where, how fast or in what memory the rows
# are computed, not what the rows are (each request carries its own seed, derived from --seed and the row).
# * out, limit, chunk_size: which rows and in which batches; rows are kept by id.
# * dp, ray_address, tp: where the engines run. (Tensor parallelism may change floating-point rounding, as any
#   batch composition may on a GPU; each row is still a sample of the same model with the same settings.)
# * gpu_memory_utilization, kv_cache_gb: memory only; the natural fix after an out-of-memory crash.
# * license, test_size: only the card and the layout of the data files.
# * model, principles, templates, prompts: paths; what they hold is fingerprinted instead (model fingerprint,
#   library sha256, templates digest, `prompts.queries_sha256`), so a moved file or folder resumes and a changed one
#   is refused. The queries' digest covers every usable row of the input (so a larger --limit resumes).
# * prompt_field, split: which rows and field give the queries; the queries' digest holds what they decide (each
#   usable row's position and text), so another field or split giving the same queries resumes.
# Kept in the fingerprint: engine and dtype (other kernels and precision give other samples) and max_model_len,
# which decides which prompts are too long and clips each request's max_tokens to the room left in the context.
# dtype as the engine will run at it (`RunPlan.dtype`: half is float16, auto on the CPU float32), not as typed.
# Of these, the ones that decide neither the rows nor which rows (where, how fast, in what memory, and the card's
# license): `ssogen iterate` resumes its run across them too, finished generate steps included.
RUNTIME_KEYS = frozenset({"chunk_size", "dp", "ray_address", "tp", "gpu_memory_utilization", "kv_cache_gb", "license"})
NOT_FINGERPRINTED = RUNTIME_KEYS | frozenset({"out", "limit", "test_size", "model", "principles", "templates",
                                             "prompts", "prompt_field", "split"})
# The rule of versions before the queries' digest: the --prompts path, --prompt-field and --split were fingerprinted.
# A run it started resumes when this rule gives its stored fingerprint (same path, same options): its rows are keyed
# by their text and position, so a row of a query edited since is computed again, never reused. Both rules recorded
# --dtype as typed until the precision replaced it (`RunPlan.earlier_fingerprints`).
EARLIER_NOT_FINGERPRINTED = NOT_FINGERPRINTED - {"prompts", "prompt_field", "split"}

IO_PANEL = "Inputs and outputs"
SELECT_PANEL = "Selection and principles"
SAMPLE_PANEL = "Sampling and filters"
_ENGINES = TypeAdapter(int)


class _RunFields(BaseModel):
    model: str = option(..., "Model folder or hub id (the policy).", panel=IO_PANEL)
    out: str = option(..., "Output folder (a Hub dataset repo).", panel=IO_PANEL, metavar="FOLDER")
    principles: str = option("default", "Principle library: a YAML file or a bundled name.", panel=IO_PANEL,
                             min_length=1)
    prompts: str | None = option(None, f"Queries: {'/'.join(FILE_TYPES)}, a datasets folder or a hub id.",
                                 panel=IO_PANEL, default_text="the bundled demo queries", min_length=1)
    prompt_field: str = option("prompt", "Field holding the query.", panel=IO_PANEL, min_length=1)
    split: str = option("train", "Split of a dataset input.", panel=IO_PANEL, min_length=1)
    limit: int | None = option(None, "Use only the first N usable prompts (a row without the field, or blank, is "
                               "skipped and not counted).", ge=1, panel=IO_PANEL, default_text="all")
    templates: str | None = option(None, "Folder overriding the prompt templates.", panel=IO_PANEL,
                                   default_text="bundled", metavar="FOLDER", min_length=1)
    license: str = option(LICENSE_DEFAULT, LICENSE_HELP, panel=IO_PANEL)
    test_size: float | None = option(
        None, "Hold out this share of the queries as a test split (seeded with --seed; every row of a query "
        "in the same split).", gt=0.0, lt=1.0, panel=IO_PANEL, default_text="none: one train split")
    # Feature selection and principles: the policy picks k features per query, S+/S- are built from them.
    features_per_query: int = option(2, "Features chosen per query (k).", ge=1, flags=("--features-per-query", "-k"),
                                     panel=SELECT_PANEL)
    selection: Literal["free", "guided"] = option(
        "free", "free (parse the policy's answer) or guided (vLLM structured outputs: exactly --features-per-query "
        "different library names).", panel=SELECT_PANEL)
    selection_max_tokens: int = option(32, "Tokens for the selection answer (raised to 10 per feature when lower).",
                                       ge=1, panel=SELECT_PANEL)
    extra_prob: float | None = option(None, "Probability of adding each library extra.", ge=0.0, le=1.0,
                                      panel=SELECT_PANEL, default_text="the library's")
    principle_source: Literal["library", "policy"] = option(
        "library", "library (fixed texts) or policy (query-specific JSON, library text where it does not parse).",
        panel=SELECT_PANEL)
    principle_max_tokens: int = option(256, "Tokens for each query-specific principle (--principle-source "
                                       "policy).", ge=1, panel=SELECT_PANEL)
    # Sampling of y+, y-, yo, and the cheap filters.
    temperature: float = option(0.7, "Sampling temperature.", ge=0.0, panel=SAMPLE_PANEL)
    top_p: float = option(0.8, "Nucleus sampling top-p.", gt=0.0, le=1.0, panel=SAMPLE_PANEL)
    max_tokens: int = option(2048, "New tokens per response.", ge=1, panel=SAMPLE_PANEL)
    raw_greedy: bool = option(False, "Sample yo (plain query) greedily.", panel=SAMPLE_PANEL)
    seed: int = option(0, "Run seed; per-request seeds derive from it.", ge=0, lt=2**32, panel=SAMPLE_PANEL)
    chunk_size: int = option(CHUNK_ROWS_PER_ENGINE, "Rows per batched engine call and per saved chunk.", ge=1,
                             panel=SAMPLE_PANEL,
                             default_text=f"{CHUNK_ROWS_PER_ENGINE} per engine ({CHUNK_ROWS_PER_ENGINE} x --dp)")
    keep_truncated: bool = option(False, "Keep rows whose responses hit --max-tokens.",
                                  flags=("--keep-truncated/--drop-truncated",), panel=SAMPLE_PANEL)
    keep_empty: bool = option(False, "Keep rows with an empty response (flagged and counted either way).",
                              flags=("--keep-empty/--drop-empty",), panel=SAMPLE_PANEL)


# pydantic lists the fields of the last base first: this order keeps the engine options last, as written in
# config.resolved.yaml by every earlier version.
@command_settings("ssogen generate")
class RunConfig(EngineFields, _RunFields):
    """Every option of `ssogen generate`; the YAML config file uses the same names (dashes or underscores)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf or nan is no setting

    @model_validator(mode="before")
    @classmethod
    def _chunk_size_per_engine(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("chunk_size") is None:
            # --dp as its field reads it: `dp: "4"` or `dp: 4.0` in a config file is 4 engines, as `--dp 4` is
            # (a --dp the field refuses is reported by the field; bool is refused before, as no number)
            try:
                engines = _ENGINES.validate_python(data.get("dp", 1))
            except ValidationError:
                engines = 1
            data = {**data, "chunk_size": CHUNK_ROWS_PER_ENGINE * max(1, engines)}
        return data

    _license = field_validator("license")(check_license)

    @model_validator(mode="after")
    def _compatible(self) -> RunConfig:
        if self.engine == "transformers" and self.selection == "guided":
            raise ValueError("--selection guided needs vLLM structured outputs; use --selection free with "
                             "--engine transformers")
        return self

    def engine_options(self, seed: int | None = None) -> EngineOptions:
        """The engine settings, seeded with the run seed."""
        return super().engine_options(self.seed if seed is None else seed)

    def fingerprinted(self, model_parts: dict[str, str], queries_sha256: str, dtype: str) -> dict[str, Any]:
        """The settings that decide row contents, the model's fingerprint parts as `model.<part>` and the digest of
        the queries (`PromptsRead.queries_sha256`) as `prompts.queries_sha256`. `dtype`: the precision the engine
        runs at (`RunPlan.dtype`) in place of --dtype as typed (earlier versions recorded it as typed)."""
        content = {k: v for k, v in self.model_dump().items() if k not in NOT_FINGERPRINTED}
        return {**content, "dtype": dtype, **{f"model.{part}": value for part, value in model_parts.items()},
                "prompts.queries_sha256": queries_sha256}

    def fingerprint(self, library_sha256: str, templates_digest: str, model_parts: dict[str, str],
                    queries_sha256: str, dtype: str) -> str:
        """Hash of everything that decides row contents; a resumed run must match it."""
        return _digest({**self.fingerprinted(model_parts, queries_sha256, dtype), "library_sha256": library_sha256,
                        "templates_digest": templates_digest})

    def earlier_fingerprint(self, library_sha256: str, templates_digest: str, model_parts: dict[str, str],
                            dtype: str) -> str:
        """The fingerprint the rule before the queries' digest (`EARLIER_NOT_FINGERPRINTED`) gave this configuration
        with --dtype typed as `dtype`."""
        content = {k: v for k, v in self.model_dump().items() if k not in EARLIER_NOT_FINGERPRINTED}
        return _digest({**content, "dtype": dtype, **{f"model.{part}": value for part, value in model_parts.items()},
                        "library_sha256": library_sha256, "templates_digest": templates_digest})


def _digest(content: dict[str, Any]) -> str:
    return json_sha256(content)


def resolve_config(flags: dict[str, Any], config_file: str | Path | None = None) -> RunConfig:
    """defaults < config file < flags (flags that were not given are None and do not override)."""
    return resolve_settings(RunConfig, flags, config_file)


def to_yaml(options: RunConfig | dict[str, Any]) -> str:
    from ruamel.yaml import YAML

    stream = StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(options.model_dump() if isinstance(options, RunConfig) else options, stream)
    return stream.getvalue()


def public_yaml(config: RunConfig, *, model: str, prompts: dict[str, str]) -> str:
    """config.resolved.yaml as published: the options with every local path replaced (the model and the
    queries by their names, --templates by its folder name, the library by the copy stored in the folder,
    --out by "."), so that no file of the folder carries the user's home folder."""
    options = config.model_dump()
    options.update(out=".", model=model, principles="library.yaml",
                   prompts=None if config.prompts is None else prompts["source"],
                   templates=None if config.templates is None else Path(config.templates).resolve().name)
    header = ("# The options of this run. Local paths are replaced by names: the model and the queries by their\n"
              "# names (manifest.json has their fingerprints), the library by the copy in this folder.\n")
    return header + to_yaml(options)
