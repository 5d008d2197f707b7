"""`python slow_main_rank.py train ...` runs `ssogen train` with its main process (rank 0) slowed by
SLOW_MAIN_RANK_SECONDS just before it first takes --out: every other rank reaches the folder first, as on a busy
shared file system (tests/train/test_train_ranks.py starts it under torchrun)."""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
import time
from collections.abc import Iterator
from typing import Any

from ssogen.train import output

_claim = output.TrainOutput.claim
_slowed: list[bool] = []


@contextlib.contextmanager
def _slow_claim(self: output.TrainOutput, **kwargs: Any) -> Iterator[Any]:
    if os.environ.get("RANK") == "0" and not _slowed:
        _slowed.append(True)
        time.sleep(float(os.environ.get("SLOW_MAIN_RANK_SECONDS", "8")))
    with _claim(self, **kwargs) as held:
        yield held


output.TrainOutput.claim = _slow_claim  # type: ignore[method-assign]
sys.argv[0] = "ssogen"
runpy.run_module("ssogen", run_name="__main__")
