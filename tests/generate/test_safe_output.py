"""A generate output folder is never lost, mixed or corrupted (issue 10): one writer at a time, resumes that ignore
memory settings, a changed model refused, a shard line of the wrong shape named."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.dataset.folder import CONFIGS, OutputFolder
from ssogen.dataset.shards import ShardStore
from ssogen.errors import UserError
from ssogen.generate.config import RunConfig
from ssogen.testing.folders import snapshot, write_project_folder

BASE = {"max_tokens": 16, "keep_truncated": True, "limit": 3}


@pytest.fixture(scope="module")
def finished(vllm_engine: Any, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ssogen.generate.run import run_generate

    out = tmp_path_factory.mktemp("safe") / "run"
    run_generate(RunConfig(model=str(tiny_model), out=str(out), **BASE), engine=vllm_engine)
    return out


def data_bytes(out: Path) -> dict[str, bytes]:
    return {config: OutputFolder(out).config_file(config).read_bytes() for config in CONFIGS}


def test_a_ctrl_c_after_the_run_is_saved_asks_for_no_resume(finished: Path, tiny_model: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the summary prints: it said "run the same command again to go on" and gave a resume line for
    a run that had nothing left to do."""
    import ssogen.cli.generate

    def interrupted(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ssogen.cli.generate, "_print_summary", interrupted)
    out = Path(shutil.copytree(finished, tmp_path / "run"))
    result = CliRunner().invoke(app, ["generate", "--model", str(tiny_model), "--out", str(out), "--max-tokens", "16",
                                      "--keep-truncated", "--limit", "3"])
    assert result.exit_code == 130, result.output
    assert "error: interrupted after all work was saved: nothing is left to resume" in result.stderr
    assert "to resume:" not in result.stderr and "run the same command again" not in result.stderr


def test_a_smaller_kv_cache_and_other_placement_resume_with_no_engine_request(finished: Path, tiny_model: Path,
                                                                              tmp_path: Path) -> None:
    """Item 4: after an out-of-memory crash the fix is less memory; the rerun resumes, it does not recompute."""
    out = Path(shutil.copytree(finished, tmp_path / "run"))
    before = data_bytes(out)
    result = CliRunner().invoke(app, [
        "generate", "--model", str(tiny_model), "--out", str(out), "--max-tokens", "16", "--keep-truncated",
        "--limit", "3", "--kv-cache-gb", "0.05", "--gpu-memory-utilization", "0.3", "--tp", "2", "--dp", "2",
        "--chunk-size", "1"])
    assert result.exit_code == 0, result.output
    assert "0 (all done)" in result.stdout and "nothing to do, nothing written" in result.stderr
    assert data_bytes(out) == before
    # The progress bar ends full, not at "0/3 rows loading the model": no model was loaded.
    assert "3/3 rows all rows done by an earlier run" in result.stderr and "loading the model" not in result.stderr


