"""One rule for every command: an existing folder is a local model, anything else a hub id (bare names too);
offline, a hub id not in the cache is one clear line."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.errors import UserError
from ssogen.fingerprint import model_fingerprint
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
    """Offline, a hub id is looked up in the local cache by the run and by its dry run (no network either way): a
    cached one is planned, one the cache lacks is the run's line, exit 1, before anything is written."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    args = ["generate", "--model", "gpt2", "--out", str(tmp_path / "o"), "--limit", "1"]
    line = "error: --model gpt2: no such local folder, and not a hub model in the local cache (HF_HUB_OFFLINE is set)"
    for command in ([*args, "--dry-run"], args):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1 and result.stderr.startswith(line), result.output
    assert not (tmp_path / "o").exists()
    snapshot = cache / "models--gpt2" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--gpt2" / "refs").mkdir()
    (cache / "models--gpt2" / "refs" / "main").write_text("abc")
    dry = CliRunner().invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "model gpt2 (vllm, a hub id in the local cache)" in " ".join(dry.stdout.split())


def test_a_mistyped_model_folder_name_suggests_the_folder(tiny_model: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in a folder's name reads as a hub id, which offline cannot be told from one the cache lacks: the line
    names the model folder nearby whose name is close."""
    shutil.copytree(tiny_model, tmp_path / "tiny-model")
    (tmp_path / "notes").mkdir()  # not a model folder: never suggested
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"HF_HUB_OFFLINE is set\); download it first or give a model folder; did "
                                        r"you mean tiny-model\?$"):
        require_available(resolve_model("tiny-mdl"))
    with pytest.raises(UserError, match=r"^--model ./tiny-mdl: no such folder \(and not a hub id, which is NAME or "
                                        r"ORG/NAME\); did you mean tiny-model\?$"):
        resolve_model("./tiny-mdl")
    with pytest.raises(UserError, match=f"; did you mean {re.escape(str(tmp_path / 'tiny-model'))}\\?$"):
        resolve_model(str(tmp_path / "tiny-modl"))
    with pytest.raises(UserError, match=r"not a hub id, which is NAME or ORG/NAME\)$"):
        resolve_model("./note")  # close to a folder, but not to a model folder
    with pytest.raises(UserError, match=r"give a model folder$"):
        require_available(resolve_model("gpt2"))  # close to nothing here


# -- the model fingerprint (issue 10 item 2): what a model is, read from its files without transformers
def _flip_weights(path: Path) -> None:
    """Other weights under the same safetensors header and size (a fine-tune of the same architecture)."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start:] = bytes(255 - b for b in data[start:])
    path.write_bytes(bytes(data))


def test_the_fingerprint_follows_the_files_not_the_path(tiny_model: Path, tmp_path: Path) -> None:
    original = model_fingerprint(resolve_model(str(tiny_model)))
    moved = Path(shutil.copytree(tiny_model, tmp_path / "moved"))
    assert model_fingerprint(resolve_model(str(moved))) == original
    changes = {
        "weights": lambda folder: _flip_weights(folder / "model.safetensors"),
        "chat_template": lambda folder: (folder / "chat_template.jinja").write_text("{{ messages }}"),
        "tokenizer": lambda folder: (folder / "tokenizer.json").write_text(
            (folder / "tokenizer.json").read_text().replace('"<|im_end|>"', '"<|im_stop|>"', 1)),
        "config": lambda folder: (folder / "config.json").write_text(
            (folder / "config.json").read_text().replace('"rms_norm_eps"', '"rms_norm_eps_x"')),
        "generation_config": lambda folder: (folder / "generation_config.json").write_text('{"top_k": 3}'),
    }
    for part, change in changes.items():
        folder = Path(shutil.copytree(tiny_model, tmp_path / part))
        change(folder)
        assert model_fingerprint(resolve_model(str(folder))).changed(original.parts) == [part]


def test_one_changed_block_in_a_large_weight_file_is_seen_when_sampled(tmp_path: Path, tiny_model: Path) -> None:
    from ssogen.fingerprint import BLOCK_BYTES, SAMPLED_BLOCKS

    folder = Path(shutil.copytree(tiny_model, tmp_path / "big"))
    header = b'{"w": {"dtype": "U8", "shape": [4000000], "data_offsets": [0, 4000000]}}'
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4_000_000))
    before = model_fingerprint(resolve_model(str(folder)))
    with (folder / "model.safetensors").open("r+b") as f:  # the last sampled block
        f.seek(8 + len(header) + 4_000_000 - BLOCK_BYTES // 2)
        f.write(b"\x01")
    assert model_fingerprint(resolve_model(str(folder))).changed(before.parts) == ["weights"]
    assert SAMPLED_BLOCKS * BLOCK_BYTES < 4_000_000  # sampled, not read whole


@pytest.mark.parametrize(("cut", "message"), [
    (4, "model.safetensors is truncated or corrupt (4 bytes)"),
    (100, "header of"),
    (500_000, "(500000 of"),
])
def test_truncated_weights_are_one_line(tiny_model: Path, tmp_path: Path, cut: int, message: str) -> None:
    folder = Path(shutil.copytree(tiny_model, tmp_path / "cut"))
    os.truncate(folder / "model.safetensors", cut)
    with pytest.raises(UserError, match=re.escape(message)):
        model_fingerprint(resolve_model(str(folder)))


@pytest.mark.parametrize("header", [b'{"w": {"data_offsets": ["0", "4"]}}', b'[1, 2]', b'{"w": 5}'])
def test_a_corrupt_safetensors_header_is_one_line(tiny_model: Path, tmp_path: Path, header: bytes) -> None:
    folder = Path(shutil.copytree(tiny_model, tmp_path / "corrupt"))
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    with pytest.raises(UserError, match=re.escape("model.safetensors is truncated or corrupt (unreadable header)")):
        model_fingerprint(resolve_model(str(folder)))


def test_a_sharded_checkpoint_missing_a_shard_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_model, tmp_path / "sharded"))
    (folder / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}')
    with pytest.raises(UserError, match="names 1 missing weight file"):
        model_fingerprint(resolve_model(str(folder)))


