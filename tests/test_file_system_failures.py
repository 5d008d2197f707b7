"""A file system that fails under a command: a full disk (ENOSPC, or EFBIG under `ulimit -f`), a folder or input
that may not be written or read, a path whose name is not UTF-8. Each is one line naming the path and what to do,
exit 1 (2 for a bad name), with the finished work intact and no temporary file left behind.

Tests run as root here, who may write anywhere: permission answers are simulated, a full disk is injected or made
with RLIMIT_FSIZE in a child process."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ssogen.cli.main import app
from ssogen.errors import UserError
from ssogen.io import TMP_SUFFIX
from ssogen.testing.folders import make_record, write_dataset


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(f"*{TMP_SUFFIX}") if p.is_file()]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "out", [make_record(i) for i in range(3)])


def test_a_full_disk_mid_write_is_one_line_naming_the_file(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC half-way through a file that `stats` writes: no traceback, the file named (not its temporary), the old
    files intact and no temporary left."""
    import ssogen.io

    write_atomic = ssogen.io.write_atomic

    def disk_fills_up(path: Any, write: Any) -> Path:
        def half_then_full(f: Any) -> None:
            f.write(b"{\n  \"funnel\"")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write(2) says it: no file name

        return write_atomic(path, half_then_full if Path(path).name == "stats.json" else write)

    monkeypatch.setattr(ssogen.io, "write_atomic", disk_fills_up)
    manifest = (dataset / "manifest.json").read_bytes()
    result = CliRunner().invoke(app, ["stats", str(dataset), "--no-plots"])
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, OSError)  # not a traceback
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {dataset / 'stats.json'}: No space left on device; the disk is full: free some space and "
                     "run the same command again (finished work is kept)"]
    assert (dataset / "manifest.json").read_bytes() == manifest
    assert not (dataset / "stats.json").exists() and temporaries(dataset) == []


def test_a_full_disk_that_a_library_wraps_is_the_same_line(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's compiler raises its InductorError while the OSError of a full compile cache is handled (`from None`:
    only the context keeps it), as vLLM's CPU build does in `score`: that was a traceback, in one engine or several.
    A command's own line stays its own, though it was said while an OSError was handled."""
    import ssogen.io

    class CompileError(Exception):
        """Stands for a library's wrapper of the OSError (not torch's own: see the compile-cache test)."""

    def compile_cache_fills_the_disk(path: Any, write: Any) -> Path:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            raise CompileError(f"OSError: {exc}") from None

    def the_disk_fills(path: Any, write: Any) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    lines = []
    for write_atomic in (the_disk_fills, compile_cache_fills_the_disk):
        monkeypatch.setattr(ssogen.io, "write_atomic", write_atomic)
        result = CliRunner().invoke(app, ["stats", str(dataset), "--no-plots"])
        assert result.exit_code == 1, result.output
        lines.append(result.stderr.strip().splitlines())
    assert lines[1] == lines[0] == [f"error: {FULL}"]

    def refused_while_handled(path: Any, write: Any) -> Path:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise UserError("the command's own line", exit_code=2) from None

    monkeypatch.setattr(ssogen.io, "write_atomic", refused_while_handled)
    result = CliRunner().invoke(app, ["stats", str(dataset), "--no-plots"])
    assert (result.exit_code, result.stderr.strip()) == (2, "error: the command's own line")

    def a_bug_while_handled(path: Any, write: Any) -> Path:
        try:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        except OSError:
            raise KeyError("a key the fallback lacks") from None

    monkeypatch.setattr(ssogen.io, "write_atomic", a_bug_while_handled)
    result = CliRunner().invoke(app, ["stats", str(dataset), "--no-plots"])
    assert isinstance(result.exception, KeyError), result.output  # its traceback, not "Permission denied"


