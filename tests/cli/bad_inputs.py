"""The machinery of the errors-before-heavy-imports tests (test_*_errors_before_heavy_imports.py): the folder of
bad inputs, the probe process that runs one case, and the check of its outcome. The cases themselves are in the
test files, by command; tests/cli/conftest.py runs every collected case side by side, once.

Each case runs `ssogen ARGS` through the Typer app in a new `python -c` process that, after the exit, prints
which of the heavy modules are in sys.modules. The processes run side by side (one per core), each case is
then checked on its own."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.shards import ShardStore
from ssogen.generate.config import RunConfig
from ssogen.generate.plan import RunPlan, plan_run
from ssogen.testing.folders import make_record, write_dataset
from ssogen.testing.synthetic import write_synthetic_sso
from ssogen.testing.tiny_model import copy_without_chat_template
from ssogen.train.config import TrainConfig
from ssogen.train.inputs import run_fingerprint
from ssogen.train.output import TrainOutput

HEAVY = ("torch", "transformers", "vllm")
# The --report-to cases need these loggers absent whatever this environment holds: None in sys.modules makes
# both `import` and importlib.util.find_spec (what ssogen checks) see no such package.
HIDDEN_PACKAGES = ("wandb", "clearml")
PROBE = f"""
import sys
sys.modules.update(dict.fromkeys({HIDDEN_PACKAGES!r}))
from ssogen.cli import app
try:
    app(args=sys.argv[1:], prog_name="ssogen")
    code = 0
except SystemExit as exc:
    code = exc.code
