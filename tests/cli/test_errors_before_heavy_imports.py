"""Errors in a second: every bad-option and bad-input case of the suite, run in a fresh interpreter, fails with
its one line and exit code before torch, transformers or vLLM has been imported.

Each case runs `ssogen ARGS` through the Typer app in a new `python -c` process that, after the exit, prints
which of the heavy modules are in sys.modules. The processes run side by side (one per core), each case is
then checked on its own."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pytest

from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.shards import ShardStore
from ssogen.generate.config import RunConfig
from ssogen.generate.plan import plan_run
from ssogen.testing.folders import make_record, write_dataset
from ssogen.testing.synthetic import write_synthetic_sso
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

# (case id, arguments with {w} = work folder and {model} = tiny model, exit code, text of the one error line)
GENERATE = [
    ("prompts-missing", "--prompts {w}/missing.jsonl", 2, "no such file"),
    ("prompts-empty", "--prompts {w}/empty.jsonl", 2, "empty file"),
    ("prompts-broken-json", "--prompts {w}/broken.jsonl", 2, "broken.jsonl:2: invalid JSON"),
    ("prompts-no-field", "--prompts {w}/nofield.jsonl", 2, "no row has a 'prompt' field"),
    ("prompts-blank", "--prompts {w}/blank.jsonl", 2, "all 1 prompts are blank"),
    ("prompts-hub-unreachable", "--prompts no-such-org/no-such-dataset", 2, "loading it as a hub dataset failed"),
    ("library", "--principles {w}/lib.yaml", 2, "--principles: invalid library: {w}/lib.yaml:1: description"),
    ("library-alias-bomb", "--principles {w}/bomb.yaml", 2, "YAML anchors and aliases are not allowed"),
    ("templates-missing", "--templates {w}/no-templates", 2, "error: --templates {w}/no-templates: no such folder"),
    ("templates-a-file", "--templates {w}/afile", 2, "error: --templates {w}/afile: is a file, not a folder"),
    # A name that is neither a file nor a bundled library: the flag, both readings, no "<file>" placeholder.
    ("principles-missing", "--principles nosuch", 2,
     "error: --principles nosuch: no such file, and not a bundled library (bundled: default, short)"),
    ("card-template-broken", "--templates {w}/bad-card", 2, "card.md.jinja:1: template syntax error"),
    ("selection", "--selection maybe", 2, "--selection: Input should be 'free' or 'guided'"),
    ("guided-without-vllm", "--selection guided --engine transformers", 2, "--selection guided needs vLLM"),
    ("temperature", "--temperature -1", 2, "--temperature: Input should be greater than or equal to 0"),
    ("seed", "--seed -1", 2, "--seed: Input should be greater than or equal to 0"),
    ("dp", "--dp 0", 2, "--dp: Input should be greater than or equal to 1"),
    ("features-per-query", "--features-per-query 9", 2, "only 7 features"),
    ("config-unknown-key", "--config {w}/unknown.yaml", 2, "unknown key(s): temprature (line 1; did you mean"),
    ("config-bad-value", "--config {w}/badvalue.yaml", 2, "badvalue.yaml:2: top-p: Input should be less than"),
    ("config-twice", "--config {w}/twice.yaml", 2, "'max-tokens' (line 1) and 'max_tokens' (line 2) both set"),
    ("config-missing", "--config {w}/nothing.yaml", 2, "nothing.yaml: no such file"),
    ("out-not-empty", "--out {w}/foreign", 2, "folder is not empty and holds no ssogen run"),
    ("out-other-configuration", "--out {w}/previous --temperature 0.9", 2,
     "holds a run with a different configuration (changed: temperature)"),
    ("out-is-a-file", "--out {w}/afile", 2, "exists and is not a folder"),
    ("out-under-a-file", "--out {w}/afile/sub", 2, "is a file, not a folder"),
    # The run's prompts file was edited in place (one query changed): its queries, not its path, are fingerprinted.
    ("prompts-edited-in-place", "--out {w}/from-file --prompts {w}/edited.jsonl --limit 2", 2,
     "(changed: prompts.queries_sha256); the queries of --prompts {w}/edited.jsonl are not those this run used; "
     "use --overwrite"),
    # Issue 10: overwrite never clears a folder ssogen did not write; broken state and hostile inputs are one line.
    ("out-overwrite-foreign", "--out {w}/foreign --overwrite", 2, "holds no ssogen run (no .ssogen/marker.json)"),
    ("out-fingerprint-truncated", "--out {w}/cut-fingerprint", 2, "fingerprint.json: unreadable (JSONDecodeError)"),
    ("prompts-latin1", "--prompts {w}/latin1.jsonl", 2, "latin1.jsonl:2: not UTF-8 text (byte 0xe9)"),
    ("prompts-binary", "--prompts {w}/binary.csv", 2, "binary.csv:1: not UTF-8 text (byte 0xff)"),
    ("seed-too-big", "--seed 4294967296", 2, "--seed: Input should be less than 4294967296"),
    ("temperature-inf", "--temperature inf", 2, "--temperature: Input should be a finite number"),
    ("templates-empty-system", "--templates {w}/empty-system", 2, "system.jinja: renders an empty S+"),
    ("templates-same-system", "--templates {w}/same-system", 2, "renders the same text for S+ and S-"),
    ("templates-latin1", "--templates {w}/latin1-templates", 2, "system.jinja: not UTF-8 text"),
    ("templates-broken-system", "--templates {w}/broken-system", 2, "system.jinja:1: template syntax error"),
    ("license", "--license MIT", 2, "--license: 'MIT' is not a Hub license id"),
    ("test-size", "--test-size 1", 2, "--test-size: Input should be less than 1"),
    # A training run's folder is not a dataset's: --overwrite would clear the model's card and state.
    ("out-a-training-run", "--out {w}/trained-before --overwrite", 2,
     "holds a training run of ssogen train, not a dataset folder of ssogen generate; --overwrite never"),
]
GENERATE_MODEL = [
    ("model-missing-folder", "generate --model {w}/nope --out {w}/o", 2, "no such folder"),
    ("model-no-config", "generate --model {w}/foreign --out {w}/o", 2, "not a model folder (no config.json)"),
    ("model-no-chat-template", "generate --model {w}/no-template --out {w}/o", 2, "no chat template"),
    ("model-required", "generate --out {w}/o", 2, "--model is required"),
    ("model-hub-id-offline", "generate --model gpt2 --out {w}/o", 1,
     "--model gpt2: no such local folder, and not a hub model in the local cache (HF_HUB_OFFLINE is set)"),
    # A mistyped folder name without ./ reads as a bare hub id: the line names both readings.
    ("model-mistyped-folder", "generate --model nosuch-model --out {w}/o", 1,
     "--model nosuch-model: no such local folder, and not a hub model in the local cache"),
    ("train-required", "train --model {model}", 2, "--data and --out are required"),
    ("model-no-tokenizer", "generate --model {w}/no-tokenizer --out {w}/o", 2, "no tokenizer files"),
    ("model-truncated-weights", "generate --model {w}/truncated --out {w}/o", 2,
     "model.safetensors is truncated or corrupt (500000 of"),
    # The same run's folder, the model's files changed under the same or another path: refused, naming the part.
    ("model-weights-changed", "generate --model {w}/changed-weights --out {w}/previous --limit 2", 2,
     "holds a run with a different configuration (changed: model.weights); the model's files are not those"),
    ("model-template-changed", "generate --model {w}/changed-template --out {w}/previous --limit 2", 2,
     "(changed: model.chat_template)"),
    # One writer per folder: the test process holds these folders' locks.
    ("generate-out-locked", "generate --model {model} --out {w}/locked --limit 2", 1,
     f"--out {{w}}/locked: in use by process {os.getpid()} (ssogen generate"),
    ("train-out-locked", "train --data {w}/sso --model {model} --out {w}/train-locked", 1,
     f"--out {{w}}/train-locked: in use by process {os.getpid()} (ssogen train"),
    ("score-locked", "score {w}/dataset-locked --model {model}", 1, f"in use by process {os.getpid()}"),
    ("stats-locked", "stats {w}/dataset-locked", 1, f"in use by process {os.getpid()}"),
    ("judge-locked", "judge {w}/dataset-locked --judge-model {model}", 1, f"in use by process {os.getpid()}"),
]
TRAIN = [
    ("data-missing", "--data {w}/nothing", 2, "no such data folder"),
    ("data-without-sso", "--data {w}/foreign", 2, "no `sso` config"),
    ("data-missing-columns", "--data {w}/sso-columns", 2, "missing column(s) system_good"),
    ("data-no-rows", "--data {w}/sso-empty", 2, "no rows"),
    ("model-missing", "--data {w}/sso --model {w}/nope", 2, "no such folder"),
    ("no-g-with-v2", "--objective v2 --no-g", 2, "--no-g cannot be used with --objective v2"),
    ("prompt-length", "--max-prompt-length 300 --max-length 200", 2, "--max-prompt-length"),
    ("beta", "--beta -1", 2, "--beta: Input should be greater than 0"),
    ("objective", "--objective v3", 2, "--objective: Input should be 'v1' or 'v2' (got 'v3')"),  # help: [v1|v2]
    ("lora-r-without-lora", "--lora-r 4", 2, "--lora-r needs --lora"),
    ("config-unknown-key", "--config {w}/train-unknown.yaml", 2, "unknown key(s): lamda (line 1; did you mean"),
    ("out-is-data", "--out {w}/sso", 2, "--out must differ from --data"),
    ("out-is-a-file", "--out {w}/afile", 2, "exists and is not a folder"),
    ("out-under-a-file", "--out {w}/afile/sub", 2, "is a file, not a folder"),
    ("out-a-model-folder", "--out {w}/no-template", 2, "not empty and holds no ssogen training run"),
    ("out-a-model-folder-overwrite", "--out {w}/no-template --overwrite", 2, "holds no ssogen training run"),
    # generate's folder is not a training run's: --overwrite removed its shards, logs and card.
    ("out-a-dataset-folder", "--out {w}/generated", 2, "holds a dataset folder of ssogen generate, not a training"),
    ("out-a-dataset-folder-overwrite", "--out {w}/generated --overwrite", 2, "holds a dataset folder of ssogen"),
    ("out-another-run", "--out {w}/trained-before --beta 0.2", 2,
     "holds a training run of another configuration (changed: beta)"),
    ("model-truncated-weights", "--model {w}/truncated", 2, "model.safetensors is truncated or corrupt"),
    ("model-weights-changed", "--out {w}/trained-before --model {w}/changed-weights", 2,
     "holds a training run of another configuration (changed: model.weights); the model's files are not those"),
    ("out-fingerprint-truncated", "--out {w}/train-cut-fingerprint", 2,
     "fingerprint.json: unreadable (JSONDecodeError)"),
    ("model-no-tokenizer", "--model {w}/no-tokenizer", 2, "no tokenizer files"),
    ("resume-cut-checkpoint", "--resume-from-checkpoint {w}/cut-checkpoint", 2,
     "incomplete checkpoint (trainer_state.json is cut off)"),
    ("report-to-unknown", "--report-to bogus", 2, "--report-to bogus: unknown logger (known: none, all,"),
    ("report-to-not-installed", "--report-to clearml", 1, "--report-to clearml: the clearml package is not"),
    ("report-to-wandb-not-installed", "--report-to wandb", 1,
     "--report-to wandb: the wandb package is not installed (pip install wandb), or drop it from --report-to"),
    ("config-report-to-not-installed", "--config {w}/train-report.yaml", 1, "--report-to clearml: the clearml"),
    ("config-same-setting-twice", "--config {w}/train-lr-twice.yaml", 2,
     "'lr' (line 1) and 'learning_rate' (line 2) both set --lr; keep one"),
    ("config-refused-training-argument", "--config {w}/train-refused.yaml", 2,
     "remove_unused_columns (line 1) cannot be set: ssogen's collator needs every column"),
    ("config-unknown-training-argument", "--config {w}/train-typo.yaml", 2,
     "unknown key(s): gradient_acumulation_steps (line 1; did you mean gradient_accumulation_steps?)"),
]
DATASET = [
    ("score-not-a-folder", "score {w}/foreign --model {model}", 2, "not an ssogen output folder"),
    ("score-engine", "score {w}/dataset --model {model} --engine onnx", 2, "--engine: Input should be 'vllm'"),
    ("score-filter", "score {w}/dataset --model {model} --filter bogus", 2, "--filter: Input should be 'none'"),
    ("score-model", "score {w}/dataset --model {w}/nope", 2, "--model"),
    ("score-model-required", "score {w}/dataset", 2, "--model is required"),
    ("score-dp", "score {w}/dataset --model {model} --dp 0", 2, "--dp: Input should be greater than or equal to 1"),
    ("score-margin", "score {w}/dataset --model {model} --ordering-margin -1", 2, "--ordering-margin"),
    ("stats-not-a-folder", "stats {w}/foreign", 2, "not an ssogen output folder"),
    ("stats-corrupt-parquet", "stats {w}/corrupt", 2, "corrupt parquet file"),
    ("stats-license", "stats {w}/dataset --license Apache-2.0", 2, "--license: 'Apache-2.0' is not a Hub license"),
    ("judge-sample", "judge {w}/dataset --judge-model {model} --sample 0", 2,
     "--sample: Input should be greater than or equal to 1"),
    ("judge-config", "judge {w}/dataset --judge-model {model} --config bogus", 2,
     "--config: Input should be 'dpo' or 'reward'"),
    ("judge-unfinished", "judge {w}/unfinished --judge-model {model}", 2, "the generate run is not finished"),
    ("judge-templates-missing", "judge {w}/dataset --judge-model {model} --templates {w}/no-templates", 2,
     "error: --templates {w}/no-templates: no such folder"),
    ("judge-template-broken", "judge {w}/dataset --judge-model {model} --templates {w}/bad-judge", 2,
     "judge.jinja:1: template syntax error"),
    # Every command taking a dataset folder checks it in OutputFolder.require: a file is not "no such folder".
    ("stats-a-file", "stats {w}/afile", 2, "error: {w}/afile: is a file, not a folder"),
    ("score-a-file", "score {w}/afile --model {model}", 2, "error: {w}/afile: is a file, not a folder"),
    ("judge-a-file", "judge {w}/afile --judge-model {model}", 2, "error: {w}/afile: is a file, not a folder"),
    ("push-a-file", "push-to-hub {w}/afile --repo-id org/name --dry-run", 2, "error: {w}/afile: is a file, not a"),
    ("iterate-filter", "iterate --model {model} --out {w}/loop --filter bogus", 2,
     "--filter: Input should be 'none' or 'likelihood'"),
    ("iterate-v2-no-w", "iterate --model {model} --out {w}/loop --recipe v2 --no-w", 2,
     "--no-w cannot be used with --recipe v2"),
    ("push-bad-repo-id", "push-to-hub {w}/dataset --repo-id no-slash --token hf_x", 2, "is not a valid repo id"),
    ("push-unfinished", "push-to-hub {w}/unfinished --repo-id org/name --dry-run", 2, "not complete"),
    ("push-no-folder", "push-to-hub {w}/nothing --repo-id org/name --dry-run", 2, "no such folder"),
    ("principles-validate", "principles validate {w}/bomb.yaml", 2, "bomb.yaml:1: <yaml>: YAML anchors"),
    ("principles-list-missing", "principles list nosuch", 2,
     "error: nosuch: no such file, and not a bundled library (bundled: default, short)"),
    ("principles-show-typo", "principles show default acuracy", 2,
     "error: default: no feature named 'acuracy' (did you mean Accuracy? has: Safety,"),
    ("tiny-model-size", "make-tiny-model {w}/t --size huge", 2, "--size: unknown size 'huge'"),
    ("tiny-model-a-file", "make-tiny-model {w}/afile", 2, "make-tiny-model {w}/afile: exists and is not a folder"),
    ("tiny-model-a-model-folder", "make-tiny-model {w}/foreign", 2,
     "folder is not empty and holds no model make-tiny-model wrote (no ssogen_tiny_model.json)"),
]
CASES = (
    [(f"generate-{name}", "generate --model {model} --out {w}/out " + args, code, text)
     for name, args, code, text in GENERATE]
    + GENERATE_MODEL
    + [(f"train-{name}", "train --data {w}/sso --model {model} --out {w}/trained " + args, code, text)
       for name, args, code, text in TRAIN]
    + DATASET
)


@pytest.fixture(scope="module")
def work(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every bad input of the cases, side by side."""
    w = tmp_path_factory.mktemp("bad-inputs")
    (w / "empty.jsonl").write_text("")
    (w / "broken.jsonl").write_text('{"prompt": "ok"}\n{broken\n')
    (w / "nofield.jsonl").write_text('{"text": "x"}\n')
    (w / "blank.jsonl").write_text('{"prompt": " "}\n')
    (w / "lib.yaml").write_text("name: x\nversion: 1\n")
    (w / "bomb.yaml").write_text(BOMB)
    (w / "unknown.yaml").write_text("temprature: 0.5\n")
    (w / "badvalue.yaml").write_text("seed: 1\ntop-p: 2\n")
    (w / "twice.yaml").write_text("max-tokens: 5\nmax_tokens: 6\n")
    (w / "train-unknown.yaml").write_text("lamda: 0.2\n")
    (w / "train-report.yaml").write_text("report_to: [clearml]\n")
    (w / "train-lr-twice.yaml").write_text("lr: 1.0e-6\nlearning_rate: 2.0e-6\n")
    (w / "train-refused.yaml").write_text("remove_unused_columns: true\n")
    (w / "train-typo.yaml").write_text("gradient_acumulation_steps: 2\n")
    (w / "afile").write_text("not a folder")
    (w / "bad-card").mkdir()
    (w / "bad-card" / "card.md.jinja").write_text("{% if %}\n")
    (w / "bad-judge").mkdir()
    (w / "bad-judge" / "judge.jinja").write_text("Which is better? {{ response_a }\n")
    (w / "foreign").mkdir()
    (w / "foreign" / "notes.txt").write_text("a user's file")
    no_template = w / "no-template"
    shutil.copytree(tiny_model, no_template)
    (no_template / "chat_template.jinja").unlink()
    tokenizer_config = json.loads((no_template / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    # A folder holding the (started) run of another configuration.
    previous = plan_run(RunConfig(model=str(tiny_model), out=str(w / "previous"), limit=2))
    ShardStore(w / "previous").prepare(previous.fingerprint(), overwrite=False)
    edited = w / "edited.jsonl"
    edited.write_text('{"prompt": "first"}\n{"prompt": "second"}\n')
    from_file = plan_run(RunConfig(model=str(tiny_model), out=str(w / "from-file"), prompts=str(edited), limit=2))
    ShardStore(w / "from-file").prepare(from_file.fingerprint(), overwrite=False)
    edited.write_text('{"prompt": "first"}\n{"prompt": "second, edited"}\n')
    write_synthetic_sso(w / "sso", count=4)
    OutputFolder(w / "sso-columns").write_config("sso", [{"id": "1", "prompt": "p"}],
                                                 pa.schema([("id", pa.string()), ("prompt", pa.string())]))
    OutputFolder(w / "sso-empty").write_config("sso", [])
    write_dataset(w / "dataset", [make_record(i) for i in range(3)])
    write_dataset(w / "unfinished", [make_record(i) for i in range(3)], status="in_progress")
    write_dataset(w / "corrupt", [make_record(0)])
    OutputFolder(w / "corrupt").config_file("triplets").write_bytes(b"not parquet")
    _issue_10_inputs(w, tiny_model)
    return w


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
    cut_train = TrainOutput(w / "train-cut-fingerprint")
    cut_train.work_dir.mkdir(parents=True)
    cut_train.marker.write_text("{}")
    (cut_train.root / "ssogen_train_config.json").write_text("{}")
    cut_train.fingerprint.write_text('{"fingerprint": "ab')
    (w / "cut-checkpoint").mkdir()
    (w / "cut-checkpoint" / "trainer_state.json").write_text('{"global_st')


def _snapshot(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def outcomes(work: Path, tiny_model: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """The result of every case, by case id; the key "" holds whether the work folder changed meanwhile."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    held = contextlib.ExitStack()  # the folders of the "locked" cases are held by this process meanwhile
    for claim in (OutputFolder(work / "locked").claim("ssogen generate"), TrainOutput(work / "train-locked").claim(),
                  OutputFolder(work / "dataset-locked").claim("ssogen score")):
        held.enter_context(claim)
    before = _snapshot(work)

    def run(args: str) -> subprocess.CompletedProcess[str]:
        argv = args.format(w=work, model=tiny_model).split()
        return subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env,
                              timeout=300, check=False)

    with held, ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = dict(zip([c[0] for c in CASES], pool.map(run, [c[1] for c in CASES]), strict=True))
        changed = sorted(set(before) ^ set(_snapshot(work)))
    results[""] = subprocess.CompletedProcess([], 0, stdout="\n".join(map(str, changed)))
    results["w"] = subprocess.CompletedProcess([], 0, stdout=str(work))
    return results


@pytest.mark.parametrize(("case", "code", "text"), [(c[0], *c[2:]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_before_any_heavy_import(outcomes: dict[str, subprocess.CompletedProcess[str]],
                                                 case: str, code: int, text: str) -> None:
    result = outcomes[case]
    assert result.stdout.strip().splitlines()[-2:] == ["HEAVY:", f"EXIT:{code}"], \
        (result.stdout[-2000:], result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    text = text.format(w=outcomes["w"].stdout)
    assert len(errors) == 1 and text in errors[0], result.stderr
    # `principles validate` prints FILE:LINE: field: message lines; every other command one `error:` line.
    assert errors[0].startswith("error: ") or case.startswith("principles"), errors[0]


def test_no_case_wrote_or_removed_anything(outcomes: dict[str, subprocess.CompletedProcess[str]]) -> None:
    assert outcomes[""].stdout == ""
