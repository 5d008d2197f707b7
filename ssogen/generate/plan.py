"""Everything a generate run knows before a model is loaded: the library, the templates, the queries, the model
reference and the output folder's verdict. Every bad input is found here, in about a second, before torch,
transformers or vLLM are imported; `--dry-run` shows the plan and stops."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ssogen.dataset.card import card_templates
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.shards import ShardStore
from ssogen.engine.dtypes import engine_dtype, precision_names
from ssogen.engine.options import canonical_dtype
from ssogen.engine.placement import context_problem
from ssogen.errors import UserError
from ssogen.fingerprint import ModelFingerprint, model_fingerprint
from ssogen.generate.config import RunConfig
from ssogen.generate.inputs import PromptsRead, Row, read_prompts
from ssogen.generate.steps import principle_writing, sampling, selection
from ssogen.io import read_json_object
from ssogen.models import ModelRef, resolve_model
from ssogen.principles import Library, LibraryError, LoadedLibrary, load_library
from ssogen.records import row_id
from ssogen.templating import Templates

TEMPLATE_NAMES = (selection.TEMPLATE, sampling.TEMPLATE, principle_writing.TEMPLATE)


@dataclass
class RunPlan:
    """Everything known before a model is loaded (what --dry-run shows)."""

    config: RunConfig
    model: ModelRef
    loaded_library: LoadedLibrary
    templates: Templates
    templates_digest: str
    prompts: PromptsRead
    rows: list[Row]

    @property
    def library(self) -> Library:
        return self.loaded_library.library

    @cached_property
    def model_fingerprint(self) -> ModelFingerprint:
        """Read once, on first use (a dry run never needs it): file reads only, or the hub's answer for a hub id."""
        return model_fingerprint(self.model)

    @cached_property
    def _precision(self) -> tuple[str, tuple[str, ...]]:
        config = self.config
        return precision_names(config.engine, self.model.path, config.engine_options())

    @property
    def dtype(self) -> str:
        """The precision the rows are sampled at, as the fingerprint records it: --dtype as the engine will resolve
        it here (half is float16, auto float32 on the CPU); "auto" when only the loaded engine can tell (the
        transformers engine on a GPU, for a config naming no dtype and a checkpoint whose headers are not at hand)."""
        return self._precision[0]

    @property
    def dtype_spellings(self) -> tuple[str, ...]:
        """The --dtype values that give this precision here: what a run of an earlier version, which recorded
        --dtype as typed, may have recorded for it. Its `auto` is the precision its engine recorded loading, where
        it did (`_ran_at`: a GPU's bfloat16 is not this CPU's float32), else taken as what auto means here."""
        names, ran_at = self._precision[1], self._ran_at
        if ran_at is None or self.dtype == "auto":
            return names
        # vLLM's bfloat16 for auto is float16 on a GPU without it: what its engine said on this machine, maybe.
        guessed = (self.config.engine == "vllm" and self.config.dtype == "auto" and self.dtype == "bfloat16"
                   and ran_at == "float16")
        named = tuple(name for name in names if name != "auto")
        return ("auto", *named) if ran_at == self.dtype or guessed else named

    @cached_property
    def _ran_at(self) -> str | None:
        """The precision the engine of the run in --out loaded at, as it recorded it: the work dir's
        `engine_settings.json` (the last invocation that loaded one), else its manifest's `engine_settings`; None
        when it recorded none (a version before those files, or no engine loaded yet)."""
        folder = OutputFolder(self.config.out)
        settings = ShardStore(folder).saved_engine_settings() or (read_json_object(folder.manifest) or {}).get(
            "engine_settings")
        return engine_dtype(settings if isinstance(settings, dict) else None)

    def fingerprint(self) -> dict[str, Any]:
        parts, queries = self.model_fingerprint.parts, self.prompts.queries_sha256
        return {"fingerprint": self.config.fingerprint(self.loaded_library.sha256, self.templates_digest, parts,
                                                       queries, self.dtype),
                "config": self.config.fingerprinted(parts, queries, self.dtype),
                "library_sha256": self.loaded_library.sha256, "templates_digest": self.templates_digest}

    @property
    def refusal_hints(self) -> dict[str, str]:
        """What a changed fingerprint part means, for the refusal of an output folder (`check_fingerprint`)."""
        given = self.config.prompts if self.config.prompts is not None else "(not given: the bundled demo queries)"
        templates = f"--templates {self.config.templates}" if self.config.templates else "the bundled templates"
        return {"prompts.queries_sha256": f"the queries of --prompts {given} are not those this run used",
                "library_sha256": f"the principle library --principles {self.config.principles} is not the one this "
                                  "run used",
                "templates_digest": f"{templates} are not those this run used",
                "dtype": self._dtype_hint(),
                # Only a run of an earlier version records the path (`earlier_fingerprints`).
                "prompts": "it resumes only with the --prompts path, --prompt-field and --split it was started with"}

    def _dtype_hint(self) -> str:
        """The precision the run in --out recorded and the one this run would sample at, in words."""
        stored = (read_json_object(OutputFolder(self.config.out).fingerprint) or {}).get("config")
        before = stored.get("dtype") if isinstance(stored, dict) else None
        if before not in (None, "auto"):
            that = f"that run sampled its rows at {canonical_dtype(before)}"
        elif self._ran_at is not None:
            that = f"that run sampled its rows at {self._ran_at} (its --dtype auto, on the machine it ran on)"
        else:
            that = "that run recorded --dtype auto, not the precision it ran at"
        if self.dtype == "auto":
            return f"{that}, this one would at the checkpoint's own dtype (--dtype auto; its config names none)"
        typed = "" if self.config.dtype == self.dtype else f" (what --dtype {self.config.dtype} means here)"
        return f"{that}, this one would at {self.dtype}{typed}"

    @property
    def earlier_fingerprints(self) -> tuple[str, ...]:
        """This run's fingerprint under earlier versions' rules, which recorded --dtype as typed, with each spelling
        of its precision here (`dtype_spellings`): the rule before this one (the queries' digest), and the one
        before that (the prompts path, not the queries). A run they started resumes, and a finished one is left as
        it is (`unchanged_finished_run`)."""
        library, templates, parts = self.loaded_library.sha256, self.templates_digest, self.model_fingerprint.parts
        found = [fingerprint for typed in self.dtype_spellings for fingerprint in (
            self.config.fingerprint(library, templates, parts, self.prompts.queries_sha256, typed),
            self.config.earlier_fingerprint(library, templates, parts, typed))]
        current = self.fingerprint()["fingerprint"]
        return tuple(fingerprint for fingerprint in dict.fromkeys(found) if fingerprint != current)

    @property
    def alike(self) -> dict[str, tuple[str, ...]]:
        """The stored settings that mean this run's (`check_fingerprint`): a spelling of its precision."""
        return {"dtype": self.dtype_spellings}

    def check_output_folder(self, *, overwrite: bool, look_up_hub: bool = True) -> bool:
        """Read-only: refuse --out when it holds another configuration's run or files of no run. True when the
        run would resume. `look_up_hub=False` (the dry run): a hub model's run is not compared, as its fingerprint
        asks the hub."""
        store = ShardStore(self.config.out)
        if not look_up_hub and not self.model.local:
            return store.holds_a_run_to_match(overwrite=overwrite)
        return store.check(self.fingerprint(), overwrite=overwrite, hints=self.refusal_hints,
                           earlier=self.earlier_fingerprints, alike=self.alike)


