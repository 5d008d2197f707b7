"""push-to-hub's refusals name the file that holds the problem, in a folder with a test split too."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.dataset import splits  # its test_prompts by module: pytest would collect the bare name
from ssogen.dataset.folder import OutputFolder
from ssogen.testing.folders import make_record, write_dataset

REPO = "my-org/sso-data"


def _dry_run(out: Path) -> str:
    """The one error line of a --dry-run push (it contacts nothing)."""
    result = CliRunner().invoke(app, ["push-to-hub", str(out), "--repo-id", REPO, "--dry-run"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().count("\n") == 0, result.stderr
    return result.stderr


def test_blank_rows_are_reported_in_the_file_that_holds_them(tmp_path: Path) -> None:
    # A folder written with `generate --test-size`: the one blank response sits in a query drawn for the test
    # split, so the train file is clean and the message must name the test file.
    split = splits.SplitSpec(test_size=0.25, seed=7)
    prompts = [f"question {i}" for i in range(8)]
    held_out = sorted(splits.test_prompts(prompts, split))
    records = [make_record(i, response_bad="" if p == held_out[0] else f"bad answer {i}")
               for i, p in enumerate(prompts)]
    folder = OutputFolder(write_dataset(tmp_path / "split", records))
    folder.write_configs(records, split)  # the same rows, now in two splits
    test_file = folder.config_file("dpo", "test")
    assert test_file.is_file()
    error = _dry_run(folder.root)
    assert error.startswith(f"error: {test_file}: 1 row(s) with an empty or null 'rejected' in the dpo config "
                            "(--allow-incomplete"), error
    assert "train-00000" not in error
    # Blank rows in both files: the first file holding some is named, and the rest are counted.
    train_prompt = next(p for p in prompts if p not in held_out)
    records = [r.model_copy(update={"response_bad": ""}) if r.prompt == train_prompt else r for r in records]
    folder.write_configs(records, split)
    error = _dry_run(folder.root)
    assert error.startswith(f"error: {folder.config_file('dpo')}: 1 row(s) with an empty or null 'rejected' in "
                            "the dpo config, and 1 more in its other files"), error


def test_a_blank_answer_in_the_pairs_config_is_refused(tmp_path: Path) -> None:
    # The other configs are clean: a `pairs` file edited (or written by another tool) with a blank P3 answer.
    folder = OutputFolder(write_dataset(tmp_path / "pairs", [make_record(0), make_record(1)]))
    rows = folder.read_config("pairs").to_pylist()
    rows[5]["chosen"] = [{"role": "assistant", "content": " "}]
    folder.write_config("pairs", rows)
    error = _dry_run(folder.root)
    assert error.startswith(f"error: {folder.config_file('pairs')}: 1 row(s) with an empty or null 'chosen' in the "
                            "pairs config"), error


def test_a_pair_config_without_rows_names_its_file_or_folder(tmp_path: Path) -> None:
    folder = OutputFolder(write_dataset(tmp_path / "empty", [make_record(0, kept=False,
                                                                         drop_reason="equal_responses")]))
    error = _dry_run(folder.root)
    assert error.startswith(f"error: {folder.config_file('dpo')}: the dpo config has no rows"), error
    # Two files, both empty (ssogen never writes an empty test file; another tool may): the config's folder.
    folder.write_config("dpo", [], split="test")
    error = _dry_run(folder.root)
    assert error.startswith(f"error: {folder.config_dir('dpo')}: the dpo config has no rows"), error


def test_an_empty_split_beside_a_split_with_rows_is_refused(tmp_path: Path) -> None:
    # `score --filter likelihood` may drop every pair of the train queries and keep test ones: the dpo config
    # has rows, but its train file holds none, and `load_dataset` would hand users an empty train split.
    split = splits.SplitSpec(test_size=0.25, seed=7)
    prompts = [f"question {i}" for i in range(8)]
    held_out = splits.test_prompts(prompts, split)
    records = [make_record(i, kept=p in held_out, drop_reason=None if p in held_out else "likelihood")
               for i, p in enumerate(prompts)]
    folder = OutputFolder(write_dataset(tmp_path / "split", records))
    folder.write_configs(records, split)
    assert folder.read_config("dpo", split="train").num_rows == 0
    assert folder.read_config("dpo", split="test").num_rows > 0
    error = _dry_run(folder.root)
    assert error.startswith(f"error: {folder.config_file('dpo')}: the train split of the dpo config has no rows"
                            ), error
    assert "--allow-incomplete" in error
    # An empty test file (ssogen never writes one; another tool may) beside a train split with rows: named too.
    folder.write_configs([make_record(i) for i in range(4)])
    folder.write_config("dpo", [], split="test")
    error = _dry_run(folder.root)
    assert error.startswith(f"error: {folder.config_file('dpo', 'test')}: the test split of the dpo config has no "
                            "rows"), error
    result = CliRunner().invoke(app, ["push-to-hub", str(folder.root), "--repo-id", REPO, "--dry-run",
                                      "--allow-incomplete"])
    assert result.exit_code == 0, result.output


def test_a_folder_another_ssogen_command_owns_inside_the_dataset_is_not_uploaded(tmp_path: Path) -> None:
    """A model trained into the dataset folder (which train now refuses; older runs did it) stays off the Hub, and
    so does anything under it; a folder of the user's that merely holds data goes up as before."""
    from ssogen.dataset.publishable import files_to_upload
    from ssogen.ownership import TINY_MODEL_MARK
    from ssogen.train.output import TrainOutput

    out = write_dataset(tmp_path / "out", [make_record(i) for i in range(3)])
    model = TrainOutput(out / "runs" / "model")
    model.work_dir.mkdir(parents=True)
    model.marker.write_text("{}")
    (model.root / "model.safetensors").write_bytes(b"weights")
    (model.root / "checkpoint-2").mkdir()
    (model.root / "checkpoint-2" / "optimizer.pt").write_bytes(b"state")
    (out / "extra").mkdir()
    (out / "extra" / "notes.md").write_text("mine")
    # make-tiny-model's folder has no .ssogen/, only its mark beside the weights
    tiny = out / "models" / "tiny"
    tiny.mkdir(parents=True)
    (tiny / TINY_MODEL_MARK).write_text("{}")
    (tiny / "model.safetensors").write_bytes(b"weights")
    uploaded = [f.path_in_repo for f in files_to_upload(out)]
    assert "extra/notes.md" in uploaded and "data/dpo/train-00000-of-00001.parquet" in uploaded
    assert not [p for p in uploaded if p.startswith(("runs/", "models/"))]


