"""`ssogen train --out` (issue 10 item 5): a folder ssogen did not write is refused, --overwrite clears only the
old run, and a rerun of the same command resumes from the newest complete checkpoint, skipping one cut off
mid-write, to the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.testing.synthetic import write_synthetic_sso
from ssogen.train.output import MODEL_CARD_MARKER, TrainOutput, checkpoint_problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = ["--max-steps", "6", "--save-steps", "2", "--batch-size", "2", "--lr", "1e-3", "--seed", "3",
            "--logging-steps", "1", "--warmup-ratio", "0", "--max-length", "256", "--max-prompt-length", "192"]


def train(data: Path, model: Path, out: Path, *extra: str) -> object:
    return CliRunner().invoke(app, ["train", "--data", str(data), "--model", str(model), "--out", str(out),
                                    *SETTINGS, *extra])


@pytest.fixture(scope="module")
def uninterrupted(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train-output")
    data = write_synthetic_sso(root / "data", count=8, seed=0)
    result = train(data, tiny_model, root / "run")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    # The last line names the whole folder: in a pipe (80 columns) it broke the path in two.
    assert result.stdout.splitlines()[-1] == ("wrote model, tokenizer, ssogen_train_config.json, metrics.json and "  # type: ignore
                                              f"README.md to {root / 'run'}")
    return data, root / "run"


def test_a_rerun_after_a_kill_resumes_from_the_newest_complete_checkpoint(uninterrupted: tuple[Path, Path],
                                                                         tiny_model: Path, tmp_path: Path) -> None:
    data, done = uninterrupted
    out = Path(shutil.copytree(done, tmp_path / "killed"))
    # The state a kill during the save of checkpoint-4 leaves: no final model, metrics or later checkpoint, and
    # checkpoint-4's weights cut off.
    for name in ("model.safetensors", "metrics.json", "ssogen_train_config.json", "README.md"):
        (out / name).unlink()
    shutil.rmtree(out / "checkpoint-6")
    os.truncate(out / "checkpoint-4" / "model.safetensors", 1000)
    assert checkpoint_problem(out / "checkpoint-4") is not None and checkpoint_problem(out / "checkpoint-2") is None
    result = train(data, tiny_model, out)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    # Notes, so on stderr: stdout carries a command's summary only.
    assert "skipped checkpoint-4: model.safetensors is truncated or corrupt" in result.stderr  # type: ignore
    assert f"resuming the run in {out} from checkpoint-2" in result.stderr  # type: ignore[attr-defined]
    assert "resuming" not in result.stdout  # type: ignore[attr-defined]
    # The tiny model ties its output layer to the embeddings: one copy is saved, and nothing is missing.
    assert "missing keys" not in result.stderr + max((out / "logs").glob("train-*.log")).read_text()  # type: ignore
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["step"] for e in metrics["log_history"] if "loss" in e] == [1, 2, 3, 4, 5, 6]
    assert (out / "model.safetensors").read_bytes() == (done / "model.safetensors").read_bytes()


def test_a_checkpoint_given_is_checked_against_this_run(uninterrupted: tuple[Path, Path], tiny_model: Path,
                                                        tmp_path: Path) -> None:
    """--resume-from-checkpoint took any complete checkpoint: one at --max-steps trained nothing, and the folder
    then claimed this run's settings for the checkpoint's weights; one of a run of other settings was taken
    without a word."""
    data, done = uninterrupted
    out = tmp_path / "out"
    at_end = train(data, tiny_model, out, "--resume-from-checkpoint", str(done / "checkpoint-6"))
    assert at_end.exit_code == 2  # type: ignore[attr-defined]
    assert "saved at step 6, so --max-steps 6 leaves nothing to train" in at_end.stderr  # type: ignore
    assert not out.exists()
    other = train(data, tiny_model, out, "--resume-from-checkpoint", str(done / "checkpoint-4"), "--lr", "5e-4")
    assert other.exit_code == 0, other.output  # type: ignore[attr-defined]
    assert "saved by a run of other settings (changed: lr); training continues" in other.stderr  # type: ignore
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["step"] for e in metrics["log_history"] if "loss" in e] == [1, 2, 3, 4, 5, 6]
    same = train(data, tiny_model, tmp_path / "same", "--resume-from-checkpoint", str(done / "checkpoint-4"))
    assert same.exit_code == 0 and "other settings" not in same.output  # type: ignore[attr-defined]


def test_a_finished_run_is_left_as_it_is(uninterrupted: tuple[Path, Path], tiny_model: Path, tmp_path: Path) -> None:
    data, done = uninterrupted
    out = Path(shutil.copytree(done, tmp_path / "finished"))
    before = {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = train(data, tiny_model, out)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "nothing to do" in result.stdout  # type: ignore[attr-defined]
    assert {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_another_configuration_is_refused_and_overwrite_clears_only_the_old_run(
        uninterrupted: tuple[Path, Path], tiny_model: Path, tmp_path: Path) -> None:
    data, done = uninterrupted
    out = Path(shutil.copytree(done, tmp_path / "replaced"))
    (out / "notes.txt").write_text("mine")
    before = {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    refused = train(data, tiny_model, out, "--lr", "2e-3")
    assert refused.exit_code == 2  # type: ignore[attr-defined]
    assert refused.stderr.strip() == (  # type: ignore[attr-defined]
        f"error: --out {out}: holds a training run of another configuration (changed: lr); use --overwrite to "
        "replace it or choose another --out")
    assert {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # A run given --no-bf16 (or started by an ssogen whose default was off) against one left to the default.
    (out / ".ssogen" / "fingerprint.json").write_text(json.dumps({"fingerprint": "x", "config": {
        **json.loads((out / ".ssogen" / "fingerprint.json").read_text())["config"], "bf16": False}}))
    assert train(data, tiny_model, out).stderr.strip() == (  # type: ignore[attr-defined]
        f"error: --out {out}: holds a training run of another configuration (changed: bf16); pass --bf16 or "
        "--no-bf16 as that run did (without either, the choice is left to the device and recorded as such); use "
        "--overwrite to replace it or choose another --out")
    assert "(changed: bf16); use --overwrite" in train(data, tiny_model, out, "--bf16").stderr  # type: ignore
    assert MODEL_CARD_MARKER in (out / "README.md").read_text()  # ssogen's card: replaced by the next run
    (out / "README.md").write_text("# My model\n\nA card I wrote for the hub.\n")
    replaced = train(data, tiny_model, out, "--lr", "2e-3", "--save-steps", "0", "--overwrite")
    assert replaced.exit_code == 0, replaced.output  # type: ignore[attr-defined]
    # A card written by hand is neither removed by --overwrite nor replaced by the run's own.
    assert (out / "README.md").read_text() == "# My model\n\nA card I wrote for the hub.\n"
    assert replaced.stdout.splitlines()[-1].endswith(  # type: ignore[attr-defined]
        f"ssogen_train_config.json and metrics.json (your README.md kept) to {out}")
    assert "is a model card written by hand: left as it is" in replaced.stderr  # type: ignore[attr-defined]
    assert TrainOutput(out).checkpoints() == []  # the old run's checkpoints went with it
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "ssogen_train_config.json").read_text())["config"]["lr"] == 2e-3
    assert json.loads((out / "metrics.json").read_text())["reference"]["reused"] is True  # the cache stayed


def test_a_run_that_failed_before_its_first_checkpoint_gives_way_to_the_corrected_command(
        uninterrupted: tuple[Path, Path], tiny_model: Path, tmp_path: Path) -> None:
    """A bad --scheduler is refused before the run takes --out (it wrote the marker, the fingerprint and a log
    there). A run that fails after taking it (a LoRA target that matches no module, found once the model is
    loaded; a model transformers cannot load) leaves no trace: the folder it made is gone, so neither the fixed
    command nor another command is refused there. In a folder that held a run the same failure gives way to the
    fixed command instead of refusing it as another configuration: nothing was saved."""
    data, _ = uninterrupted
    out = tmp_path / "run"
    failed = train(data, tiny_model, out, "--scheduler", "foo")
    assert failed.exit_code == 2 and ("error: invalid training option (--scheduler): foo is not a valid "  # type: ignore
                                      "SchedulerType") in failed.stderr  # type: ignore[attr-defined]
    assert not out.exists()
    failed = train(data, tiny_model, out, "--lora", "--lora-target-modules", "no_such_proj")
    assert failed.exit_code == 2, failed.output  # type: ignore[attr-defined]
    assert not out.exists()
    unknown = Path(shutil.copytree(tiny_model, tmp_path / "unknown-type"))
    (unknown / "config.json").write_text(json.dumps({**json.loads((tiny_model / "config.json").read_text()),
                                                     "model_type": "no_such_type"}))
    failed = train(data, unknown, out)
    assert failed.exit_code == 2 and "error: --model " in failed.stderr, failed.output  # type: ignore[attr-defined]
    assert not out.exists()  # it said "holds a training run of ssogen train" to a generate there
    with TrainOutput(out).claim() as left_behind:  # a folder ssogen marked before: a failure keeps its mark
        assert left_behind is None
    failed = train(data, tiny_model, out, "--lora", "--lora-target-modules", "no_such_proj")
    assert failed.exit_code == 2, failed.output  # type: ignore[attr-defined]
    assert TrainOutput(out).fingerprint.is_file()
    fixed = train(data, tiny_model, out, "--scheduler", "linear", "--max-steps", "2")
    assert fixed.exit_code == 0, fixed.output  # type: ignore[attr-defined]
    assert json.loads((out / "ssogen_train_config.json").read_text())["config"]["scheduler"] == "linear"


def test_ctrl_c_names_the_checkpoint_a_rerun_resumes_from(uninterrupted: tuple[Path, Path], tiny_model: Path,
                                                          tmp_path: Path) -> None:
    data, _ = uninterrupted
    out = tmp_path / "interrupted"
    argv = [sys.executable, "-m", "ssogen", "train", "--data", str(data), "--model", str(tiny_model), "--out",
            str(out), *SETTINGS, "--max-steps", "100000"]
    proc = subprocess.Popen(argv, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and TrainOutput(out).newest_checkpoint()[0] is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    newest = TrainOutput(out).newest_checkpoint()[0]
    assert newest is not None and "Traceback" not in stderr
    assert f"error: interrupted; the same command resumes from {newest.name} in {out}" in stderr
    assert "\nto resume: ssogen train --data" in stderr


def test_ctrl_c_before_the_folder_exists_names_no_folder(tmp_path: Path) -> None:
    """Stopped while the model loaded: the line said the command "starts over in OUT", a folder never made."""
    assert str(TrainOutput(tmp_path / "never-made").interruption()) == \
        "interrupted before training began; nothing was written"
    made = TrainOutput(tmp_path / "made")
    made.work_dir.mkdir(parents=True)
    assert str(made.interruption()) == (f"interrupted; no checkpoint was saved yet, so the same command starts over "
                                        f"in {made.root} (--save-steps sets how often one is saved)")


def test_a_model_folder_ssogen_did_not_write_is_never_touched(uninterrupted: tuple[Path, Path], tiny_model: Path,
                                                              tmp_path: Path) -> None:
    data, _ = uninterrupted
    out = Path(shutil.copytree(tiny_model, tmp_path / "someone-elses-model"))
    before = {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for extra in ([], ["--overwrite"]):
        result = train(data, tiny_model, out, *extra)
        assert result.exit_code == 2  # type: ignore[attr-defined]
        assert "not empty and holds no ssogen training run" in result.stderr  # type: ignore[attr-defined]
    assert {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_the_card_is_written_before_the_files_that_mark_the_run_finished(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The card came after both JSON files: a kill between them left a run counted finished, without its card,
    and a rerun left it so."""
    from types import SimpleNamespace

    from ssogen.train import report
    from ssogen.train.config import build_config
    from ssogen.train.output import FINISHED_FILES, MODEL_CARD

    config = build_config({"data": tmp_path / "data", "model": "org/model", "out": tmp_path / "out"})
    outcome = report.TrainOutcome(out=config.out, steps=1, train_metrics={}, log_history=[], reference_reused=False,
                                  reference_file="ref.parquet", reference_loaded_from=None, truncation={})
    written: list[str] = []
    monkeypatch.setattr(report, "write_json_atomic", lambda path, data, **_: written.append(Path(path).name))
    monkeypatch.setattr(report, "write_text_atomic", lambda path, text, **_: written.append(Path(path).name))
    report.write_outputs(config, outcome, SimpleNamespace(reference_seconds=0.0), rows=1, fingerprint="f", key="k",
                         system_supported=True)
    assert written == [MODEL_CARD, *FINISHED_FILES]


