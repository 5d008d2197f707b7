"""A full disk, a read-only folder or a refused permission inside an engine of a pool (`--dp`, `--ray-address`):
the one line a single engine's command gives (exit 1, no traceback), no engine process left behind, and the chunks
finished before it kept for the rerun. Before, a load that failed so on every engine was "no engine could load the
model (2 tried); engine 0 (...): OSError: [Errno 30] ..." and a batch that failed so a RuntimeError traceback.

The faults are injected inside the workers by `worker_faults/sitecustomize.py` (tests run as root, whom a
read-only folder does not stop)."""

from __future__ import annotations

import errno
import json
import os
import pickle
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.engine.guard import child_processes
from ssogen.engine.pool import WorkQueue
from ssogen.engine.workers import Failed, failure
from ssogen.errors import UserError, file_system_error, wrapped_writing
from tests.engine.test_pool_units import ScriptedBackend, specs
from tests.engine.worker_faults.sitecustomize import FAULTS_ENV, InductorError

FAULTS = Path(__file__).parent / "worker_faults"
READ_ONLY = "Read-only file system; the file system is read-only: choose a folder on a writable one"
FULL = ("No space left on device; the disk is full: free some space and run the same command again (finished work "
        "is kept)")


def _read_only(folder: str) -> OSError:
    return OSError(errno.EROFS, os.strerror(errno.EROFS), folder)


def _load_fails(backend: ScriptedBackend, errors: dict[int, OSError | None]) -> None:
    backend.start = lambda: backend.queue.extend(  # type: ignore[method-assign]
        Failed(w, None, f"{error.filename}: {READ_ONLY}" if error else "out of memory", False, os_error=error)
        for w, error in errors.items())


def test_engines_that_all_fail_to_load_for_the_file_system_raise_its_error(tmp_path: Path) -> None:
    """Raised as the single engine's OSError, which the command words with the model being loaded."""
    backend = ScriptedBackend(2)
    _load_fails(backend, {0: _read_only("/tmp/x"), 1: _read_only("/tmp/x")})
    with pytest.raises(OSError) as caught:
        WorkQueue(backend, specs(2), tmp_path)
    assert (caught.value.errno, caught.value.filename) == (errno.EROFS, "/tmp/x")
    assert backend.closed is True
    backend = ScriptedBackend(2)  # for different reasons: each engine's, in one line
    _load_fails(backend, {0: _read_only("/tmp/x"), 1: None})
    with pytest.raises(UserError, match=r"engine 0 \(core 0\): /tmp/x: Read-only file system; the file system is "
                                        r"read-only: choose a folder on a writable one; engine 1 \(core 1\): out "):
        WorkQueue(backend, specs(2), tmp_path)


def test_a_batch_that_fails_for_the_file_system_raises_its_error(tmp_path: Path) -> None:
    backend = ScriptedBackend(1)
    queue = WorkQueue(backend, specs(1), tmp_path)
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    backend.submit = lambda worker, piece, items: backend.queue.append(  # type: ignore[method-assign]
        Failed(worker, piece, FULL, False, os_error=full)) or True
    with pytest.raises(OSError) as caught:
        queue.run([1])
    assert caught.value is full


def test_a_workers_copy_of_a_file_system_error_keeps_what_was_being_written(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`failure` sends the parent a plain copy of the OSError (a library's subclass may not pickle): torch's
    InductorError around it says the compile cache was being written, and the copy keeps that; a bare write error
    says nothing, and the command names the folder it writes in."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "compile-cache"))
    bare = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    wrapped = InductorError(f"OSError: {bare}")
    wrapped.__context__, wrapped.__suppress_context__ = bare, True  # raised `from None` while it was handled
    for exc, writing in ((wrapped, f"writing torch's compile cache in {tmp_path / 'compile-cache'}"), (bare, None)):
        failed = pickle.loads(pickle.dumps(failure(0, 1, exc)))  # as it crosses the pipe
        assert type(failed.os_error) is OSError and failed.os_error.errno == errno.ENOSPC
        assert wrapped_writing(failed.os_error) == writing
        assert failed.message == (f"{writing}: {FULL}" if writing else FULL)
        line = file_system_error(failed.os_error, writing=wrapped_writing(failed.os_error) or "writing in OUT")
        assert str(line) == f"{writing or 'writing in OUT'}: {FULL}"


@pytest.fixture
def worker_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The faults file that the worker processes this test spawns read: write it to inject a fault. The workers
    make their own socket folders, as under a fresh `ssogen`: not the one an earlier test's in-process engine left
    in this process's environment."""
    monkeypatch.delenv("VLLM_RPC_BASE_PATH", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAULTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    faults = tmp_path / "faults.json"
    monkeypatch.setenv(FAULTS_ENV, str(faults))
    return faults


def engine_processes(before: set[int]) -> set[int]:
    """This process's engine workers (spawned children) started since `before` and still there."""
    alive = set()
    for pid in child_processes() - before:
        try:
            if b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                alive.add(pid)
        except OSError:  # ended meanwhile
            continue
    return alive


def _generate(out: Path, model: Path, *extra: str) -> list[str]:
    return ["generate", "--model", str(model), "--out", str(out), "--max-tokens", "6", "--keep-truncated",
            "--dp", "2", *extra]


def test_engines_that_cannot_make_their_socket_folder_say_so_in_one_line(tiny_model: Path, tmp_path: Path,
                                                                         worker_faults: Path) -> None:
    worker_faults.write_text(json.dumps({"socket_folder": errno.EROFS}))
    before = child_processes()
    result = CliRunner().invoke(app, _generate(tmp_path / "out", tiny_model, "--limit", "2"))
    assert result.exit_code == 1, result.output
    folder = Path(tempfile.gettempdir()) / "ssogen-vllm-fault"
    assert result.stderr.strip().splitlines()[-1] == f"error: {folder}: {READ_ONLY}"
    assert "Traceback" not in result.stderr and "no engine could load" not in result.stderr
    assert engine_processes(before) == set()


def test_a_full_disk_inside_an_engine_is_one_line_and_the_rerun_resumes(tiny_model: Path, tmp_path: Path,
                                                                        worker_faults: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from ssogen.dataset.shards import ShardStore
    from ssogen.generate.config import RunConfig
    from ssogen.generate.run import run_generate

    out, cache = tmp_path / "out", tmp_path / "compile-cache"
    worker_faults.write_text(json.dumps({"generate_after": str(out / ".ssogen" / "rows-00000.jsonl")}))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))  # the workers' (the temp folder's by default)
    before = child_processes()
    result = CliRunner().invoke(app, _generate(out, tiny_model, "--engine", "transformers", "--limit", "4",
                                               "--chunk-size", "2"))
    assert result.exit_code == 1, result.output
    # what the worker's InductorError said was being written: not the output folder (was "writing in OUT")
    assert result.stderr.strip().splitlines()[-1] == f"error: writing torch's compile cache in {cache}: {FULL}"
    assert "Traceback" not in result.stderr
    assert engine_processes(before) == set()
    assert len(ShardStore(out).load("rows")) == 2  # the first chunk, finished before the disk filled
    worker_faults.unlink()
    rerun = run_generate(RunConfig(model=str(tiny_model), out=str(out), engine="transformers", limit=4,
                                   max_tokens=6, keep_truncated=True, chunk_size=2))
    assert rerun.manifest["resumed"] is True and rerun.manifest["requests_this_invocation"]["sampling"] == 2 * 3
