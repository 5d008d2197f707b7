"""The `ssogen` command line. The root app lives in `ssogen.cli.main`: it imports the command modules, which import
only the leaves `ssogen.cli.common` and `ssogen.cli.options`.

`ssogen.cli:app` (the console-script entry point, and what tests import) is resolved on first access, so that
importing any `ssogen.cli.<module>` (which runs this file first) never imports the root and its commands back."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from ssogen.cli.main import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