def test_a_card_is_ssogen_s_by_its_marker_an_earlier_version_s_heading_or_peft_s_template(tmp_path: Path) -> None:
    """Cards of earlier versions had no marker: they are still ssogen's (replaced, and removed by --overwrite), as is
    PEFT's unfilled template."""
    out = TrainOutput(tmp_path)
    assert out.card_is_generated()  # none yet
    cards = {"---\nlibrary_name: transformers\n---\n\n# Model trained with ssogen (Self-Steering Optimization)\n": True,
             f"anything\n{MODEL_CARD_MARKER}\n": True,
             "# Model trained with ssogen (Self-Steering Optimization)\n\nMy notes.\n": False,  # no header: edited
             "# My model\n": False,
             # PEFT's blank template, left by a LoRA run killed between PEFT's save and its own card
             "---\nlibrary_name: peft\n---\n\n# Model Card for Model ID\n\n<!-- Provide a quick summary -->\n": True,
             "---\nlibrary_name: transformers\n---\n\n# Model Card for Model ID\n": False,  # not PEFT's
             "---\nlibrary_name: peft\n---\n\n# My adapter\n\nModel Card for Model ID\n": False}  # filled in
    for text, generated in cards.items():
        out.card.write_text(text)
        assert out.card_is_generated() is generated, text
        out.remove_run_outputs()
        assert out.card.exists() is not generated, text


