"""The offline tiny model: builds without a network, loads in transformers and in the real vLLM CPU engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssogen.chat import render_prompt, supports_system_role
from ssogen.cli import app


def test_files_and_size(tiny_model: Path) -> None:
    names = {p.name for p in tiny_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    total = sum(p.stat().st_size for p in tiny_model.iterdir())
    assert total < 2 * 2**20
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["hidden_size"] // config["num_attention_heads"] >= 32  # vLLM CPU head-size limit
    # Readable as the config is (transformers wrote the weights 0o600): another user of a shared machine loads it.
    modes = {name: (tiny_model / name).stat().st_mode & 0o777 for name in ("model.safetensors", "config.json")}
    assert modes["model.safetensors"] == modes["config.json"], modes


def test_transformers_loads_and_generates(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    text = render_prompt(tokenizer, messages, system_supported=True)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n") and text.endswith("<|im_start|>assistant\n")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(0)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id[0] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_system_role_rejecting_variant(tiny_model: Path, tiny_model_no_system: Path) -> None:
    from transformers import AutoTokenizer

    assert supports_system_role(AutoTokenizer.from_pretrained(tiny_model))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_no_system)
    assert not supports_system_role(tokenizer)
    with pytest.raises(Exception, match="System role not supported"):
        tokenizer.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                      tokenize=False)
    merged = render_prompt(tokenizer, [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                           system_supported=False)
    assert merged == "<|im_start|>user\nS\n\nU<|im_end|>\n<|im_start|>assistant\n"


def test_vllm_generates_on_the_tiny_model(tiny_model: Path) -> None:
    from vllm import LLM, SamplingParams

    from ssogen.engine.vllm_llm import collect_dropped_engines

    collect_dropped_engines()  # an engine an earlier test dropped must not tear down this one's state
    llm = LLM(model=str(tiny_model), dtype="float32", enforce_eager=True, kv_cache_memory_bytes=64 * 2**20,
              enable_chunked_prefill=False, max_model_len=1024, seed=0)
    params = SamplingParams(max_tokens=12, temperature=0.7, top_p=0.8, seed=7)
    chats = [[{"role": "user", "content": "What is 2+2?"}], [{"role": "user", "content": "Write a haiku."}]]
    try:
        first = llm.chat(chats, params)
        again = llm.chat(chats, params)
    finally:  # in-process the engine holds a torch.distributed group: release it with the engine
        llm.llm_engine.engine_core.shutdown()
    assert len(first) == 2
    assert all(len(o.outputs[0].token_ids) > 0 for o in first)
    assert [o.outputs[0].text for o in first] == [o.outputs[0].text for o in again]  # seeded


def test_make_tiny_model_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["make-tiny-model", str(tmp_path / "m"), "--reject-system-role"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("wrote tiny model to ") and "Writing" not in result.output  # no progress bar
    assert json.loads((tmp_path / "m" / "ssogen_tiny_model.json").read_text())["reject_system_role"] is True
    bad = CliRunner().invoke(app, ["make-tiny-model", str(tmp_path / "x"), "--size", "huge"])
    assert bad.exit_code == 2 and "--size: unknown size 'huge'" in bad.stderr


def test_env_command_reports_versions() -> None:
    result = CliRunner().invoke(app, ["env", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    for key in ("python", "torch", "transformers", "vllm", "datasets", "trl", "accelerate", "peft", "cuda_devices"):
        assert key in info
    assert info["vllm"].endswith("(cpu build)")
    assert info["torch"].startswith("2.13.0")
    assert info["cuda_devices"] == []  # this CPU machine: an empty list, not ["none"]
    table = CliRunner().invoke(app, ["env"])
    assert table.exit_code == 0 and "transformers" in table.stdout and "none" in table.stdout


def test_make_tiny_model_never_writes_over_a_file_or_another_model(tmp_path: Path) -> None:
    """Walkthrough: a PATH that is a file was a FileExistsError traceback, and a folder holding a real model had its
    config.json, weights and tokenizer replaced by random ones. Both are one line now, and nothing is touched."""
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    result = CliRunner().invoke(app, ["make-tiny-model", str(afile)])
    assert result.exit_code == 2, result.output
    assert f"make-tiny-model {afile}: exists and is not a folder" in result.stderr
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    result = CliRunner().invoke(app, ["make-tiny-model", str(model)])
    assert result.exit_code == 2, result.output
    assert "holds no model make-tiny-model wrote (no ssogen_tiny_model.json)" in result.stderr
    assert afile.read_text() == "mine" and [p.name for p in model.iterdir()] == ["config.json"]


def test_make_tiny_model_says_in_one_line_when_its_folder_cannot_be_made(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A parent that looks writable may still refuse a new folder (`/proc/x` on Linux): that was a traceback."""
    import errno

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    result = CliRunner().invoke(app, ["make-tiny-model", str(tmp_path / "m")])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (f"error: make-tiny-model {tmp_path / 'm'}: cannot create the folder (No such "
                                     "file or directory)")
