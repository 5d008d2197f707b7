"""transformers' TrainingArguments as `ssogen train --config` sees them, without importing transformers (which
would import torch before the options are checked).

Every TrainingArguments field may be written in the config file under its own name. Those that are ssogen
options under another name are aliases (`learning_rate: 1e-6` sets --lr); the few that ssogen must set itself
are refused with the reason; all others are handed to TrainingArguments unchanged (`train_args` in the saved
settings). The field names are read from the installed transformers' source, so they are always that version's."""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

# TrainingArguments name -> the ssogen option that is the same setting.
ALIASES = {
    "output_dir": "out",
    "learning_rate": "lr",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "num_train_epochs": "epochs",
    "lr_scheduler_type": "scheduler",
}
# TrainingArguments names ssogen sets itself, and why.
REFUSED = {
    "remove_unused_columns": "ssogen's collator needs every column of its batches (it is always false)",
    "hub_token": "a token in a config file would be saved beside the model; set HF_TOKEN instead",
}


@functools.cache
def training_argument_names() -> frozenset[str]:
    """The fields of the installed transformers.TrainingArguments (empty when transformers is not installed)."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        return frozenset()
    source = Path(spec.origin).parent / "training_args.py"
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return _imported_names()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "TrainingArguments":
            return frozenset(item.target.id for item in node.body
                             if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name))
    return _imported_names()


def _imported_names() -> frozenset[str]:
    """The slow way, for a transformers whose source is laid out otherwise: import it."""
    import dataclasses

    from transformers import TrainingArguments

    return frozenset(f.name for f in dataclasses.fields(TrainingArguments))
