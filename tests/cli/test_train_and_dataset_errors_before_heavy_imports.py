"""Errors in a second, the other commands: every bad option and bad input of `ssogen train`, score, stats,
judge, push-to-hub, iterate, principles and make-tiny-model, run in a fresh interpreter, fails with its one line
and exit code before torch, transformers or vLLM has been imported. generate's cases are in
test_generate_errors_before_heavy_imports.py (with the check that no case wrote anything); the machinery is in
bad_inputs.py."""

from __future__ import annotations

import os

import pytest

from tests.cli.bad_inputs import Outcomes, check_case

# (case id, arguments with {w} = work folder and {model} = tiny model, exit code, text of the one error line)
TRAIN = [
    ("data-missing", "--data {w}/nothing", 2, "error: --data {w}/nothing: no such data folder"),
    ("data-without-sso", "--data {w}/foreign", 2, "error: --data {w}/foreign: no `sso` config"),
    ("data-generate-unfinished", "--data {w}/previous", 2, "previous: the `ssogen generate` run in this folder has "
     "not finished (its dataset is not complete); run the same generate command again"),
    # Stopped while generate or score rewrote the data files, which may then disagree.
    ("data-not-complete", "--data {w}/unfinished", 2, "manifest.json: the run in this folder is not complete "
     "(status 'in_progress'); run the same `ssogen generate` (or `ssogen score`) command again"),
    ("data-missing-columns", "--data {w}/sso-columns", 2, "missing column(s) system_good"),
    ("data-no-rows", "--data {w}/sso-empty", 2, "no rows"),
    # score's filter dropped every row (iterate's train step after it said only "no rows").
    ("data-all-dropped", "--data {w}/all-dropped", 2, "error: --data {w}/all-dropped: the `sso` config has no rows: "
     "its triplets were all dropped (likelihood:ordering 2, likelihood:contrast 1; `drop_reason` in the triplets "
     "config)"),
    ("model-missing", "--data {w}/sso --model {w}/nope", 2, "no such folder"),
    ("no-g-with-v2", "--objective v2 --no-g", 2, "--no-g cannot be used with --objective v2"),
    ("prompt-length", "--max-prompt-length 300 --max-length 200", 2, "--max-prompt-length"),
    ("beta", "--beta -1", 2, "--beta: Input should be greater than 0"),
    ("objective", "--objective v3", 2, "--objective: Input should be 'v1' or 'v2' (got 'v3')"),  # help: [v1|v2]
    ("lora-r-without-lora", "--lora-r 4", 2, "--lora-r needs --lora"),
    # peft compiled it after the model loaded: a re.error traceback.
    ("lora-bad-regex", "--lora --lora-target-modules ([", 2, "--lora-target-modules: not a valid regex (unterminated "
     "character set at position 1) (got '([')"),
    ("config-unknown-key", "--config {w}/train-unknown.yaml", 2, "unknown key(s): lamda (line 1; did you mean"),
    ("out-is-data", "--out {w}/sso", 2, "sso: inside --data {w}/sso; the model would be written into the dataset"),
    ("out-inside-data", "--out {w}/sso/model", 2, "model: inside --data {w}/sso; the model would be written"),
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
    # Found by transformers once --out was taken (its marker made a later generate there refused).
    ("model-config-cut", "--model {w}/cut-config", 2,
     "error: --model {w}/cut-config: config.json:2: invalid JSON: Expecting value"),
    ("model-config-not-an-object", "--model {w}/list-config", 2,
     "error: --model {w}/list-config: config.json: not a JSON object (it holds an array)"),
    # A dataset folder is no checkpoint cut off before transformers finished it.
    ("resume-not-a-checkpoint", "--resume-from-checkpoint {w}/sso", 2, "sso: not a checkpoint folder (a "
     "checkpoint-N folder of a training run"),
    # Checked before anything is written (it came after the settings table and the log).
    ("head-kernel-liger-not-installed", "--head-kernel liger", 1, "--head-kernel liger needs liger-kernel"),
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
    # transformers' traceback (PackageNotFoundError), after the output folder was taken.
    ("config-deepspeed-not-installed", "--config {w}/train-deepspeed.yaml", 1,
     "train-deepspeed.yaml:2: deepspeed: needs the deepspeed package, which is not installed (pip install"),
    ("config-unknown-training-argument", "--config {w}/train-typo.yaml", 2,
     "unknown key(s): gradient_acumulation_steps (line 1; did you mean gradient_accumulation_steps?)"),
]
DATASET = [
    ("train-required", "train --model {model}", 2, "--data and --out are required"),
    # One writer per folder: the test process holds these folders' locks.
    ("train-out-locked", "train --data {w}/sso --model {model} --out {w}/train-locked", 1,
     f"--out {{w}}/train-locked: in use by process {os.getpid()} (ssogen train"),
    ("score-locked", "score {w}/dataset-locked --model {model}", 1, f"in use by process {os.getpid()}"),
    ("stats-locked", "stats {w}/dataset-locked", 1, f"error: {{w}}/dataset-locked: in use by process {os.getpid()}"),
    ("judge-locked", "judge {w}/dataset-locked --judge-model {model}", 1, f"in use by process {os.getpid()}"),
    # Unfinished because another process is writing it: not "run the same command again".
    ("stats-generating", "stats {w}/generating", 1,
     f"error: {{w}}/generating: in use by process {os.getpid()} (ssogen generate"),
    ("judge-generating", "judge {w}/generating --judge-model {model}", 1,
     f"error: {{w}}/generating: in use by process {os.getpid()} (ssogen generate"),
    ("train-data-generating", "train --data {w}/generating --model {model} --out {w}/from-generating", 1,
     f"error: {{w}}/generating: in use by process {os.getpid()} (ssogen generate"),
    ("score-rescoring", "score {w}/rescoring --model {model}", 1,
     f"error: {{w}}/rescoring: in use by process {os.getpid()} (ssogen score"),
    ("push-rescoring", "push-to-hub {w}/rescoring --repo-id org/name --dry-run", 1,
     f"error: {{w}}/rescoring: in use by process {os.getpid()} (ssogen score"),
    ("train-data-rescoring", "train --data {w}/rescoring --model {model} --out {w}/from-rescoring", 1,
     f"error: {{w}}/rescoring: in use by process {os.getpid()} (ssogen score"),
    ("score-not-a-folder", "score {w}/foreign --model {model}", 2, "not an ssogen output folder"),
    # A generate stopped before its first data files, and a training run: what the folder is, not "not ssogen's".
    ("score-generate-unfinished", "score {w}/previous --model {model}", 2, "previous: the `ssogen generate` run in "
     "this folder has not finished (its dataset is not complete); run the same generate command again"),
    ("stats-generate-unfinished", "stats {w}/previous", 2, "previous: the `ssogen generate` run in this folder has "
     "not finished"),
    ("stats-a-training-run", "stats {w}/trained-before", 2, "trained-before: holds a training run of ssogen train, "
     "not a dataset folder of ssogen generate"),
    ("score-engine", "score {w}/dataset --model {model} --engine onnx", 2, "--engine: Input should be 'vllm'"),
    ("score-filter", "score {w}/dataset --model {model} --filter bogus", 2, "--filter: Input should be 'none'"),
    ("score-model", "score {w}/dataset --model {w}/nope", 2, "--model"),
    ("score-model-config-cut", "score {w}/dataset --model {w}/cut-config", 2,
     "error: --model {w}/cut-config: config.json:2: invalid JSON: Expecting value"),
    ("judge-model-config-not-an-object", "judge {w}/dataset --judge-model {w}/list-config", 2,
     "error: --judge-model {w}/list-config: config.json: not a JSON object (it holds an array)"),
    ("iterate-model-config-cut", "iterate --model {w}/cut-config --out {w}/loop", 2,
     "error: --model {w}/cut-config: config.json:2: invalid JSON: Expecting value"),
    ("score-stage-without-filter", "score {w}/dataset --model {model} --no-ordering --contrast-margin 0.1", 2,
     "error: --no-ordering, --contrast-margin only apply with --filter likelihood"),
    ("score-model-required", "score {w}/dataset", 2, "--model is required"),
    ("score-dp", "score {w}/dataset --model {model} --dp 0", 2, "--dp: Input should be greater than or equal to 1"),
    ("score-margin", "score {w}/dataset --model {model} --ordering-margin -1", 2, "--ordering-margin"),
    ("stats-not-a-folder", "stats {w}/foreign", 2, "not an ssogen output folder"),
    ("stats-corrupt-parquet", "stats {w}/corrupt", 2, "corrupt parquet file"),
    ("stats-license", "stats {w}/dataset --license Apache-2.0", 2, "--license: 'Apache-2.0' is not a Hub license"),
    ("judge-sample", "judge {w}/dataset --judge-model {model} --sample 0", 2,
     "--sample: Input should be greater than or equal to 1"),
    ("judge-config", "judge {w}/dataset --judge-model {model} --config bogus", 2,
     "--config: Input should be 'dpo', 'reward' or 'pairs'"),
    # On generate and train --config is a YAML file of options; on judge it chooses the pairs. The file is told so
    # before "--judge-model is required", which the file was meant to set.
    ("judge-config-a-yaml-file", "judge {w}/dataset --config {w}/judge.yaml", 2,
     "error: --config {w}/judge.yaml: judge's --config chooses the pairs to judge, dpo, reward or pairs, not a "
     "file of options (that is --config of generate and train); give judge's options as flags"),
    ("judge-unfinished", "judge {w}/unfinished --judge-model {model}", 2, "manifest.json: the run in this folder is "
     "not complete (status 'in_progress'); run the same `ssogen generate` (or `ssogen score`) command again"),
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
    # It failed in the first step, after --out was taken: the corrected command was then "other options".
    ("iterate-model-missing", "iterate --model {w}/nope --out {w}/loop", 2, "--model {w}/nope: no such folder"),
    # iterate takes four config files: each missing one is named by its flag.
    ("iterate-generate-config-missing", "iterate --model {model} --out {w}/loop --generate-config {w}/nope.yaml", 2,
     "--generate-config {w}/nope.yaml: no such file"),
    ("iterate-train-config-missing", "iterate --model {model} --out {w}/loop --train-config {w}/nope.yaml", 2,
     "--train-config {w}/nope.yaml: no such file"),
    ("iterate-accelerate-config-missing", "iterate --model {model} --out {w}/loop --accelerate-config "
     "{w}/nope.yaml", 2, "--accelerate-config {w}/nope.yaml: no such file"),
    ("iterate-dry-run-foreign-out", "iterate --model {model} --out {w}/foreign --dry-run", 2,
     "not empty and holds no ssogen iterate run"),
    ("iterate-model-missing-dry-run", "iterate --model {w}/nope --out {w}/loop --dry-run", 2,
     "--model {w}/nope: no such folder"),
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
CASES = [(f"train-{name}", "train --data {w}/sso --model {model} --out {w}/trained " + args, code, text)
         for name, args, code, text in TRAIN] + DATASET


@pytest.mark.parametrize(("case", "args", "code", "text"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_before_any_heavy_import(bad_input_outcomes: Outcomes, case: str, args: str, code: int,
                                                 text: str) -> None:
    check_case(bad_input_outcomes, case, code, text)