def test_a_moved_prompts_file_resumes_and_a_larger_limit_adds_only_the_new_rows(vllm_engine: Any, tiny_model: Path,
                                                                                 tmp_path: Path) -> None:
    """The queries are fingerprinted by their rows, not their path (a moved file used to be refused)."""
    from ssogen.generate.run import run_generate

    prompts = tmp_path / "queries.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name {n} fruits."}) + "\n" for n in range(2, 7)))
    out = tmp_path / "run"
    first = run_generate(RunConfig(model=str(tiny_model), out=str(out), prompts=str(prompts), **BASE),
                         engine=vllm_engine)
    assert first.manifest["requests_this_invocation"] == {"selection": 3, "sampling": 9}
    first_rows = [r.model_dump() for r in first.records]  # read from the folder, before the run below adds to it
    before = data_bytes(out)
    moved = tmp_path / "elsewhere" / "renamed.jsonl"
    moved.parent.mkdir()
    prompts.rename(moved)
    result = CliRunner().invoke(app, ["generate", "--model", str(tiny_model), "--out", str(out), "--prompts",
                                      str(moved), "--max-tokens", "16", "--keep-truncated", "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert "nothing to do, nothing written" in result.stderr  # the finished run of these queries
    assert OutputFolder(out).read_manifest()["prompts"]["queries_sha256"] == first.manifest["prompts"]["queries_sha256"]
    assert data_bytes(out) == before
    more = run_generate(RunConfig(model=str(tiny_model), out=str(out), prompts=str(moved), **{**BASE, "limit": 4}),
                        engine=vllm_engine)
    assert more.manifest["resumed"] is True
    assert more.manifest["requests_this_invocation"] == {"selection": 1, "sampling": 3}
    assert [r.model_dump() for r in more.records[:3]] == first_rows


def test_a_changed_max_model_len_is_a_different_run(finished: Path, tiny_model: Path, tmp_path: Path) -> None:
    """max_model_len decides which prompts fit and clips max_tokens: it stays in the fingerprint."""
    from ssogen.generate.run import run_generate

    out = Path(shutil.copytree(finished, tmp_path / "run"))
    with pytest.raises(UserError, match=r"different configuration \(changed: max_model_len\)"):
        run_generate(RunConfig(model=str(tiny_model), out=str(out), max_model_len=64, **BASE))


def test_weights_changed_in_place_are_refused_naming_them(vllm_engine: Any, tiny_model: Path,
                                                          tmp_path: Path) -> None:
    """Item 2: the same model path with other weights used to print "0 (all done)" and keep the old responses."""
    from ssogen.generate.run import run_generate

    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    out = tmp_path / "run"
    run_generate(RunConfig(model=str(model), out=str(out), **BASE), engine=vllm_engine)
    before = data_bytes(out)
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start:] = bytes(255 - b for b in data[start:])
    weights.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["generate", "--model", str(model), "--out", str(out), "--max-tokens", "16",
                                      "--keep-truncated", "--limit", "3"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: --out {out}: holds a run with a different configuration (changed: "
                                     "model.weights); the model's files are not those this run used; use --overwrite "
                                     "to replace it or choose another --out")
    assert data_bytes(out) == before


def test_a_finished_run_asked_for_again_reads_no_saved_row(finished: Path, tiny_model: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Decided from the manifest and the triplets' ids: every shard row was loaded and checked first (at 10k rows,
    7.5 s and 1 GB to say "nothing to do")."""
    from ssogen.generate.run import run_generate

    out = Path(shutil.copytree(finished, tmp_path / "run"))
    before = data_bytes(out)

    def no_shards(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a saved row was read")

    monkeypatch.setattr(ShardStore, "load", no_shards)
    result = run_generate(RunConfig(model=str(tiny_model), out=str(out), **BASE))
    assert result.unchanged and data_bytes(out) == before
    assert [r.model_dump() for r in result.records] == [r.model_dump() for r in OutputFolder(out).read_triplets()]


@pytest.mark.parametrize(("line", "problem"), [
    ("[1, 2]", "not an object with an id"),
    ('{"id": "x"}', "position: Field required"),
    ('{"id": 7, "kept": true}', "not an object with an id"),
])
def test_a_shard_line_of_the_wrong_shape_is_one_line(finished: Path, tiny_model: Path, tmp_path: Path, line: str,
                                                     problem: str) -> None:
    """Item 9: valid JSON of another shape in a shard used to end in a traceback. (A rerun with more rows: the
    same finished run asked for again reads no shard, only its manifest and its triplets' ids.)"""
    out = Path(shutil.copytree(finished, tmp_path / "run"))
    shard = out / ".ssogen" / "rows-00001.jsonl"
    shard.write_text(line + "\n")
    result = CliRunner().invoke(app, ["generate", "--model", str(tiny_model), "--out", str(out), "--max-tokens",
                                      "16", "--keep-truncated", "--limit", "4"])
    assert result.exit_code == 2, result.output
    # (The progress bar, on stderr too, has started by then: the one error line is what counts, no traceback.)
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {shard}:1: not a rows record of ssogen ({problem}); delete this file to compute its rows again, or "
        "use --overwrite"]
    assert "Traceback" not in result.output


def test_overwrite_inside_a_project_folder_removes_nothing(tiny_model: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 1, as reported: `ssogen generate --out . --overwrite` inside a project folder removed the user's data/,
    logs/ and README.md. A folder without ssogen's marker is refused, overwrite or not, and nothing is written."""
    project = write_project_folder(tmp_path / "project")
    before = snapshot(project)
    monkeypatch.chdir(project)
    for extra in (["--overwrite"], []):
        result = CliRunner().invoke(app, ["generate", "--model", str(tiny_model), "--out", ".", "--limit", "2",
                                          *extra])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == (
            "error: --out .: folder is not empty and holds no ssogen run (no .ssogen/marker.json); --overwrite "
            "removes only what ssogen wrote, so choose a new or empty folder")
        assert snapshot(project) == before


def test_an_out_under_a_read_only_folder_is_one_line_for_generate_and_train(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 9, end to end: one line, exit 2, nothing written. (Tests may run as root, who may write anywhere: when
    chmod does not stop this process, the permission answer is simulated.)"""
    from ssogen.testing.synthetic import write_synthetic_sso

    data = write_synthetic_sso(tmp_path / "data", count=2, seed=0)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != read_only and access(path, mode,
                                                                                                        **kw))
    try:
        for args in (["generate", "--model", str(tiny_model), "--limit", "2", "--out", str(read_only / "o")],
                     ["train", "--data", str(data), "--model", str(tiny_model), "--out", str(read_only / "m")]):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 2, result.output
            assert result.stderr.strip() == f"error: --out {args[-1]}: {read_only} is not writable"
        assert list(read_only.iterdir()) == []
    finally:
        read_only.chmod(0o755)


def _generate(out: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ssogen", "generate", "--model", str(model), "--out", str(out), "--max-tokens",
            "16", "--keep-truncated", "--chunk-size", "2", *extra]


def test_two_generate_processes_on_one_folder(tiny_model: Path, tmp_path: Path) -> None:
    """Item 3: the second process fails at once with one line naming the first; a lock left by a killed process
    is taken over."""
    out = tmp_path / "shared"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    first = subprocess.Popen(_generate(out, tiny_model, "--limit", "40"), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None and len(ShardStore(out).load("rows")) < 2:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could start"
        held = OutputFolder(out).lock_file.read_bytes()
        for extra in ([], ["--overwrite"]):
            started = time.monotonic()
            second = subprocess.run(_generate(out, tiny_model, "--limit", "40", *extra), env=env,
                                    capture_output=True, text=True, timeout=120)
            assert second.returncode == 1, second.stderr[-2000:]
            lines = [line for line in second.stderr.splitlines() if line.strip()]
            assert len(lines) == 1, second.stderr
            assert lines[0].startswith(f"error: --out {out}: in use by process {first.pid} (ssogen generate, since ")
            assert time.monotonic() - started < 60  # before any model is loaded
            assert (out / ".ssogen").is_dir() and len(ShardStore(out).load("rows")) >= 2  # --overwrite removed nothing
        assert OutputFolder(out).lock_file.read_bytes() == held
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    rows_done = len(ShardStore(out).load("rows"))
    # The killed run's lock is free again: the same command takes it over and resumes.
    third = subprocess.run(_generate(out, tiny_model, "--limit", "4"), env=env, capture_output=True, text=True,
                           timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    assert f"note: took over the lock left by process {first.pid}" in third.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed"] is True
    assert manifest["requests_this_invocation"].get("sampling", 0) == 3 * max(0, 4 - rows_done)
    assert OutputFolder(out).lock_file.read_bytes() == b""  # released on a clean exit


def test_a_model_that_fails_to_load_leaves_no_trace_in_a_new_out(tiny_model: Path, tmp_path: Path) -> None:
    """Bad input writes nothing: a model that passes the checks but fails to load (no weight file, found by the
    engine) left the --out it made claimed (.ssogen/marker.json, logs/), and a train there was then refused as
    "holds a dataset folder of ssogen generate"."""
    model = Path(shutil.copytree(tiny_model, tmp_path / "no-weights"))
    (model / "model.safetensors").unlink()
    out = tmp_path / "new" / "out"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    failed = subprocess.run(_generate(out, model, "--limit", "2"), env=env, capture_output=True, text=True,
                            timeout=300)
    assert failed.returncode == 2 and f"error: --model {model}: cannot load it" in failed.stderr, failed.stderr[-2000:]
    assert not (tmp_path / "new").exists()