print("HEAVY:" + ",".join(m for m in {HEAVY!r} if m in sys.modules))
print("EXIT:" + str(code))
"""
BOMB = "a: &a [x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 8)}]\n" for i in range(8))


def write_bad_inputs(w: Path, tiny_model: Path) -> Path:
    """Every bad input of the cases, side by side in the folder `w`."""
    (w / "empty.jsonl").write_text("")
    (w / "broken.jsonl").write_text('{"prompt": "ok"}\n{broken\n')
    (w / "nofield.jsonl").write_text('{"text": "x"}\n')
    (w / "blank.jsonl").write_text('{"prompt": " "}\n')
    (w / "lib.yaml").write_text("name: x\nversion: 1\n")
    (w / "bomb.yaml").write_text(BOMB)
    (w / "unknown.yaml").write_text("temprature: 0.5\n")
    (w / "badvalue.yaml").write_text("seed: 1\ntop-p: 2\n")
    (w / "twice.yaml").write_text("max-tokens: 5\nmax_tokens: 6\n")
    (w / "nomodel.yaml").write_text(f"seed: 1\nmodel: {w}/nope\n")
    (w / "train-unknown.yaml").write_text("lamda: 0.2\n")
    (w / "train-report.yaml").write_text("report_to: [clearml]\n")
    (w / "train-lr-twice.yaml").write_text("lr: 1.0e-6\nlearning_rate: 2.0e-6\n")
    (w / "train-refused.yaml").write_text("remove_unused_columns: true\n")
    (w / "train-typo.yaml").write_text("gradient_acumulation_steps: 2\n")
    (w / "train-deepspeed.yaml").write_text("lr: 1.0e-6\ndeepspeed: zero3.json\n")
    (w / "afile").write_text("not a folder")
    (w / "bad-card").mkdir()
    (w / "bad-card" / "card.md.jinja").write_text("{% if %}\n")
    (w / "bad-judge").mkdir()
    (w / "bad-judge" / "judge.jinja").write_text("Which is better? {{ response_a }\n")
    (w / "foreign").mkdir()
    (w / "foreign" / "notes.txt").write_text("a user's file")
    copy_without_chat_template(tiny_model, w / "no-template")
    # A folder holding the started run of another configuration, with one row's selection saved (a run that saved
    # nothing takes any configuration).
    _start_run(plan_run(RunConfig(model=str(tiny_model), out=str(w / "previous"), limit=2)))
    edited = w / "edited.jsonl"
    edited.write_text('{"prompt": "first"}\n{"prompt": "second"}\n')
    _start_run(plan_run(RunConfig(model=str(tiny_model), out=str(w / "from-file"), prompts=str(edited), limit=2)))
    edited.write_text('{"prompt": "first"}\n{"prompt": "second, edited"}\n')
    write_synthetic_sso(w / "sso", count=4)
    OutputFolder(w / "sso-columns").write_config("sso", [{"id": "1", "prompt": "p"}],
                                                 pa.schema([("id", pa.string()), ("prompt", pa.string())]))
    OutputFolder(w / "sso-empty").write_config("sso", [])
    write_dataset(w / "all-dropped", [make_record(i, kept=False, drop_reason=reason) for i, reason in
                                      enumerate(["likelihood:ordering", "likelihood:contrast", "likelihood:ordering"])])
    write_dataset(w / "dataset", [make_record(i) for i in range(3)])
    write_dataset(w / "unfinished", [make_record(i) for i in range(3)], status="in_progress")
    # Folders another process is at work in (run_cases holds their locks): a first generate before its manifest,
    # and a finished run that score is rewriting. Not "run the same command again": that one is running.
    _start_run(plan_run(RunConfig(model=str(tiny_model), out=str(w / "generating"), limit=2)))
    write_dataset(w / "rescoring", [make_record(i) for i in range(3)], status="in_progress")
    write_dataset(w / "corrupt", [make_record(0)])
    OutputFolder(w / "corrupt").config_file("triplets").write_bytes(b"not parquet")
    _issue_10_inputs(w, tiny_model)
    return w


def _start_run(plan: RunPlan) -> None:
    """Prepare plan's --out as generate does and save one row's selection, the work a rerun must keep."""
    with OutputFolder(plan.config.out).claim("ssogen generate"):  # the marker, as generate leaves it
        store = ShardStore(plan.config.out)
        store.prepare(plan.fingerprint(), overwrite=False)
        store.append("selection", [{"id": plan.rows[0].id}])
        store.close()


def _model_copy(tiny_model: Path, target: Path) -> Path:
    shutil.copytree(tiny_model, target)
    return target


def _issue_10_inputs(w: Path, tiny_model: Path) -> None:
    """Hostile and broken inputs of issue 10: encodings, templates, model folders, cut files."""
    (w / "latin1.jsonl").write_bytes(b'{"prompt": "tea"}\n{"prompt": "caf\xe9"}\n')
    (w / "binary.csv").write_bytes(bytes(range(255, 0, -1)))
    for name, text in {"empty-system": "{# nothing #}", "same-system": "Answer helpfully.",
                       "broken-system": "Be {{ adjectives }"}.items():
        (w / name).mkdir()
        (w / name / "system.jinja").write_text(text)
    (w / "latin1-templates").mkdir()
    (w / "latin1-templates" / "system.jinja").write_bytes(b"Sei {{ adjectives }}, caf\xe9\n")
    (_model_copy(tiny_model, w / "no-tokenizer") / "tokenizer.json").unlink()
    # A config.json cut off, and one that is JSON but no object: json.loads' traceback, or AttributeError of .get.
    (_model_copy(tiny_model, w / "cut-config") / "config.json").write_text('{"model_type": \n')
    (_model_copy(tiny_model, w / "list-config") / "config.json").write_text("[1, 2]\n")
    truncated = _model_copy(tiny_model, w / "truncated") / "model.safetensors"
    os.truncate(truncated, 500_000)
    weights = _model_copy(tiny_model, w / "changed-weights") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start:] = bytes(255 - b for b in data[start:])  # other weights, same header and size
    weights.write_bytes(bytes(data))
    with (_model_copy(tiny_model, w / "changed-template") / "chat_template.jinja").open("a") as f:
        f.write(" ")
    cut = OutputFolder(w / "cut-fingerprint")
    cut.work_dir.mkdir(parents=True)
    cut.marker.write_text("{}")
    cut.fingerprint.write_text('{"fingerprint": "ab')
    (cut.work_dir / "rows-00000.jsonl").write_text('{"id": "r0"}\n')  # work to keep: the fingerprint is read
    locked = plan_run(RunConfig(model=str(tiny_model), out=str(w / "locked"), limit=2))
    with OutputFolder(w / "locked").claim("test"):
        ShardStore(w / "locked").prepare(locked.fingerprint(), overwrite=False)
    write_dataset(w / "dataset-locked", [make_record(i) for i in range(3)])
    generated = OutputFolder(write_dataset(w / "generated", [make_record(i) for i in range(3)]))
    with generated.claim("ssogen generate"):
        ShardStore(generated).prepare(locked.fingerprint(), overwrite=False)
    trained = TrainConfig(data=w / "sso", model=str(tiny_model), out=w / "trained-before")
    run = run_fingerprint(trained)
    output = TrainOutput(trained.out)
    with output.claim():
        output.start(run, output.verdict(run, overwrite=False))
    output.record_folder(output.root / "checkpoint-2")  # as the run does before it saves one
    (output.root / "checkpoint-2").mkdir()  # saved work: another configuration is refused (none: it may start)
    cut_train = TrainOutput(w / "train-cut-fingerprint")
    cut_train.work_dir.mkdir(parents=True)
    cut_train.marker.write_text("{}")
    (cut_train.root / "ssogen_train_config.json").write_text("{}")
    cut_train.fingerprint.write_text('{"fingerprint": "ab')
    (w / "cut-checkpoint").mkdir()
    (w / "cut-checkpoint" / "trainer_state.json").write_text('{"global_st')


def _snapshot(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*"))


@dataclass
class Outcomes:
    """What the cases did: each case's process by case id, and what changed in the work folder meanwhile."""

    work: Path
    results: dict[str, subprocess.CompletedProcess[str]]
    changed: list[str]  # (path, size) of what appeared, vanished or changed size while the cases ran