def plan_run(config: RunConfig) -> RunPlan:
    """Load and validate the library, templates and prompts, and classify the model; no model is touched."""
    model = resolve_model(config.model)
    if config.engine == "vllm" and (too_long := context_problem(model.path, config.max_model_len)):
        raise UserError(too_long)  # vLLM would refuse it only after the folder was taken
    try:
        loaded = load_library(config.principles)
    except LibraryError as exc:
        raise UserError(f"--principles {exc.summary()}" if exc.unreadable
                        else f"--principles: invalid library: {exc.summary()}") from None
    if config.features_per_query > len(loaded.library.features):
        raise UserError(f"--features-per-query {config.features_per_query}: the library has only "
                        f"{len(loaded.library.features)} features")
    templates = Templates(config.templates)
    digest = templates.digest(TEMPLATE_NAMES)
    _check_templates(templates, loaded.library, config)
    card_templates(config.templates)  # the card is written at the end: a broken card.md.jinja fails now
    prompts = read_prompts(config.prompts, prompt_field=config.prompt_field, split=config.split,
                           limit=config.limit)
    rows = [Row(id=row_id(r.text, r.position), position=r.position, prompt=r.text) for r in prompts.rows]
    return RunPlan(config=config, model=model, loaded_library=loaded, templates=templates, templates_digest=digest,
                   prompts=prompts, rows=rows)


def _check_templates(templates: Templates, library: Library, config: RunConfig) -> None:
    """Render every prompt template once with library content: a broken or empty one fails now, in a second."""
    sampling.check_system_template(templates, [*library.features, *library.extras])
    query = library.examples[0].query if library.examples else "What is a good question?"
    rendered = {selection.TEMPLATE: selection.selection_prompt(templates, library, query, config.features_per_query)}
    if config.principle_source == "policy":
        rendered[principle_writing.TEMPLATE] = principle_writing.principle_writer_prompt(
            templates, library.features[0], query)
    for name, text in rendered.items():
        if not text.strip():
            raise UserError(f"{templates.source_of(name)}: renders an empty prompt")

