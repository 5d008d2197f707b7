"""The bad-input cases of tests/cli's test_*_errors_before_heavy_imports.py files, run side by side, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.bad_inputs import Outcomes, run_cases, write_bad_inputs


@pytest.fixture(scope="package")
def bad_input_outcomes(request: pytest.FixtureRequest, tiny_model: Path,
                       tmp_path_factory: pytest.TempPathFactory) -> Outcomes:
    """The outcome of every collected case (a test parametrized with `case` and `args` that uses this fixture):
    all in one pool, so that the cases of every file share the cores, and only those selected run."""
    cases = {item.callspec.params["case"]: item.callspec.params["args"] for item in request.session.items
             if "bad_input_outcomes" in getattr(item, "fixturenames", ())
             and "args" in getattr(getattr(item, "callspec", None), "params", {})}
    return run_cases(cases, write_bad_inputs(tmp_path_factory.mktemp("bad-inputs"), tiny_model), tiny_model)