def run_cases(cases: dict[str, str], work: Path, tiny_model: Path) -> Outcomes:
    """Run every case (id -> arguments with {w} and {model}) in its own probe process, side by side."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    held = contextlib.ExitStack()  # the folders of the "locked" cases are held by this process meanwhile
    for claim in (OutputFolder(work / "locked").claim("ssogen generate"), TrainOutput(work / "train-locked").claim(),
                  OutputFolder(work / "dataset-locked").claim("ssogen score"),
                  OutputFolder(work / "generating").claim("ssogen generate"),
                  OutputFolder(work / "rescoring").claim("ssogen score")):
        held.enter_context(claim)
    before = _snapshot(work)

    def run(args: str) -> subprocess.CompletedProcess[str]:
        argv = args.format(w=work, model=tiny_model).split()
        return subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env,
                              timeout=300, check=False)

    with held, ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = dict(zip(cases, pool.map(run, cases.values()), strict=True))
        changed = sorted(set(before) ^ set(_snapshot(work)))
    return Outcomes(work, results, [str(entry) for entry in changed])


def check_case(outcomes: Outcomes, case: str, code: int, text: str) -> None:
    """The case exited with `code` before any heavy import, with one error line holding `text`."""
    result = outcomes.results[case]
    assert result.stdout.strip().splitlines()[-2:] == ["HEAVY:", f"EXIT:{code}"], \
        (result.stdout[-2000:], result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    text = text.format(w=outcomes.work)
    assert len(errors) == 1 and text in errors[0], result.stderr
    # `principles validate` prints FILE:LINE: field: message lines; every other command one `error:` line.
    assert errors[0].startswith("error: ") or case.startswith("principles"), errors[0]
