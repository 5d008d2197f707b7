"""`ssogen train` under `ssogen iterate --num-processes N` checks that it runs in N processes (WORLD_SIZE)."""

from __future__ import annotations

import pytest

from ssogen.errors import NUM_PROCESSES_ENV, UserError
from ssogen.train.inputs import check_process_count


def test_the_process_count_iterate_asked_for_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NUM_PROCESSES_ENV, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "3")
    check_process_count()  # no expectation (a train run by hand): no check
    monkeypatch.setenv(NUM_PROCESSES_ENV, "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_process_count()  # as asked
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(UserError) as raised:  # no launcher's WORLD_SIZE: one process
        check_process_count()
    assert str(raised.value) == (
        "--num-processes 2: accelerate started 1 process (it starts one unless its config or the machine's GPUs "
        "make it multi-GPU): give --accelerate-config with distributed_type MULTI_GPU, or leave --num-processes out")
    assert raised.value.exit_code == 2
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(UserError, match=r"^--num-processes 2: accelerate started 4 processes \("):
        check_process_count()