def test_overwrite_removes_a_linked_checkpoint_not_what_it_points_at(tmp_path: Path) -> None:
    kept = tmp_path / "elsewhere" / "checkpoint-5"
    kept.mkdir(parents=True)
    (kept / "model.safetensors").write_text("not ours")
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint-5").symlink_to(kept)  # rmtree refused a link: a traceback
    (out / "checkpoint-3").mkdir()
    from ssogen.written import record

    record(out / ".ssogen", ["checkpoint-3", "checkpoint-5"])  # the names the run recorded saving
    assert TrainOutput(out).remove_run_outputs() is None  # nothing kept: nothing to name
    assert not (out / "checkpoint-5").is_symlink() and not (out / "checkpoint-3").exists()
    assert (kept / "model.safetensors").read_text() == "not ours"


def test_overwrite_removes_the_folders_the_run_recorded_and_names_the_others(
        uninterrupted: tuple[Path, Path], tiny_model: Path, tmp_path: Path) -> None:
    """--overwrite removed every checkpoint-N/ and runs/ in --out, a checkpoint a person copied there and the
    TensorBoard runs of another tool with them: it removes the folders the run recorded making, keeps the others,
    naming them in one line, and a rerun resumes from the run's own checkpoints only."""
    data, done = uninterrupted
    out = Path(shutil.copytree(done, tmp_path / "replaced"))
    shutil.copytree(done / "checkpoint-6", out / "checkpoint-9")  # a complete checkpoint, copied in by hand
    (out / "runs" / "other-tool").mkdir(parents=True)
    (out / "runs" / "other-tool" / "events.out.tfevents.1").write_text("not ssogen's")
    replaced = train(data, tiny_model, out, "--lr", "2e-3", "--max-steps", "4", "--overwrite")
    assert replaced.exit_code == 0, replaced.output  # type: ignore[attr-defined]
    assert (f"warning: kept in {out} (ssogen train did not record making them): checkpoint-9, runs/other-tool"
            in " ".join(replaced.stderr.split()))  # type: ignore[attr-defined]
    assert [p.name for p in TrainOutput(out).checkpoints()] == ["checkpoint-9", "checkpoint-4", "checkpoint-2"]
    assert json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["max_steps"] == 4  # the new run's
    assert (out / "runs" / "other-tool" / "events.out.tfevents.1").read_text() == "not ssogen's"
    for name in ("metrics.json", "ssogen_train_config.json"):  # as if the run was killed after checkpoint-4
        (out / name).unlink()
    assert TrainOutput(out).newest_checkpoint()[0] == out / "checkpoint-4"  # not the copied checkpoint-9


