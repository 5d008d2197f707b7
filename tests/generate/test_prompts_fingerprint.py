"""The queries are fingerprinted by what they hold, not by their path: a moved, renamed or relatively named prompts
file resumes, a larger --limit resumes, a file edited in place is refused naming --prompts (and a changed library
or templates folder is named). Plan level: the verdict on --out comes before any model is loaded (the end-to-end
resume is in test_safe_output.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.shards import ShardStore
from ssogen.errors import UserError
from ssogen.generate.config import RunConfig
from ssogen.generate.inputs import read_prompts
from ssogen.generate.plan import RunPlan, plan_run

QUERIES = [f"Question number {i}: what is {i} squared?" for i in range(6)]


def write_queries(path: Path, queries: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in queries))
    return path


def would_resume(model: Path, out: Path, prompts: str, **options: object) -> bool:
    config = RunConfig(model=str(model), out=str(out), prompts=prompts, **{"limit": 3, **options})
    return plan_run(config).check_output_folder(overwrite=False)


@pytest.fixture
def started(tiny_model: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(prompts file, --out) of a run started on the first 3 of 6 queries."""
    prompts = write_queries(tmp_path / "queries.jsonl", QUERIES)
    out = tmp_path / "out"
    plan = plan_run(RunConfig(model=str(tiny_model), out=str(out), prompts=str(prompts), limit=3))
    store = ShardStore(out)
    store.prepare(plan.fingerprint(), overwrite=False)
    store.append("selection", [{"id": plan.rows[0].id}])  # saved work: without any, any configuration may start
    store.close()
    return prompts, out


def test_the_queries_digest_is_the_usable_rows_not_the_file(tmp_path: Path) -> None:
    jsonl = read_prompts(str(write_queries(tmp_path / "q.jsonl", QUERIES)))
    csv = tmp_path / "q.csv"
    csv.write_text("question\n" + "".join(f'"{q}"\n' for q in QUERIES))
    assert read_prompts(str(csv), prompt_field="question").queries_sha256 == jsonl.queries_sha256
    # --limit takes fewer rows, the digest still covers the whole input.
    assert read_prompts(str(tmp_path / "q.jsonl"), limit=2).queries_sha256 == jsonl.queries_sha256
    edited = [*QUERIES[:5], "Another last question?"]
    assert read_prompts(str(write_queries(tmp_path / "e.jsonl", edited)), limit=2).queries_sha256 \
        != jsonl.queries_sha256
    # A row moved to another position is another row (its id and seeds hash its position).
    swapped = [QUERIES[1], QUERIES[0], *QUERIES[2:]]
    assert read_prompts(str(write_queries(tmp_path / "s.jsonl", swapped))).queries_sha256 != jsonl.queries_sha256
    assert read_prompts(None).queries_sha256 not in ("", jsonl.queries_sha256)