def test_a_folder_that_may_not_be_written_names_the_file_not_its_temporary(
        dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`stats` on a folder whose plots/ is read-only (chmod 555) was a PermissionError traceback naming
    plots/.lengths.png.<hex>.tmp."""
    plots = dataset / "plots"
    plots.mkdir()
    real_open = os.open

    def read_only_plots(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if Path(os.fsdecode(path)).parent == plots and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", read_only_plots)
    result = CliRunner().invoke(app, ["stats", str(dataset)])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: {plots / 'lengths.png'}: Permission denied; make it readable (an input) or writable (the output "
        "folder), or choose another path"]


def test_a_path_that_is_not_utf8_is_refused_before_any_work(tmp_path: Path) -> None:
    """A folder named with a byte that is not UTF-8 (the shell passes it as a surrogate) failed with a
    UnicodeEncodeError traceback in pyarrow (stats, train) or when the manifest was written (generate, after all the
    engine work)."""
    folder = write_dataset(Path(os.fsdecode(os.fsencode(tmp_path) + b"/data\xff")), [make_record(i) for i in range(2)])
    result = CliRunner().invoke(app, ["stats", str(folder)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: FOLDER {tmp_path}/data\\xff: the name is not UTF-8 text, which ssogen writes paths as; rename it"]
    result = CliRunner().invoke(app, ["generate", "--model", "m", "--out", str(tmp_path / "out\udcfe"), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "error: --out" in result.stderr and "out\\xfe: the name is not UTF-8 text" in result.stderr


SHARDS_ON_A_FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    from ssogen.dataset.shards import ShardStore

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    store = ShardStore(sys.argv[1])
    store.append("rows", [{"id": "a", "text": "x" * 100}])
    resource.setrlimit(resource.RLIMIT_FSIZE, (400, resource.RLIM_INFINITY))
    try:
        store.append("rows", [{"id": "b", "text": "y" * 100}, {"id": "c", "text": "z" * 1000}])
    except OSError as exc:
        print("append:", exc.errno, exc.filename)
    store.close()  # the rest of the failed write is not flushed here again (it failed the same way)
    print("closed")
""")


def test_a_shard_cut_off_by_a_full_disk_keeps_its_complete_rows_and_closes(tmp_path: Path) -> None:
    """A full disk during a shard append: the error names the shard, closing the store does not raise the same
    error again (it replaced the first and skipped closing the engine), and a rerun loads every complete row."""
    from ssogen.dataset.shards import ShardStore

    out = tmp_path / "run"
    child = subprocess.run([sys.executable, "-c", SHARDS_ON_A_FULL_DISK, str(out)], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    shard = out / ".ssogen" / "rows-00000.jsonl"
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == [f"append: {errno.EFBIG} {shard}", "closed"]
    rerun = ShardStore(out)
    assert sorted(rerun.load("rows")) == ["a", "b"]  # "c" was torn: computed again
    rerun.append("rows", [{"id": "c", "text": "z"}])
    rerun.close()
    assert sorted(ShardStore(out).load("rows")) == ["a", "b", "c"]


class _FullDisk:
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self) -> None:
        self.flush()


def test_a_log_on_a_full_disk_leaves_the_commands_own_error(tmp_path: Path) -> None:
    """The log's last flush failed on a full disk and replaced the command's error with an OSError traceback (and
    left the log's handler on the root logger)."""
    from ssogen.runlog import command_log

    before, log = list(logging.getLogger().handlers), tmp_path / "logs" / "stats.log"
    with pytest.raises(UserError, match="^the command's own error$"),  \
            command_log(log, "stats", capture_fds=False, import_transformers=False):
        handler = next(h for h in logging.getLogger().handlers
                       if isinstance(h, logging.FileHandler) and h.baseFilename == str(log.resolve()))
        written = handler.setStream(_FullDisk())  # type: ignore[arg-type]
        assert written is not None
        written.close()
        raise UserError("the command's own error")
    assert logging.getLogger().handlers == before


