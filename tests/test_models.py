"""One rule for every command: an existing folder is a local model, anything else a hub id (bare names too);
offline, a hub id not in the cache is one clear line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.errors import UserError
from ssogen.models import ModelRef, require_available, resolve_model


def test_local_folders_and_hub_ids(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_model(str(tiny_model)) == ModelRef(str(tiny_model), local=True)
    for name in ("gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "org/name.v1"):
        assert resolve_model(name) == ModelRef(name, local=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    require_available(resolve_model("gpt2"))  # online: left to the download


@pytest.mark.parametrize(("name", "message"), [
    ("./missing", "no such folder"), ("/no/such/model", "no such folder"), ("a/b/c", "no such folder"),
    ("bad name!", "no such folder"),
])
def test_what_is_neither_a_folder_nor_a_hub_id(name: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        resolve_model(name)


def test_folder_without_config_or_chat_template(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a model folder \\(no config.json\\)"):
        resolve_model(str(tmp_path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        resolve_model(str(tmp_path / "file"))
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(UserError, match="no chat template"):
        resolve_model(str(bare))
    assert resolve_model(str(bare), chat=False).local


def test_offline_hub_id_is_one_line_with_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set") as info:
        require_available(resolve_model("gpt2"))
    assert info.value.exit_code == 1


def test_generate_accepts_a_bare_hub_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dry = CliRunner().invoke(app, ["generate", "--model", "gpt2", "--out", str(tmp_path / "o"), "--limit", "1",
                                   "--dry-run"])
    assert dry.exit_code == 0, dry.output
    run = CliRunner().invoke(app, ["generate", "--model", "gpt2", "--out", str(tmp_path / "o"), "--limit", "1"])
    assert run.exit_code == 1 and run.stderr.startswith("error: --model gpt2: not a local folder, so a hub id")
    assert not (tmp_path / "o").exists()
