"""The `ssogen` command line. The root app lives in `ssogen.cli.main` (it imports the command modules, which
import only `ssogen.cli.common` and `ssogen.cli.options`); `ssogen.cli:app` is the console-script entry point."""

from ssogen.cli.main import app

__all__ = ["app"]
