"""Every flag that names a file to read refuses a pipe, as --prompts does: opening a FIFO with no writer blocked
forever (`--config`, `--principles`, a template), and a file is read more than once (by iterate and each of its
steps, by every process of a multi-GPU train), where the pipe of `<(...)` gives its content once.

Each case runs in its own process with a timeout, so that a hang fails the case rather than the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssogen.testing.folders import make_record, snapshot, write_dataset

NOT_REGULAR = "not a regular file (a pipe or a device); save its content to a file first"
IN_A_DATASET = ("not a regular file (a pipe, a socket or a device); replace it with a regular file or move it out "
                "of the folder")
# (case id, arguments with {fifo}, {w} = work folder and {model} = tiny model, the error line with {shown})
CASES = [
    ("generate-config", "generate --model {model} --out {w}/out --config {fifo}", "--config {fifo}"),
    ("train-config", "train --data {w}/data --model {model} --out {w}/out --config {fifo}", "--config {fifo}"),
    ("generate-principles", "generate --model {model} --out {w}/out --principles {fifo}", "--principles {fifo}"),
    ("iterate-generate-config", "iterate --model {model} --out {w}/loop --generate-config {fifo}",
     "--generate-config {fifo}"),
    ("iterate-train-config", "iterate --model {model} --out {w}/loop --train-config {fifo}", "--train-config {fifo}"),
    ("iterate-generator-train-config", "iterate --model {model} --out {w}/loop --recipe v2 --generator-train-config "
     "{fifo}", "--generator-train-config {fifo}"),
    ("iterate-accelerate-config", "iterate --model {model} --out {w}/loop --accelerate-config {fifo}",
     "--accelerate-config {fifo}"),
    ("principles-validate", "principles validate {fifo}", "{fifo}"),
    ("principles-list", "principles list {fifo}", "{fifo}"),
    ("generate-templates", "generate --model {model} --out {w}/out --templates {w}/templates",
     "--templates {w}/templates: system.jinja"),
    ("judge-templates", "judge {w}/data --judge-model {model} --templates {w}/templates",
     "--templates {w}/templates: system.jinja"),
]


# A FIFO inside a folder a command reads: a model folder (loaders open its files by name, weights by suffix) and
# a dataset folder (every file a command opens). (case id, arguments with {w} = work folder and {model} = tiny
# model, the file under {w} made a FIFO, the error line with {w}). Each blocked the command forever, but for
# config.json and tokenizer.json ("no config.json", "no tokenizer files"), the lock (an OSError traceback) and
# train's data file (called corrupt).
IN_FOLDERS = [
    ("model-config", "generate --model {w}/model --out {w}/out", "model/config.json",
     "--model {w}/model: config.json"),
    ("model-tokenizer", "train --data {w}/data --model {w}/model --out {w}/out", "model/tokenizer.json",
     "--model {w}/model: tokenizer.json"),
    ("model-weights", "score {w}/data --model {w}/model", "model/model.safetensors",
     "--model {w}/model: model.safetensors"),
    ("judge-model-weights", "judge {w}/data --judge-model {w}/model", "model/model.safetensors",
     "--judge-model {w}/model: model.safetensors"),
    ("stats-manifest", "stats {w}/data", "data/manifest.json", "{w}/data/manifest.json"),
    ("score-triplets", "score {w}/data --model {model}", "data/data/triplets/train-00000-of-00001.parquet",
     "{w}/data/data/triplets/train-00000-of-00001.parquet"),
    ("train-sso", "train --data {w}/data --model {model} --out {w}/out", "data/data/sso/train-00000-of-00001.parquet",
     "{w}/data/data/sso/train-00000-of-00001.parquet"),
    ("judge-card", "judge {w}/data --judge-model {model}", "data/README.md", "{w}/data/README.md"),
    ("score-lock", "score {w}/data --model {model}", "data/.ssogen/lock", "{w}/data/.ssogen/lock"),
    ("push-dry-run-manifest", "push-to-hub {w}/data --repo-id a/b --dry-run", "data/manifest.json",
     "{w}/data/manifest.json"),
    ("push-lock", "push-to-hub {w}/data --repo-id a/b --token hf_x", "data/.ssogen/lock", "{w}/data/.ssogen/lock"),
    # a file only the upload would open: it was left out of the upload without a word
    ("push-dry-run-extra", "push-to-hub {w}/data --repo-id a/b --dry-run", "data/extra/notes.fifo",
     "{w}/data/extra/notes.fifo"),
    ("push-extra", "push-to-hub {w}/data --repo-id a/b --token hf_x", "data/extra/notes.fifo",
     "{w}/data/extra/notes.fifo"),
]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FIFO that no process writes, a templates folder holding one, and a dataset folder."""
    w = tmp_path_factory.mktemp("pipes")
    write_dataset(w / "data", [make_record(i) for i in range(3)])
    os.mkfifo(w / "config.yaml")
    (w / "templates").mkdir()
    os.mkfifo(w / "templates" / "system.jinja")
    return w


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`argv` in its own process, killed after a minute (a blocked open is a failed case, not a hung suite)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.mark.parametrize(("case", "args", "shown"), CASES, ids=[c[0] for c in CASES])
def test_a_fifo_without_a_writer_is_refused_not_waited_for(work: Path, tiny_model: Path, case: str, args: str,
                                                           shown: str) -> None:
    names = {"fifo": work / "config.yaml", "w": work, "model": tiny_model}
    result = _run([sys.executable, "-m", "ssogen", *args.format(**names).split()])
    assert result.returncode == 2, result.stderr
    line = f"{shown.format(**names)}: {NOT_REGULAR}"
    # `principles validate` prints FILE:LINE lines; every other command one `error:` line.
    assert result.stderr.strip().splitlines() == [line if case == "principles-validate" else f"error: {line}"]


