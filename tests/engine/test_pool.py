"""`--dp 2` on the real vLLM CPU engine and the tiny model (issue 13 acceptance): two engine processes, one core
each, give exactly the rows of `--dp 1`; an engine killed mid-run costs nothing but time; Ctrl-C stops every
engine process and the run resumes; `ssogen score --dp 2` gives the scores of `--dp 1`.

Kept small (few rows, few tokens): every pool start imports vLLM in two processes."""

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

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.dataset.folder import OutputFolder
from ssogen.engine.pool import ENGINES_FILE
from ssogen.generate.config import RunConfig

BASE = {"max_tokens": 16, "keep_truncated": True}
ROWS = 24


def triplets(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(OutputFolder(out).config_file("triplets")).to_pylist()


def engines_state(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / ".ssogen" / ENGINES_FILE).read_text())  # type: ignore[no-any-return]
    except (OSError, json.JSONDecodeError):
        return None


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def reference(vllm_engine: Any, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The --dp 1 rows (one engine in this process)."""
    from ssogen.generate.run import run_generate

    out = tmp_path_factory.mktemp("pool") / "dp1"
    run_generate(RunConfig(model=str(tiny_model), out=str(out), limit=ROWS, **BASE), engine=vllm_engine)
    return out


def test_dp2_gives_the_rows_of_dp1(reference: Path, tiny_model: Path, tmp_path: Path) -> None:
    from ssogen.generate.run import run_generate

    config = RunConfig(model=str(tiny_model), out=str(tmp_path / "dp2"), limit=8, dp=2, **BASE)
    assert config.chunk_size == 128  # 64 rows per engine
    result = run_generate(config)
    assert triplets(result.out) == triplets(reference)[:8]
    assert result.manifest["engine_options"]["data_parallel_size"] == 2
    # Each engine reports what its options became, through the pool, as a single engine does.
    single = json.loads((reference / "manifest.json").read_text())["engine_settings"]
    assert result.manifest["engine_settings"] == single and single["dtype"] == "float32"
    state = engines_state(result.out)
    assert state is not None and state["backend"] == "processes"
    assert [(e["devices"], e["state"], e["error"]) for e in state["engines"]] == [
        ("CPU cores 0", "stopped", None), ("CPU cores 1", "stopped", None)]
    assert sum(e["requests_done"] for e in state["engines"]) == 8 * 4  # selection + 3 variants per row
    assert all(gone(e["pid"]) for e in state["engines"])  # run_generate stopped the engine processes


def _cli(out: Path, rows: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ssogen", "generate", "--out", str(out), "--max-tokens", "16",
            "--keep-truncated", "--limit", str(rows), "--chunk-size", "2", *extra]


def _start(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen[bytes], tuple[Path, Path]]:
    """Output to files, not pipes: vLLM's warnings from two engines could fill a pipe nobody reads yet."""
    logs = (tmp_path / "stdout.txt", tmp_path / "stderr.txt")
    with logs[0].open("wb") as stdout, logs[1].open("wb") as stderr:
        return subprocess.Popen(args, stdout=stdout, stderr=stderr), logs


def _finish(proc: subprocess.Popen[bytes], logs: tuple[Path, Path]) -> tuple[str, str]:
    proc.wait(timeout=300)
    return logs[0].read_text(errors="replace"), logs[1].read_text(errors="replace")


def _freeze_busy_engine(proc: subprocess.Popen[bytes], out: Path, index: int) -> int:
    """SIGSTOP engine `index` while the pool has a piece on it; returns its pid once the pool's state still shows
    it busy after the freeze (so the piece cannot finish: the kill lands mid-piece)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        state = engines_state(out)
        engine = state["engines"][index] if state else None
        if engine and engine["busy"] and engine["pieces_done"] >= 1:
            os.kill(engine["pid"], signal.SIGSTOP)
            time.sleep(0.5)
            after = engines_state(out)
            if after and after["engines"][index]["busy"] and \
                    after["engines"][index]["pieces_done"] == engine["pieces_done"]:
                return int(engine["pid"])
            os.kill(engine["pid"], signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError(f"engine {index} was never caught busy; run exit code {proc.poll()}")


def test_killing_an_engine_mid_run_loses_nothing(reference: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    proc, logs = _start(_cli(out, 12, "--model", str(tiny_model), "--dp", "2"), tmp_path)
    victim = _freeze_busy_engine(proc, out, 1)
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = _finish(proc, logs)
    assert proc.returncode == 0, stderr[-3000:]
    assert "engine 1 (CPU cores 1, pid" in stderr and "died: killed by signal 9; 1 engine(s) left" in stderr
    state = engines_state(out)
    assert state is not None and state["pieces_requeued"] == 1
    assert [(e["state"], e["error"]) for e in state["engines"]] == [("stopped", None), ("dead", "killed by signal 9")]
    rows = triplets(out)
    assert len({r["id"] for r in rows}) == len(rows) == 12  # every row once
    assert rows == triplets(reference)[:12]
    assert gone(state["engines"][0]["pid"])


def test_ctrl_c_stops_every_engine_and_the_run_resumes(reference: Path, vllm_engine: Any, tiny_model: Path,
                                                       tmp_path: Path) -> None:
    from ssogen.dataset.shards import ShardStore
    from ssogen.generate.run import run_generate

    out = tmp_path / "interrupted"
    proc, logs = _start(_cli(out, ROWS, "--model", str(tiny_model), "--dp", "2"), tmp_path)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and len(ShardStore(out).load("rows")) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = _finish(proc, logs)
    assert proc.returncode == 130, stderr[-3000:]
    assert "run the same command again to resume" in stderr and "\nto resume: ssogen generate" in stderr
    assert "Traceback" not in stderr
    state = engines_state(out)
    assert state is not None and all(gone(e["pid"]) for e in state["engines"])
    assert 2 <= len(ShardStore(out).load("rows")) < ROWS
    # --dp is not part of the run's identity: the same folder resumes with one engine.
    config = RunConfig(model=str(tiny_model), out=str(out), limit=ROWS, chunk_size=2, **BASE)
    result = run_generate(config, engine=vllm_engine)
    assert result.manifest["resumed"] is True
    assert triplets(out) == triplets(reference)


def test_score_dp2_gives_the_scores_of_dp1(reference: Path, tiny_model: Path, tmp_path: Path) -> None:
    from ssogen.dataset.score import score_folder
    from ssogen.dataset.score_requests import SCORED
    from ssogen.engine.options import EngineOptions

    kept = sum(r["kept"] for r in triplets(reference))
    folders = [tmp_path / "score-dp1", tmp_path / "score-dp2"]
    for folder in folders:
        shutil.copytree(reference, folder, ignore=shutil.ignore_patterns(".ssogen"))
    assert score_folder(folders[0], str(tiny_model), engine_options=EngineOptions(), chunk_rows=6).scored_now == kept
    result = CliRunner().invoke(app, ["score", str(folders[1]), "--model", str(tiny_model), "--dp", "2",
                                      "--chunk-rows", "6"])
    assert result.exit_code == 0, result.output
    assert f"scored {kept} rows" in result.output
    state = engines_state(folders[1])
    assert state is not None and sum(e["requests_done"] for e in state["engines"]) == kept * len(SCORED)
    scores = [[[getattr(r, name) for name, _, _ in SCORED] for r in OutputFolder(f).read_triplets() if r.kept]
              for f in folders]
    assert scores[0] == scores[1]
    assert all(value is not None for row in scores[1] for value in row)


def test_transformers_engines_pool_the_same_way(tiny_model: Path, tmp_path: Path) -> None:
    from ssogen.generate.run import run_generate

    runs = [run_generate(RunConfig(model=str(tiny_model), out=str(tmp_path / f"hf-dp{dp}"), engine="transformers",
                                   limit=3, max_tokens=6, keep_truncated=True, dp=dp)) for dp in (1, 2)]
    assert triplets(runs[1].out) == triplets(runs[0].out)
    assert runs[1].manifest["engine_settings"] == runs[0].manifest["engine_settings"]
    state = engines_state(runs[1].out)
    assert state is not None and [e["state"] for e in state["engines"]] == ["stopped", "stopped"]