def test_a_hub_id_is_fingerprinted_by_its_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--org--name"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert model_fingerprint(resolve_model("org/name")).parts == {"hub_id": "org/name", "revision": "abc123"}
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set") as info:
        model_fingerprint(resolve_model("org/other"))
    assert info.value.exit_code == 1


def _hub_answers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: Exception) -> None:
    """Online, with an empty hub cache, and the hub's model_info raising `error`."""
    import huggingface_hub
    from huggingface_hub import constants

    def model_info(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)


def test_a_mistyped_folder_name_names_both_readings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`my-modle` (no ./) is a bare hub id as much as a mistyped folder: the line says it is neither, exit 1 when
    the hub could not be asked, exit 2 when the hub answered that it has no such model."""
    import httpx
    from huggingface_hub.errors import RepositoryNotFoundError

    _hub_answers(monkeypatch, tmp_path, ConnectionError("no route to host"))
    with pytest.raises(UserError) as unreachable:
        model_fingerprint(resolve_model("my-modle"))
    assert str(unreachable.value) == ("--model my-modle: no such local folder, and not a hub model in the local "
                                      "cache (the hub cannot be reached)")
    assert unreachable.value.exit_code == 1
    request = httpx.Request("GET", "https://huggingface.co/api/models/my-modle")
    _hub_answers(monkeypatch, tmp_path, RepositoryNotFoundError("404", response=httpx.Response(404, request=request)))
    with pytest.raises(UserError) as unknown:
        model_fingerprint(resolve_model("my-modle"))
    assert str(unknown.value) == ("--model my-modle: no such local folder, and no such model on the hub (a "
                                  "private one needs HF_TOKEN)")
    assert unknown.value.exit_code == 2
    # A gated model exists (the hub only will not show it): it is not called missing; the cache is asked.
    from huggingface_hub.errors import GatedRepoError

    _hub_answers(monkeypatch, tmp_path, GatedRepoError("401", response=httpx.Response(401, request=request)))
    with pytest.raises(UserError, match="not a hub model in the local cache") as gated:
        model_fingerprint(resolve_model("my-modle"))
    assert gated.value.exit_code == 1


def test_a_folder_without_tokenizer_files_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_model, tmp_path / "no-tokenizer"))
    (folder / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="no tokenizer files"):
        resolve_model(str(folder))


@pytest.mark.parametrize(("command", "flag"), [("score", "--model"), ("judge", "--judge-model")])
def test_score_and_judge_look_a_hub_model_up_before_loading_it(command: str, flag: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """They went straight to loading, which retried an unreachable hub for up to a minute, printing every try
    (judge then exited 2, as for a broken model)."""
    import ssogen.cli.data
    import ssogen.judge.run
    from ssogen.testing.folders import make_record, write_dataset

    def load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(ssogen.cli.data, "_score_with_progress", load)
    monkeypatch.setattr(ssogen.judge.run, "judge_folder", load)
    out = write_dataset(tmp_path / "data", [make_record(i) for i in range(3)])
    _hub_answers(monkeypatch, tmp_path / "cache", ConnectionError("no route to host"))
    result = CliRunner().invoke(app, [command, str(out), flag, "org/name"])
    assert result.exit_code == 1 and result.stderr == (f"error: {flag} org/name: no such local folder, and not a hub "
                                                       "model in the local cache (the hub cannot be reached)\n")


def test_score_asks_the_hub_for_a_hub_model_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's check asked the hub for the model's commit, then the score cache's key asked again."""
    import huggingface_hub
    from huggingface_hub import constants

    from ssogen.dataset import score
    from ssogen.testing.folders import make_record, write_dataset

    asked: list[str] = []

    def model_info(self: object, name: str, **kwargs: object) -> SimpleNamespace:
        asked.append(name)
        return SimpleNamespace(sha="c0ffee" * 6 + "abcd")

    def setup(fingerprint: str, tokenizer: object) -> None:  # the engine would load next: stop here
        raise UserError(f"stopped with {fingerprint}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(score, "_load_tokenizer", lambda model: object())
    monkeypatch.setattr(score, "score_setup", setup)
    out = write_dataset(tmp_path / "data", [make_record(i) for i in range(3)])
    result = CliRunner().invoke(app, ["score", str(out), "--model", "org/name"])
    expected = model_fingerprint(ModelRef("org/name", local=False, revision="c0ffee" * 6 + "abcd")).digest
    assert result.exit_code == 2 and f"stopped with {expected}" in result.stderr, result.output
    assert asked == ["org/name"]


@pytest.mark.parametrize(("text", "message", "code"), [
    ('{"model_type": \n', r"config\.json:2: invalid JSON: Expecting value$", 2),
    ("", r"config\.json:1: invalid JSON: Expecting value$", 2),
    ("[1, 2]", r"config\.json: not a JSON object \(it holds an array\)$", 2),
    ("null", r"config\.json: not a JSON object \(it holds null\)$", 2),
    ('{"a": "caf\xe9"}', r"config\.json: not UTF-8 text \(byte 0xe9\)$", 2),
    ("[" * 100_000, r"config\.json: invalid JSON: nested too deeply$", 2),
])
def test_a_config_json_no_loader_reads_is_one_line_naming_it(tiny_model: Path, tmp_path: Path, text: str,
                                                             message: str, code: int) -> None:
    """Found where the model is named, before any command takes its output folder (it was a loader's traceback, or
    a load error after --out was claimed)."""
    folder = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    (folder / "config.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(UserError, match=rf"^--judge-model {re.escape(str(folder))}: {message}") as info:
        resolve_model(str(folder), flag="--judge-model")
    assert info.value.exit_code == code
