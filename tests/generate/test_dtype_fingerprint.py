"""A generate run is fingerprinted by the precision the engine runs at, not by --dtype as typed: on the CPU `auto` is
float32, half is float16. A run of the previous version (which recorded --dtype as typed) still resumes, and one it
finished is not written again; two precisions stay two runs, and the refusal names both."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ssogen.dataset.folder import CONFIGS, OutputFolder
from ssogen.dataset.shards import ShardStore
from ssogen.errors import UserError
from ssogen.generate.config import RunConfig
from ssogen.generate.plan import RunPlan, plan_run
from ssogen.generate.run import run_generate

BASE: dict[str, Any] = {"engine": "transformers", "max_tokens": 8, "keep_truncated": True, "limit": 2}


def config(model: Path, out: Path, **options: Any) -> RunConfig:
    return RunConfig(model=str(model), out=str(out), **{**BASE, **options})


@pytest.fixture(scope="module")
def finished(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> Path:
    """A run finished with --dtype auto (float32 on the CPU) by the transformers engine."""
    out = tmp_path_factory.mktemp("dtype") / "run"
    run_generate(config(tiny_model, out))
    return out


def started(model: Path, out: Path, dtype: str) -> RunPlan:
    """The plan of a run started (one selection saved) with `dtype` in `out`."""
    plan = plan_run(config(model, out, dtype=dtype))
    store = ShardStore(out)
    store.prepare(plan.fingerprint(), overwrite=False)
    store.append("selection", [{"id": plan.rows[0].id}])  # saved work: without any, any configuration may start
    store.close()
    return plan


def would_resume(model: Path, out: Path, **options: Any) -> bool:
    return plan_run(config(model, out, **options)).check_output_folder(overwrite=False)


def data_bytes(out: Path) -> dict[str, bytes]:
    return {name: OutputFolder(out).config_file(name).read_bytes() for name in CONFIGS}


# What the previous version left out of its fingerprint; it recorded --dtype as typed.
PREVIOUS_NOT_FINGERPRINTED = {"out", "limit", "chunk_size", "dp", "ray_address", "tp", "gpu_memory_utilization",
                              "kv_cache_gb", "license", "test_size", "model", "principles", "templates", "prompts",
                              "prompt_field", "split"}


def previous_fingerprint(plan: RunPlan) -> dict[str, Any]:
    """fingerprint.json as the previous version wrote it for this plan (its formula, copied here)."""
    parts = {f"model.{part}": value for part, value in plan.model_fingerprint.parts.items()}
    config = {**{k: v for k, v in plan.config.model_dump().items() if k not in PREVIOUS_NOT_FINGERPRINTED}, **parts,
              "prompts.queries_sha256": plan.prompts.queries_sha256}
    digest = hashlib.sha256(json.dumps({**config, "library_sha256": plan.loaded_library.sha256,
                                        "templates_digest": plan.templates_digest}, sort_keys=True).encode())
    return {"fingerprint": digest.hexdigest(), "config": config, "library_sha256": plan.loaded_library.sha256,
            "templates_digest": plan.templates_digest}


def test_auto_and_float32_are_one_run_on_the_cpu(finished: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = Path(shutil.copytree(finished, tmp_path / "run"))
    assert json.loads(OutputFolder(out).fingerprint.read_text())["config"]["dtype"] == "float32"
    before = data_bytes(out)
    for dtype in ("float32", "float", "auto"):
        assert would_resume(tiny_model, out, dtype=dtype) is True
        result = run_generate(config(tiny_model, out, dtype=dtype))
        assert result.unchanged is True, dtype
    assert data_bytes(out) == before
    assert plan_run(config(tiny_model, out, dtype="float")).fingerprint() \
        == plan_run(config(tiny_model, out)).fingerprint()


def test_half_and_float16_are_one_run(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    plan = started(tiny_model, out, "half")
    assert plan.fingerprint()["config"]["dtype"] == "float16"
    assert would_resume(tiny_model, out, dtype="float16") is True
    assert plan_run(config(tiny_model, out, dtype="float16")).fingerprint() == plan.fingerprint()


@pytest.mark.parametrize(("first", "then", "words"), [
    ("float32", "bfloat16", "that run sampled its rows at float32, this one would at bfloat16"),
    ("bfloat16", "auto", "that run sampled its rows at bfloat16, this one would at float32 (what --dtype auto means "
                         "here)"),
    ("half", "float32", "that run sampled its rows at float16, this one would at float32")])
def test_two_precisions_are_two_runs_and_the_refusal_names_them(tiny_model: Path, tmp_path: Path, first: str,
                                                                then: str, words: str) -> None:
    out = tmp_path / "run"
    started(tiny_model, out, first)
    with pytest.raises(UserError) as refused:
        would_resume(tiny_model, out, dtype=then)
    assert str(refused.value) == (f"--out {out}: holds a run with a different configuration (changed: dtype); "
                                  f"{words}; use --overwrite to replace it or choose another --out")


def test_a_run_the_previous_version_started_resumes_with_any_spelling_of_its_precision(
        tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    plan = started(tiny_model, out, "auto")
    OutputFolder(out).fingerprint.write_text(json.dumps(previous_fingerprint(plan)))
    for dtype in ("float32", "float", "auto"):
        assert would_resume(tiny_model, out, dtype=dtype) is True, dtype
    # A setting that did change is named alone: `auto` recorded as typed is this run's float32.
    with pytest.raises(UserError, match=r"\(changed: temperature\); use --overwrite"):
        would_resume(tiny_model, out, dtype="float32", temperature=0.5)
    with pytest.raises(UserError, match="that run recorded --dtype auto, not the precision it ran at, this one would "
                                        "at bfloat16;"):
        would_resume(tiny_model, out, dtype="bfloat16")
    # Resumed, it gets this version's fingerprint.
    now = plan_run(config(tiny_model, out, dtype="float32"))
    assert ShardStore(out).prepare(now.fingerprint(), overwrite=False, hints=now.refusal_hints,
                                   earlier=now.earlier_fingerprints, alike=now.alike) is True
    assert json.loads(OutputFolder(out).fingerprint.read_text()) == now.fingerprint()


def test_a_run_the_previous_version_finished_is_not_written_again(finished: Path, tiny_model: Path,
                                                                  tmp_path: Path) -> None:
    """Writing it again would drop what `score` added to it."""
    out = Path(shutil.copytree(finished, tmp_path / "run"))
    folder = OutputFolder(out)
    previous = previous_fingerprint(plan_run(config(tiny_model, out)))
    folder.fingerprint.write_text(json.dumps(previous))
    folder.write_manifest({**folder.read_manifest(), "fingerprint": previous["fingerprint"]})
    before = data_bytes(out)
    for dtype in ("auto", "float32"):
        result = run_generate(config(tiny_model, out, dtype=dtype))
        assert result.unchanged is True, dtype
    assert data_bytes(out) == before and folder.read_manifest()["fingerprint"] == previous["fingerprint"]


def test_a_previous_versions_auto_run_is_its_engines_precision_where_it_recorded_it(tiny_model: Path,
                                                                                    tmp_path: Path) -> None:
    """That version recorded --dtype auto as typed, and its engine the precision it loaded at: a run begun on a GPU
    at bfloat16 is not resumed at this CPU's float32, and is with --dtype bfloat16."""
    out = tmp_path / "run"
    plan = started(tiny_model, out, "auto")
    OutputFolder(out).fingerprint.write_text(json.dumps(previous_fingerprint(plan)))
    gpu = {"dtype": "bfloat16", "max_model_len": 4096, "device": "cuda"}
    ShardStore(out).save_engine_settings(gpu)
    for dtype in ("auto", "float32"):
        with pytest.raises(UserError) as refused:
            would_resume(tiny_model, out, dtype=dtype)
        typed = " (what --dtype auto means here)" if dtype == "auto" else ""
        assert str(refused.value) == (
            f"--out {out}: holds a run with a different configuration (changed: dtype); that run sampled its rows "
            f"at bfloat16 (its --dtype auto, on the machine it ran on), this one would at float32{typed}; use "
            "--overwrite to replace it or choose another --out")
    assert would_resume(tiny_model, out, dtype="bfloat16") is True
    # A finished run's manifest says it too.
    (OutputFolder(out).work_dir / "engine_settings.json").unlink()
    OutputFolder(out).write_manifest({"engine_settings": gpu})
    with pytest.raises(UserError, match=r"at bfloat16 \(its --dtype auto, on the machine it ran on\), this one would "
                                        r"at float32 \(what --dtype auto means here\)"):
        would_resume(tiny_model, out)
    # Run on a CPU, as here: auto is float32.
    ShardStore(out).save_engine_settings({**gpu, "dtype": "float32", "device": "cpu"})
    assert would_resume(tiny_model, out) is True
    assert would_resume(tiny_model, out, dtype="float") is True
    with pytest.raises(UserError, match="that run sampled its rows at float32"):
        would_resume(tiny_model, out, dtype="bfloat16")