FULL = ("No space left on device; the disk is full: free some space and run the same command again (finished work is "
        "kept)")


def test_a_model_that_cannot_load_for_a_full_disk_is_not_blamed() -> None:
    """A file-system error while an engine loads is the machine's (exit 1), not "--model X: cannot load it" (exit 2,
    bad input); a write inside the library names no file, so the line names the load (and a hub model's download
    into the hub cache) where it printed "File too large; ..." alone."""
    from huggingface_hub.constants import HF_HUB_CACHE

    from ssogen.models import ModelRef, engine_load_errors

    with pytest.raises(UserError) as caught, engine_load_errors(ModelRef("m", True), "transformers"):
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    assert caught.value.exit_code == 1
    assert str(caught.value) == ("loading --model m: File too large; the file size limit (ulimit -f) is reached: raise "
                                 "it and run the same command again (finished work is kept)")
    with pytest.raises(UserError) as caught, engine_load_errors(ModelRef("org/m", False), "vllm", flag="--judge-model"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert caught.value.exit_code == 1
    assert str(caught.value) == f"downloading --judge-model org/m into the hub cache {HF_HUB_CACHE}: {FULL}"
    with pytest.raises(UserError, match=r"^--model m: cannot load it in the transformers engine \(OSError: bad\)$"):
        with engine_load_errors(ModelRef("m", True), "transformers"):
            raise OSError("bad")


def test_trains_model_load_on_a_full_disk_is_not_blamed_on_the_model(tiny_model: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """train loads its model itself: a full disk there was "--model X: cannot load it (OSError: ...)", exit 2."""
    from transformers import AutoTokenizer

    from ssogen.train.config import build_config
    from ssogen.train.run import load_tokenizer_and_model

    def download_fills_the_disk(*args: Any, **kw: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", download_fills_the_disk)
    with pytest.raises(UserError) as caught:
        load_tokenizer_and_model(build_config({"data": Path("-"), "model": str(tiny_model), "out": Path("-")}))
    assert caught.value.exit_code == 1
    assert str(caught.value) == f"loading --model {tiny_model}: {FULL}"


def test_a_checkpoint_that_cannot_be_saved_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save reports a full disk as a RuntimeError of its zip writer, safetensors as a SafetensorError: both
    were a traceback. The rerun skips the checkpoint cut off (no trainer_state.json)."""
    from types import SimpleNamespace

    from transformers import Trainer

    from ssogen.train.trainer import SSOTrainer

    def torch_save_on_a_full_disk(self: Any, model: Any, trial: Any) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 530816 vs 530704")

    monkeypatch.setattr(Trainer, "_save_checkpoint", torch_save_on_a_full_disk)
    trainer = SSOTrainer.__new__(SSOTrainer)  # only what the save reads: no model is needed
    trainer.args = SimpleNamespace(output_dir=str(tmp_path), process_index=0)  # type: ignore[assignment]
    trainer.state = SimpleNamespace(global_step=4)  # type: ignore[assignment]
    with pytest.raises(UserError) as caught:
        trainer._save_checkpoint(None, None)
    assert caught.value.exit_code == 1
    assert str(caught.value) == (
        f"cannot save {tmp_path / 'checkpoint-4'} (RuntimeError: [enforce fail at inline_container.cc:672] . "
        "unexpected pos 530816 vs 530704); if the disk is full, free some space and run the same command again: it "
        "resumes from the newest complete checkpoint")


def _unreadable_under(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow's reads of the parquet files under `folder` fail as a chmod 000 file does: a PermissionError with
    errno 13 and no file name (measured with pyarrow 26 and the capabilities that let root read anything dropped)."""
    import pyarrow.parquet as pq

    def refusing(read: Any) -> Any:
        def read_or_refuse(source: Any, *args: Any, **kw: Any) -> Any:
            if isinstance(source, (str, Path)) and Path(source).is_relative_to(folder):
                raise PermissionError(errno.EACCES, f"Failed to open local file '{source}'. Detail: [errno 13] "
                                                    "Permission denied")
            return read(source, *args, **kw)
        return read_or_refuse

    for name in ("read_metadata", "read_table", "read_schema", "ParquetFile"):
        monkeypatch.setattr(pq, name, refusing(getattr(pq, name)))


@pytest.mark.parametrize("config", ["sso", "triplets"])
def test_a_data_file_that_may_not_be_read_is_named_not_called_corrupt_nor_left_out(
        dataset: Path, config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`stats` with an unreadable `sso` file left that config out of the card and exited 0; an unreadable
    `triplets` file was called corrupt; then the line said the path twice, the second time in Arrow's words."""
    unreadable = dataset / "data" / config
    _unreadable_under(unreadable, monkeypatch)
    result = CliRunner().invoke(app, ["stats", str(dataset), "--no-plots"])
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    file = next(unreadable.glob("*.parquet"))
    # The path once: Arrow's text quotes it ("PATH: Failed to open local file 'PATH'. Detail: [errno 13] ...").
    assert line == f"error: {file}: {DENIED}"


@pytest.mark.parametrize("saving", ["checkpoint", "final"])
def test_a_save_that_fills_the_disk_names_what_was_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         saving: str) -> None:
    """transformers' save_pretrained and the tokenizer's save write through open(): a full disk is an OSError with
    no file name, which printed "No space left on device; ..." alone. The rerun resumes from the newest complete
    checkpoint (one cut off has no trainer_state.json)."""
    from types import SimpleNamespace

    from transformers import Trainer

    from ssogen.train.trainer import SSOTrainer

    def tokenizer_save_on_a_full_disk(*args: Any, **kw: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Trainer, "_save_checkpoint" if saving == "checkpoint" else "save_model",
                        tokenizer_save_on_a_full_disk)
    trainer = SSOTrainer.__new__(SSOTrainer)  # only what the save reads: no model is needed
    trainer.args = SimpleNamespace(output_dir=str(tmp_path), process_index=0)  # type: ignore[assignment]
    trainer.state = SimpleNamespace(global_step=4)  # type: ignore[assignment]
    trainer.model, trainer.zeroed_dropout, trainer.users_use_cache = None, None, None  # type: ignore[assignment]
    with pytest.raises(UserError) as caught:
        if saving == "checkpoint":
            trainer._save_checkpoint(None, None)
        else:
            trainer.save_model(str(tmp_path))
    assert caught.value.exit_code == 1
    folder = tmp_path / "checkpoint-4" if saving == "checkpoint" else tmp_path
    assert str(caught.value) == f"saving {folder}: {FULL}"


def test_a_full_disk_in_a_library_write_names_the_folder_written(dataset: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """An error without a file name from any write the command makes after its log is open (a library's own
    write): the line names the folder the command writes in, the log keeps the traceback, nothing is lost."""
    import ssogen.dataset.refresh

    def refresh_on_a_full_file_size_limit(*args: Any, **kw: Any) -> None:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    monkeypatch.setattr(ssogen.dataset.refresh, "refresh", refresh_on_a_full_file_size_limit)
    before = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file() and "logs" not in p.parts}
    result = CliRunner().invoke(app, ["stats", str(dataset)])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: writing in {dataset}: File too large; the file size limit (ulimit -f) is reached: raise it and run "
        "the same command again (finished work is kept)"]
    assert {p: p.read_bytes() for p in before} == before
    [log] = (dataset / "logs").glob("stats-*.log")
    assert "refresh_on_a_full_file_size_limit" in log.read_text()


def test_a_full_disk_in_torchs_compile_cache_names_the_cache(dataset: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's compiler wraps the OSError of a write to its compile cache in its InductorError (raised while the
    OSError was handled, as in `score` on vLLM's CPU build): the line names that cache, whose disk (the temp
    folder's by default) may be the full one, not the folder the command writes in (it said "writing in OUT"). The
    same error bare, or wrapped by another library, still names the folder the command writes in."""
    from torch._inductor.exc import InductorError

    import ssogen.dataset.refresh

    cache = tmp_path / "compile-cache"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))

    def full_disk_in(wrapper: Any) -> Any:
        def refresh(*args: Any, **kw: Any) -> None:
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError as exc:
                if wrapper is None:
                    raise
                raise wrapper(exc) from None

        return refresh

    for wrapper, writing in ((lambda exc: InductorError(exc, None), f"writing torch's compile cache in {cache}"),
                             (lambda exc: RuntimeError(f"OSError: {exc}"), f"writing in {dataset}"),
                             (None, f"writing in {dataset}")):
        monkeypatch.setattr(ssogen.dataset.refresh, "refresh", full_disk_in(wrapper))
        result = CliRunner().invoke(app, ["stats", str(dataset)])
        assert (result.exit_code, result.stderr.strip().splitlines()) == (1, [f"error: {writing}: {FULL}"])


def test_torchs_compile_cache_is_found_as_torch_finds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As `cache_dir` in torch/_inductor/runtime/cache_dir_utils.py: TORCHINDUCTOR_CACHE_DIR made absolute, else
    torchinductor_<user> in the temp folder, odd characters of the user's name replaced; torch is not imported."""
    import tempfile

    from torch._inductor.runtime import cache_dir_utils

    from ssogen.errors import torch_compile_cache

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "cache")
    assert torch_compile_cache() == str(tmp_path / "cache")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("LOGNAME", "dom\\ai:n/me")
    (tmp_path / "temp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    expected = cache_dir_utils.default_cache_dir()
    assert expected == str(tmp_path / "temp" / "torchinductor_dom_ai_n_me")
    assert torch_compile_cache() == expected  # torch's own function, torch being imported
    monkeypatch.delitem(sys.modules, "torch._inductor.runtime.cache_dir_utils")
    assert torch_compile_cache() == expected
    child = subprocess.run([sys.executable, "-c", "import sys; from ssogen.errors import torch_compile_cache; "
                            "print(torch_compile_cache(), 'torch' in sys.modules)"],
                           env={**os.environ, "TMPDIR": str(tmp_path / "temp")}, capture_output=True, text=True,
                           check=True)
    assert child.stdout.split() == [expected, "False"]


def test_a_full_disk_while_datasets_caches_the_queries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`datasets` loads --prompts into a throwaway cache: a full disk there was "cannot load as a dataset", exit 2."""
    import tempfile

    import datasets

    from ssogen.generate.inputs import read_prompts

    def cache_fills_the_disk(*args: Any, **kw: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(datasets, "load_dataset", cache_fills_the_disk)
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "train.jsonl").write_text('{"prompt": "hi"}\n')
    with pytest.raises(UserError) as caught:
        read_prompts(str(tmp_path / "queries"))
    assert caught.value.exit_code == 1
    assert str(caught.value) == (f"loading --prompts {tmp_path / 'queries'} into a cache in {tempfile.gettempdir()}: "
                                 f"{FULL}")


DENIED = "Permission denied; make it readable (an input) or writable (the output folder), or choose another path"


@pytest.mark.parametrize("name", ["tokenizer.json", "model.safetensors", "model.safetensors.index.json"])
def test_a_model_file_that_may_not_be_read_is_named_before_the_folder_is_taken(
        tiny_model: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """A model file chmod 000 was found by the fingerprint or a loader, once score had taken the folder and opened
    its log; a shard index that may not be read was "not valid JSON". (Root reads it all the same: the permission
    answer is simulated then.)"""
    import shutil

    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    refused = model / name
    if name.endswith(".index.json"):
        refused.write_text('{"weight_map": {"lm_head.weight": "model.safetensors"}}')
    refused.chmod(0)
    if os.geteuid() == 0:
        real_open = os.open

        def unreadable(path: Any, flags: int, *args: Any, **kw: Any) -> int:
            if Path(os.fsdecode(path)) == refused:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
            return real_open(path, flags, *args, **kw)

        monkeypatch.setattr(os, "open", unreadable)
    before = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    try:
        result = CliRunner().invoke(app, ["score", str(dataset), "--model", str(model), "--engine", "transformers"])
    finally:
        refused.chmod(0o644)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [f"error: {refused}: {DENIED}"]
    assert {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()} == before  # no lock, no marker, no log


def test_a_shard_index_that_may_not_be_read_is_not_called_invalid_json(tiny_model: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The check of a checkpoint's weights (and the fingerprint's) took the index's PermissionError for bad JSON."""
    import shutil

    from ssogen.errors import file_system_error
    from ssogen.fingerprint import check_weight_files

    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    index = model / "model.safetensors.index.json"
    index.write_text('{"weight_map": {"lm_head.weight": "model.safetensors"}}')
    read_text = Path.read_text

    def unreadable(self: Path, *args: Any, **kw: Any) -> str:
        if self == index:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return read_text(self, *args, **kw)

    monkeypatch.setattr(Path, "read_text", unreadable)
    with pytest.raises(PermissionError) as caught:
        check_weight_files(model)
    assert str(file_system_error(caught.value)) == f"{index}: {DENIED}"


def test_a_checkpoint_whose_state_may_not_be_read_is_named_not_called_cut_off(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A trainer_state.json chmod 000 was "cut off": a rerun skipped its checkpoint, trained again from an older one
    and failed on saving over it; --resume-from-checkpoint called it incomplete. One line naming it now, exit 1,
    before anything is written. (Root reads it all the same: the permission answer is simulated then.)"""
    from ssogen.testing.synthetic import write_synthetic_sso
    from ssogen.train.output import TrainOutput, checkpoint_problem

    run = TrainOutput(tmp_path / "run")
    for step in (2, 4):
        (run.root / f"checkpoint-{step}").mkdir(parents=True)
        (run.root / f"checkpoint-{step}" / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    state = run.root / "checkpoint-4" / "trainer_state.json"
    state.chmod(0)
    if os.geteuid() == 0:
        read_text = Path.read_text

        def unreadable(self: Path, *args: Any, **kw: Any) -> str:
            if self == state:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return read_text(self, *args, **kw)

        monkeypatch.setattr(Path, "read_text", unreadable)
    data = write_synthetic_sso(tmp_path / "data", count=4, seed=0)
    before = sorted(tmp_path.rglob("*"))
    try:
        for check in (checkpoint_problem, lambda _: run.newest_checkpoint()):
            with pytest.raises(UserError) as caught:
                check(run.root / "checkpoint-4")
            assert (caught.value.exit_code, str(caught.value)) == (1, f"{state}: {DENIED}")
        result = CliRunner().invoke(app, ["train", "--data", str(data), "--model", "m", "--out",
                                          str(tmp_path / "out"), "--resume-from-checkpoint", str(state.parent)])
    finally:
        state.chmod(0o644)
        monkeypatch.undo()
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [f"error: {state}: {DENIED}"]
    assert sorted(tmp_path.rglob("*")) == before
    state.write_text('{"global_st')  # one cut off is still skipped as such
    assert checkpoint_problem(state.parent) == "trainer_state.json is cut off"


def test_an_unreadable_saved_dataset_of_queries_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrow refuses an unreadable file of a `save_to_disk` folder with an error that carries no file name: the line
    named none ("Permission denied; make it readable ..."), unless Arrow's own text happened to quote the path."""
    import datasets

    from ssogen.generate.inputs import read_prompts

    def unreadable(*args: Any, **kw: Any) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(datasets, "load_from_disk", unreadable)
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "state.json").write_text("{}")
    with pytest.raises(UserError) as caught:
        read_prompts(str(tmp_path / "saved"))
    assert caught.value.exit_code == 1
    assert str(caught.value) == f"{tmp_path / 'saved'}: {DENIED}"


def test_a_subfolder_of_queries_that_may_not_be_listed_is_named(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`datasets` leaves out a subfolder it may not list without a word: a folder whose queries all sit in one chmod
    000 was "a folder without files of queries" (and one with files beside it gave those alone). A hidden one,
    which it leaves out anyway, is no concern. (Root lists it all the same: the refusal is simulated then.)"""
    from ssogen.generate.inputs import read_prompts

    queries = tmp_path / "queries"
    refused = [queries / "part-1", queries / ".cache"]
    for folder in refused:
        folder.mkdir(parents=True)
        (folder / "queries.jsonl").write_text('{"prompt": "hi"}\n')
        folder.chmod(0)
    if os.geteuid() == 0:
        real_scandir = os.scandir

        def unlistable(path: Any = ".") -> Any:
            if not isinstance(path, int) and Path(os.fsdecode(path)) in refused:  # not a descriptor
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", unlistable)
    try:
        with pytest.raises(UserError) as caught:
            read_prompts(str(queries))
        assert caught.value.exit_code == 1
        assert str(caught.value) == f"{queries / 'part-1'}: {DENIED}"
        refused[0].chmod(0o755)
        refused.remove(queries / "part-1")
        assert [row.text for row in read_prompts(str(queries)).rows] == ["hi"]  # .cache/ still may not be listed
    finally:
        for folder in (queries / "part-1", queries / ".cache"):
            folder.chmod(0o755)


def test_arrow_s_refusal_names_the_file_it_quotes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrow's error carries no file name but quotes it, with the system's words after: the line is the quoted file
    (rather than the folder read, for a file of a saved dataset of queries) and those words, not Arrow's text."""
    import datasets

    from ssogen.errors import file_system_error
    from ssogen.generate.inputs import read_prompts

    saved = tmp_path / "saved"
    arrow = saved / "data-00000-of-00001.arrow"

    def unreadable(*args: Any, **kw: Any) -> None:  # as pyarrow 26 says it, measured without root's capabilities
        raise PermissionError(errno.EACCES, f"Failed to open local file '{arrow}'. Detail: [errno 13] Permission "
                                            "denied")

    monkeypatch.setattr(datasets, "load_from_disk", unreadable)
    saved.mkdir()
    (saved / "state.json").write_text("{}")
    with pytest.raises(UserError) as caught:
        read_prompts(str(saved))
    assert (caught.value.exit_code, str(caught.value)) == (1, f"{arrow}: {DENIED}")
    # An error whose text is not Arrow's shape is shown as it was.
    odd = file_system_error(PermissionError(errno.EACCES, "Detail: not Arrow's"), at=saved)
    assert str(odd) == f"{saved}: Detail: not Arrow's; {DENIED.split('; ', 1)[1]}"


def test_a_lock_that_cannot_be_written_is_named_and_let_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing the lock's holder on a full disk: a write(2) names no file; the lock file is named, the lock freed."""
    import ssogen.lock
    from ssogen.errors import file_system_error

    write_holder = ssogen.lock._write_holder

    def full(fd: int, command: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ssogen.lock, "_write_holder", full)
    lock = tmp_path / ".ssogen" / "lock"
    with pytest.raises(OSError) as caught:
        ssogen.lock.folder_lock(lock, label="x", command="ssogen stats").__enter__()
    assert str(file_system_error(caught.value)) == f"{lock}: {FULL}"
    monkeypatch.setattr(ssogen.lock, "_write_holder", write_holder)
    with ssogen.lock.folder_lock(lock, label="x", command="ssogen stats") as left_behind:
        assert left_behind is None
