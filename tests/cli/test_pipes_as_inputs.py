"""Every flag that names a file to read refuses a pipe, as --prompts does: opening a FIFO with no writer blocked
forever (`--config`, `--principles`, a template), and a file is read more than once (by iterate and each of its
steps, by every process of a multi-GPU train), where the pipe of `<(...)` gives its content once.

Each case runs in its own process with a timeout, so that a hang fails the case rather than the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssogen.testing.folders import make_record, write_dataset

NOT_REGULAR = "not a regular file (a pipe or a device); save its content to a file first"
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