def test_a_run_of_an_earlier_ssogen_keeps_its_folders_on_overwrite_and_resumes_with_them(
        uninterrupted: tuple[Path, Path], tmp_path: Path) -> None:
    """An earlier ssogen recorded none of the folders it made, so they cannot be told from a person's: --overwrite
    keeps every checkpoint and TensorBoard run there and says why (the files it wrote go as before), while a rerun
    of that run's command resumes from its checkpoints and records them as the run's."""
    _, done = uninterrupted
    older = Path(shutil.copytree(done, tmp_path / "older"))
    (older / ".ssogen" / "written.json").unlink(missing_ok=True)  # (none before ssogen recorded folders)
    (older / "runs" / "Nov01_10-10-10_host").mkdir(parents=True)
    fingerprint = json.loads((older / ".ssogen" / "fingerprint.json").read_text())
    resumed = Path(shutil.copytree(older, tmp_path / "resumed"))
    assert " ".join(str(TrainOutput(older).remove_run_outputs()).split()) == (
        f"kept in {older} (the run there, of an earlier ssogen, recorded none of the folders it made, so they cannot "
        "be told from yours: remove them yourself if they are its): checkpoint-2, checkpoint-4, checkpoint-6, "
        "runs/Nov01_10-10-10_host")
    assert (older / "checkpoint-6" / "trainer_state.json").is_file() and not (older / "metrics.json").exists()
    for name in ("metrics.json", "ssogen_train_config.json"):
        (resumed / name).unlink()
    output = TrainOutput(resumed)
    verdict = output.verdict(fingerprint, overwrite=False)
    assert (verdict.action, verdict.checkpoint) == ("resume", resumed / "checkpoint-6")
    with output.claim():
        assert output.start(fingerprint, verdict) is None
    from ssogen.written import recorded

    assert recorded(resumed / ".ssogen") == {"checkpoint-2", "checkpoint-4", "checkpoint-6"}