def test_a_moved_renamed_or_relatively_named_prompts_file_resumes(started: tuple[Path, Path], tiny_model: Path,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    prompts, out = started
    moved = tmp_path / "elsewhere" / "renamed.jsonl"
    moved.parent.mkdir()
    prompts.rename(moved)
    assert would_resume(tiny_model, out, str(moved)) is True
    monkeypatch.chdir(moved.parent)
    assert would_resume(tiny_model, out, "renamed.jsonl") is True


def test_a_larger_limit_on_the_same_file_resumes(started: tuple[Path, Path], tiny_model: Path) -> None:
    prompts, out = started
    assert would_resume(tiny_model, out, str(prompts), limit=5) is True
    assert would_resume(tiny_model, out, str(prompts), limit=None) is True


def test_a_prompts_file_edited_in_place_is_refused_naming_it(started: tuple[Path, Path], tiny_model: Path) -> None:
    prompts, out = started
    write_queries(prompts, [QUERIES[0], "An edited second question?", *QUERIES[2:]])
    with pytest.raises(UserError) as refused:
        would_resume(tiny_model, out, str(prompts))
    assert str(refused.value) == (
        f"--out {out}: holds a run with a different configuration (changed: prompts.queries_sha256); the queries of "
        f"--prompts {prompts} are not those this run used; use --overwrite to replace it or choose another --out")


def test_the_demo_queries_are_named_when_they_replace_a_file(started: tuple[Path, Path], tiny_model: Path) -> None:
    _, out = started
    with pytest.raises(UserError, match=r"the queries of --prompts \(not given: the bundled demo queries\) are not "
                                        "those this run used"):
        plan_run(RunConfig(model=str(tiny_model), out=str(out), limit=3)).check_output_folder(overwrite=False)


# What the previous version left out of its fingerprint (it fingerprinted the prompts path, field and split).
PREVIOUS_NOT_FINGERPRINTED = {"out", "limit", "chunk_size", "dp", "ray_address", "tp", "gpu_memory_utilization",
                              "kv_cache_gb", "license", "test_size", "model", "principles", "templates"}


def write_previous_fingerprint(plan: RunPlan) -> None:
    """fingerprint.json as the previous version wrote it for this plan (its formula, copied here)."""
    parts = {f"model.{part}": value for part, value in plan.model_fingerprint.parts.items()}
    config = {**{k: v for k, v in plan.config.model_dump().items() if k not in PREVIOUS_NOT_FINGERPRINTED}, **parts}
    content = {**config, "library_sha256": plan.loaded_library.sha256, "templates_digest": plan.templates_digest}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    OutputFolder(plan.config.out).fingerprint.write_text(json.dumps(
        {"fingerprint": digest, "config": config, "library_sha256": plan.loaded_library.sha256}))


def test_a_run_of_the_previous_version_resumes_from_its_path_and_gets_this_fingerprint(
        started: tuple[Path, Path], tiny_model: Path, tmp_path: Path) -> None:
    prompts, out = started
    plan = plan_run(RunConfig(model=str(tiny_model), out=str(out), prompts=str(prompts), limit=3))
    write_previous_fingerprint(plan)
    assert plan.check_output_folder(overwrite=False) is True
    assert ShardStore(out).prepare(plan.fingerprint(), overwrite=False, hints=plan.refusal_hints,
                                   earlier=plan.earlier_fingerprints) is True
    assert json.loads(OutputFolder(out).fingerprint.read_text())["fingerprint"] == plan.fingerprint()["fingerprint"]
    moved = prompts.rename(tmp_path / "moved.jsonl")  # fingerprinted by its queries from now on
    assert would_resume(tiny_model, out, str(moved)) is True


def test_a_run_of_the_previous_version_from_another_path_is_refused_saying_so(
        started: tuple[Path, Path], tiny_model: Path, tmp_path: Path) -> None:
    prompts, out = started
    write_previous_fingerprint(plan_run(RunConfig(model=str(tiny_model), out=str(out), prompts=str(prompts),
                                                  limit=3)))
    moved = prompts.rename(tmp_path / "moved.jsonl")
    with pytest.raises(UserError) as refused:
        would_resume(tiny_model, out, str(moved))
    assert str(refused.value) == (
        f"--out {out}: holds a run with a different configuration (changed: prompt_field, prompts, "
        "prompts.queries_sha256, split); that run was written by an earlier ssogen, which did not record "
        "prompts.queries_sha256; it resumes only with the --prompts path, --prompt-field and --split it was started "
        "with; use --overwrite to replace it or choose another --out")


def test_a_changed_library_or_templates_folder_is_named(started: tuple[Path, Path], tiny_model: Path,
                                                        tmp_path: Path) -> None:
    """The refusal names what changed and where it comes from (the digests sit beside the config)."""
    from ssogen.principles import load_library

    prompts, out = started
    library = tmp_path / "library.yaml"
    library.write_text(load_library("default").path.read_text() + "# a comment is a change too\n")
    with pytest.raises(UserError, match=rf"\(changed: library_sha256\); the principle library --principles {library} "
                                        "is not the one this run used; use --overwrite"):
        would_resume(tiny_model, out, str(prompts), principles=str(library))
    templates = tmp_path / "templates"
    templates.mkdir()
    bundled = Path(__file__).parents[2] / "ssogen" / "templates" / "system.jinja"
    (templates / "system.jinja").write_text(bundled.read_text().replace("directly", "plainly"))
    with pytest.raises(UserError, match=rf"\(changed: templates_digest\); --templates {templates} are not those this "
                                        "run used; use --overwrite"):
        would_resume(tiny_model, out, str(prompts), templates=str(templates))


def test_queries_from_a_pipe_are_refused_as_not_a_file(tmp_path: Path) -> None:
    """`--prompts <(...)` (a pipe) said "no such file or folder"; a rerun could not read the queries again."""
    import os

    pipe = tmp_path / "queries"
    os.mkfifo(pipe)
    with pytest.raises(UserError, match=r"^--prompts .*queries: not a regular file or folder; save the queries to a "
                                        r"file first$"):
        read_prompts(str(pipe))


@pytest.mark.parametrize("content", [{}, {"judge.jinja": "{{ a }}", "notes.md": "mine"}])
def test_a_folder_without_queries_is_named_as_such(tmp_path: Path, content: dict[str, str]) -> None:
    """A folder of templates given as --prompts: `datasets` said "No task.toml or instruction.md files found"."""
    folder = tmp_path / "templates"
    folder.mkdir()
    for name, text in content.items():
        (folder / name).write_text(text)
    with pytest.raises(UserError, match=r"templates: a folder without files of queries \(.jsonl, .json, .csv, "
                                        r".parquet, ...\) or a saved dataset; give a file of queries, or a folder "
                                        r"of such files$"):
        read_prompts(str(folder))