def test_a_special_file_that_would_go_up_is_refused_and_links_stay_local(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket (or FIFO, or device) among the files to upload was left out without a word: it is named now. One
    where nothing goes up (the logs, a hidden path) is no concern of the upload, and a symbolic link, even to one,
    is not followed: it stays local."""
    from ssogen.dataset.publishable import files_to_upload, refuse_special_uploads
    from ssogen.errors import UserError

    out = write_dataset(tmp_path / "out", [make_record(i) for i in range(3)])
    (out / "logs").mkdir()
    os.mkfifo(out / "logs" / "tail.fifo")
    os.mkfifo(out / ".editor.fifo")
    (out / "extra").mkdir()
    (out / "extra" / "linked.fifo").symlink_to(out / "logs" / "tail.fifo")
    (out / "extra" / "linked.md").symlink_to(out / "manifest.json")
    uploaded = [f.path_in_repo for f in files_to_upload(out)]
    refuse_special_uploads(out)
    assert "manifest.json" in uploaded and not [p for p in uploaded if p.startswith(("logs/", ".", "extra/"))]
    monkeypatch.chdir(out / "extra")  # a relative name: tmp_path may be longer than a socket path may be
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("agent.sock")
        for check in (refuse_special_uploads, files_to_upload):
            with pytest.raises(UserError) as refused:
                check(out)
            assert str(refused.value) == (f"{out}/extra/agent.sock: not a regular file (a pipe, a socket or a "
                                          "device); replace it with a regular file or move it out of the folder")


# In a process of its own: pyarrow's peak (which tracemalloc does not see) counts from the start of the process.
# Each folder's peak, of pyarrow and of Python together, after a first check of a small folder has imported
# everything (pyarrow's peak after the larger folder is the higher of the two: still a bound on it).
_PEAKS = """
import sys, tracemalloc
import pyarrow as pa
from ssogen.dataset import publishable
publishable.BATCH_ROWS = 64  # a few batches of the small folder too
publishable.check_publishable(sys.argv[1])
tracemalloc.start()
for out in sys.argv[2:]:
    tracemalloc.reset_peak()
    publishable.check_publishable(out)
    print(pa.default_memory_pool().max_memory() + tracemalloc.get_traced_memory()[1])
"""


def test_the_checks_hold_a_batch_of_rows_not_a_config(tmp_path: Path) -> None:
    """Every row is still read (a corrupt page is refused), a batch at a time: the whole tables grew with the rows
    (763 MB at 20,000 rows of bench/large_folders.py). Reading holds a few parquet pages too, so the test compares
    two sizes: four times the rows, about the same memory (it was four times as much)."""
    def folder(name: str, rows: int) -> str:
        return str(write_dataset(tmp_path / name, [make_record(i, **{f"response_{v}": f"{v} {i} " + "x" * 2000
                                                                   for v in ("good", "bad", "raw")})
                                                   for i in range(rows)]))

    result = subprocess.run([sys.executable, "-c", _PEAKS, folder("warm", 3), folder("small", 2048),
                             folder("large", 8192)], capture_output=True, text=True, check=True)
    small, large = map(int, result.stdout.split())
    assert large < 2 * small, (small, large)


def test_a_folder_written_before_the_pairs_config_is_described_and_pushed_with_its_four(tmp_path: Path) -> None:
    """A folder an earlier ssogen wrote has no data/pairs/ and its manifest counts four configs: `stats` declared a
    `pairs` config with no files in its card, and push-to-hub refused it as "not an ssogen output folder"."""
    import shutil

    folder = OutputFolder(write_dataset(tmp_path / "old", [make_record(0), make_record(1)],
                                        configs={"triplets": 2, "dpo": 2, "sso": 2, "reward": 2}))
    shutil.rmtree(folder.config_dir("pairs"))
    stats = CliRunner().invoke(app, ["stats", str(folder.root)])
    assert stats.exit_code == 0, stats.output
    card = (folder.root / "README.md").read_text()
    assert "config_name: pairs" not in card and "data/pairs" not in card and '"pairs"' not in card
    assert "| P2 | x+ (good system prompt) | y+ | y- | `sso` |" in card
    result = CliRunner().invoke(app, ["push-to-hub", str(folder.root), "--repo-id", REPO, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "data/pairs" not in result.stdout
    # A folder of today names `pairs` in its manifest: its files missing are refused as before.
    folder = OutputFolder(write_dataset(tmp_path / "new", [make_record(0), make_record(1)],
                                        configs={"triplets": 2, "dpo": 2, "sso": 2, "reward": 2, "pairs": 6}))
    shutil.rmtree(folder.config_dir("pairs"))
    result = CliRunner().invoke(app, ["push-to-hub", str(folder.root), "--repo-id", REPO, "--dry-run"])
    assert result.exit_code == 2 and "data/pairs" in result.stderr, result.output


def test_a_refused_push_leaves_a_folder_it_found_without_ssogen_s_marker_as_it_was(tmp_path: Path) -> None:
    """A real push takes the folder's lock before its checks: refused, it left `.ssogen/lock` and `marker.json` in a
    folder built by hand (or by a very old version), which then counted as ssogen's."""
    out = write_dataset(tmp_path / "by-hand", [make_record(i) for i in range(3)], status="in_progress")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    result = CliRunner().invoke(app, ["push-to-hub", str(out), "--repo-id", REPO, "--token", "hf_not_sent"])
    assert result.exit_code == 2 and "is not complete (status 'in_progress')" in result.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