def test_process_substitution_is_refused_like_prompts(tmp_path: Path) -> None:
    """`--config <(cat run.yaml)`: a pipe with a writer, read once here; refused all the same (as `--prompts
    <(...)` is), since train under `accelerate launch` and iterate's steps read the file again."""
    (tmp_path / "run.yaml").write_text("seed: 1\n")
    result = _run(["bash", "-c", f"{sys.executable} -m ssogen generate --model m --out {tmp_path}/out "
                                 f"--config <(cat {tmp_path}/run.yaml)"])
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: --config /dev/fd/") and line.endswith(f": {NOT_REGULAR}"), line


def test_a_deepspeed_config_that_is_a_fifo_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DeepSpeed config file a train config names, checked before transformers reads it."""
    import importlib.util

    from ssogen.errors import UserError
    from ssogen.train.config import build_config
    from ssogen.train.integrations import check_deepspeed

    os.mkfifo(tmp_path / "zero3.json")
    (tmp_path / "t.yaml").write_text(f"deepspeed: {tmp_path}/zero3.json\n")
    config = build_config({"data": Path("-"), "model": "-", "out": Path("-")}, tmp_path / "t.yaml")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "deepspeed"
                        else find_spec(name, *a))
    with pytest.raises(UserError, match=rf"^{tmp_path}/t\.yaml:1: deepspeed: {tmp_path}/zero3\.json: not a regular "
                                        r"file \(a pipe or a device\); save its content to a file first$"):
        check_deepspeed(config)


@pytest.mark.parametrize(("case", "args", "fifo", "shown"), IN_FOLDERS, ids=[c[0] for c in IN_FOLDERS])
def test_a_fifo_inside_a_model_or_dataset_folder_is_refused_before_anything_is_written(
        tmp_path: Path, tiny_model: Path, case: str, args: str, fifo: str, shown: str) -> None:
    shutil.copytree(tiny_model, tmp_path / "model")
    write_dataset(tmp_path / "data", [make_record(i) for i in range(3)])
    (tmp_path / fifo).unlink(missing_ok=True)
    (tmp_path / fifo).parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(tmp_path / fifo)
    before = snapshot(tmp_path)
    result = _run([sys.executable, "-m", "ssogen", *args.format(w=tmp_path, model=tiny_model).split()])
    assert result.returncode == 2, result.stderr
    why = NOT_REGULAR if case.startswith(("model-", "judge-model-")) else IN_A_DATASET  # an input, or in the folder
    assert result.stderr.strip().splitlines() == [f"error: {shown.format(w=tmp_path)}: {why}"]
    assert snapshot(tmp_path) == before  # no --out, no lock, no log