def test_tensorboard_s_folder_is_recorded_before_it_is_made(tmp_path: Path) -> None:
    """transformers names TensorBoard's folder (runs/<time>_<host>) at train begin; ssogen sets that name on the
    callback first and records it, so that --overwrite removes it and not the runs of other tools beside it."""
    from transformers.integrations import TensorBoardCallback

    from ssogen.train.integrations import tensorboard_folder

    # tensorboard is not installed here, and the callback's __init__ imports its SummaryWriter: what ssogen reads
    # and sets is `logging_dir`, None until train begin.
    callback = TensorBoardCallback.__new__(TensorBoardCallback)
    callback.logging_dir = None
    out = tmp_path / "out"
    output = TrainOutput(out)
    folder = tensorboard_folder([object(), callback], out)
    assert folder is not None and callback.logging_dir == str(folder) and folder.parent == out / "runs"
    with output.claim():
        output.start({"fingerprint": "f", "config": {}}, output.verdict({"fingerprint": "f", "config": {}},
                                                                        overwrite=False))
        output.record_folder(folder)
    folder.mkdir(parents=True)
    (out / "runs" / "other-tool").mkdir()
    assert output.remove_run_outputs() == f"kept in {out} (ssogen train did not record making them): runs/other-tool"
    assert not folder.exists() and (out / "runs" / "other-tool").is_dir()


