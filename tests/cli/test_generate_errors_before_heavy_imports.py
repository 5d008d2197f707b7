"""Errors in a second, generate: every bad option and bad input of `ssogen generate` (its flags, prompts,
library, templates, output folder and model), run in a fresh interpreter, fails with its one line and exit code
before torch, transformers or vLLM has been imported. The other commands' cases are in
test_train_and_dataset_errors_before_heavy_imports.py; the machinery is in bad_inputs.py."""

from __future__ import annotations

import os

import pytest

from tests.cli.bad_inputs import Outcomes, check_case

# (case id, arguments with {w} = work folder and {model} = tiny model, exit code, text of the one error line)
GENERATE = [
    ("prompts-missing", "--prompts {w}/missing.jsonl", 2, "no such file"),
    ("prompts-empty", "--prompts {w}/empty.jsonl", 2, "empty file"),
    ("prompts-broken-json", "--prompts {w}/broken.jsonl", 2, "broken.jsonl:2: invalid JSON"),
    ("prompts-no-field", "--prompts {w}/nofield.jsonl", 2, "no row has a 'prompt' field"),
    ("prompts-blank", "--prompts {w}/blank.jsonl", 2, "all 1 prompts are blank"),
    # --split was ignored for a file: every row was read
    ("prompts-file-with-split", "--prompts {w}/edited.jsonl --split test", 2,
     "--split test: {w}/edited.jsonl is a file, which has no splits"),
    # Without --prompts (the bundled demo queries) both were ignored.
    ("split-without-prompts", "--split validation", 2,
     "--split validation: applies to --prompts, which is not given"),
    ("prompt-field-without-prompts", "--prompt-field question", 2,
     "--prompt-field question: applies to --prompts, which is not given"),
    ("prompts-hub-unreachable", "--prompts no-such-org/no-such-dataset", 1, "loading it as a hub dataset failed"),
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
    ("dtype", "--dtype foo", 2, "--dtype: Input should be 'auto', 'bfloat16', 'float16', 'half', 'float32' or"),
    ("features-per-query", "--features-per-query 9", 2, "only 7 features"),
    ("config-unknown-key", "--config {w}/unknown.yaml", 2, "unknown key(s): temprature (line 1; did you mean"),
    ("config-bad-value", "--config {w}/badvalue.yaml", 2, "badvalue.yaml:2: top-p: Input should be less than"),
    ("config-twice", "--config {w}/twice.yaml", 2, "'max-tokens' (line 1) and 'max_tokens' (line 2) both set"),
    ("config-missing", "--config {w}/nothing.yaml", 2, "error: --config {w}/nothing.yaml: no such file"),
    ("out-not-empty", "--out {w}/foreign", 2, "folder is not empty and holds no ssogen run"),
    ("out-other-configuration", "--out {w}/previous --temperature 0.9", 2,
     "holds a run with a different configuration (changed: temperature)"),
    ("out-is-a-file", "--out {w}/afile", 2, "exists and is not a folder"),
    # The dry run refuses what the run would refuse (it printed the plan, and the run was then refused).
    ("dry-run-out-not-empty", "--out {w}/foreign --dry-run", 2, "folder is not empty and holds no ssogen run"),
    ("dry-run-out-other-configuration", "--out {w}/previous --temperature 0.9 --dry-run", 2,
     "holds a run with a different configuration (changed: temperature)"),
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
    # An empty value read as "." (the current folder) or as "not given" for --templates.
    ("prompts-empty-value", "--prompts=", 2, "--prompts: String should have at least 1 character (got '')"),
    ("templates-empty", "--templates=", 2, "--templates: String should have at least 1 character (got '')"),
    ("license", "--license MIT", 2, "--license: not a Hub license id (lower case, e.g. apache-2.0, cc-by-4.0, mit, "
     "other, unknown) (got 'MIT')"),
    ("test-size", "--test-size 1", 2, "--test-size: Input should be less than 1"),
    # A training run's folder is not a dataset's: --overwrite would clear the model's card and state.
    ("out-a-training-run", "--out {w}/trained-before --overwrite", 2,
     "holds a training run of ssogen train, not a dataset folder of ssogen generate; --overwrite never"),
]
GENERATE_MODEL = [
    ("model-missing-folder", "generate --model {w}/nope --out {w}/o", 2, "no such folder"),
    # Found after the settings were read: the flag is named, and the config line that set it.
    ("model-missing-in-config", "generate --config {w}/nomodel.yaml --out {w}/o", 2,
     "--model {w}/nope: no such folder (and not a hub id, which is NAME or ORG/NAME) (set in {w}/nomodel.yaml:2)"),
    ("model-no-config", "generate --model {w}/foreign --out {w}/o", 2, "not a model folder (no config.json)"),
    ("model-no-chat-template", "generate --model {w}/no-template --out {w}/o", 2, "no chat template"),
    ("model-required", "generate --out {w}/o", 2, "--model is required"),
    ("model-hub-id-offline", "generate --model gpt2 --out {w}/o", 1,
     "--model gpt2: no such local folder, and not a hub model in the local cache (HF_HUB_OFFLINE is set)"),
    # A mistyped folder name without ./ reads as a bare hub id: the line names both readings.
    ("model-mistyped-folder", "generate --model nosuch-model --out {w}/o", 1,
     "--model nosuch-model: no such local folder, and not a hub model in the local cache"),
    ("model-no-tokenizer", "generate --model {w}/no-tokenizer --out {w}/o", 2, "no tokenizer files"),
    # config.json that no loader reads: the dry run's placement gave json.loads' traceback, the run took --out first.
    ("model-config-cut", "generate --model {w}/cut-config --out {w}/o", 2,
     "error: --model {w}/cut-config: config.json:2: invalid JSON: Expecting value"),
    ("model-config-cut-dry-run", "generate --model {w}/cut-config --out {w}/o --limit 2 --dry-run", 2,
     "error: --model {w}/cut-config: config.json:2: invalid JSON: Expecting value"),
    ("model-config-not-an-object-dry-run", "generate --model {w}/list-config --out {w}/o --limit 2 --dry-run", 2,
     "error: --model {w}/list-config: config.json: not a JSON object (it holds an array)"),
    ("model-truncated-weights", "generate --model {w}/truncated --out {w}/o", 2,
     "model.safetensors is truncated or corrupt (500000 of"),
    # The same run's folder, the model's files changed under the same or another path: refused, naming the part.
    ("model-weights-changed", "generate --model {w}/changed-weights --out {w}/previous --limit 2", 2,
     "holds a run with a different configuration (changed: model.weights); the model's files are not those"),
    ("model-template-changed", "generate --model {w}/changed-template --out {w}/previous --limit 2", 2,
     "(changed: model.chat_template)"),
    # One writer per folder: the test process holds this folder's lock.
    ("generate-out-locked", "generate --model {model} --out {w}/locked --limit 2", 1,
     f"--out {{w}}/locked: in use by process {os.getpid()} (ssogen generate"),
]
CASES = [(f"generate-{name}", "generate --model {model} --out {w}/out " + args, code, text)
         for name, args, code, text in GENERATE] + GENERATE_MODEL


@pytest.mark.parametrize(("case", "args", "code", "text"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_before_any_heavy_import(bad_input_outcomes: Outcomes, case: str, args: str, code: int,
                                                 text: str) -> None:
    check_case(bad_input_outcomes, case, code, text)


def test_no_case_wrote_or_removed_anything(bad_input_outcomes: Outcomes) -> None:
    """Every collected case, of this file and of the others (they run in one pool, on one work folder)."""
    assert bad_input_outcomes.changed == []