def test_a_generate_killed_among_its_data_files_is_not_trained_on(tmp_path: Path) -> None:
    """generate writes triplets, dpo, sso, reward, then its manifest. A first run killed in between left sso (so
    train took a dataset that had not finished) or only triplets (train said "no `sso` config; is this a
    `ssogen generate` output folder?")."""
    from ssogen.dataset.folder import OutputFolder
    from ssogen.errors import UserError
    from ssogen.testing.folders import make_record, write_dataset
    from ssogen.train.inputs import sso_files

    out = write_dataset(tmp_path / "data", [make_record(i) for i in range(3)])
    with OutputFolder(out).claim("ssogen generate"):
        pass  # generate's marker
    assert sso_files(out)  # finished: trained on
    OutputFolder(out).manifest.unlink()  # killed before its manifest
    unfinished = "the `ssogen generate` run in this folder has not finished"
    with pytest.raises(UserError, match=unfinished):
        sso_files(out)
    shutil.rmtree(out / "data" / "sso")  # killed after triplets, before sso
    with pytest.raises(UserError, match=unfinished):
        sso_files(out)


def test_a_run_that_an_earlier_ssogen_started_with_spaced_lora_names_resumes(tiny_model: Path, tmp_path: Path) -> None:
    """An earlier ssogen fingerprinted --lora-target-modules as typed (`q_proj, v_proj`). Since the names are written
    one way (`q_proj,v_proj`), the same command refused that run as "another configuration (changed:
    lora_target_modules)"; other names still are another configuration."""
    import hashlib

    from ssogen.errors import UserError
    from ssogen.train.config import TrainConfig
    from ssogen.train.inputs import check_training_inputs, run_fingerprint
    from ssogen.train.output import OutputVerdict

    data = write_synthetic_sso(tmp_path / "data", count=4, seed=0)
    config = TrainConfig(data=data, model=str(tiny_model), out=tmp_path / "run", lora=True,
                         lora_target_modules="q_proj, v_proj")
    stored = {**run_fingerprint(config)["config"], "lora_target_modules": "q_proj, v_proj"}  # as typed, as then
    output = TrainOutput(config.out)
    with output.claim():
        output.start({"fingerprint": hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest(),
                      "config": stored}, OutputVerdict("start"))
    (output.work_dir / "written.json").unlink()  # it recorded no folders either
    (output.root / "checkpoint-2").mkdir()  # work saved: the configuration must be the same to resume
    _, verdict = check_training_inputs(config)
    assert verdict.action == "resume"
    with pytest.raises(UserError, match=r"another configuration \(changed: lora_target_modules\)"):
        check_training_inputs(config.model_copy(update={"lora_target_modules": "q_proj"}))


def test_a_start_in_a_folder_of_earlier_logs_keeps_them(tmp_path: Path) -> None:
    """A folder that holds only the logs of commands that stopped early is free for a run, and those logs say why
    they stopped: the run that starts there keeps them (it used to remove them)."""
    out = tmp_path / "run"
    earlier = out / "logs" / "train-20261101T101010Z.log"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("error: CUDA out of memory\n")
    output = TrainOutput(out)
    verdict = output.verdict({"fingerprint": "f", "config": {}}, overwrite=False)
    assert verdict.action == "start"
    with output.claim():
        output.start({"fingerprint": "f", "config": {}}, verdict)
    assert earlier.read_text() == "error: CUDA out of memory\n"
    # A marked folder's earlier run is still cleared when a run starts over it.
    (out / "metrics.json").write_text("{}")
    verdict = output.verdict({"fingerprint": "f", "config": {}}, overwrite=True)
    with output.claim():
        output.start({"fingerprint": "f", "config": {}}, verdict)
    assert not (out / "metrics.json").exists() and not earlier.exists()


def test_a_run_keeps_the_earlier_logs_in_the_folder_it_claims(uninterrupted: tuple[Path, Path], tiny_model: Path,
                                                              tmp_path: Path) -> None:
    """The run decides again under the lock what to do with --out, and there its own claim made the folder look
    like an earlier run's to clear: the logs of commands that stopped early went (and, in a multi-process run, the
    log the other ranks were writing)."""
    data, _ = uninterrupted
    out = tmp_path / "run"
    earlier = out / "logs" / "train-20261101T101010Z.log"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("error: CUDA out of memory\n")
    result = train(data, tiny_model, out, "--max-steps", "2", "--save-steps", "0")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert earlier.read_text() == "error: CUDA out of memory\n"
