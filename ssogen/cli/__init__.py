"""The `ssogen` command line. The root app lives in `ssogen.cli.main`: it imports the command modules, which import
only the leaves `ssogen.cli.common` and `ssogen.cli.options`.

`ssogen.cli:run_command_line` (the console-script entry point: the process) and `ssogen.cli:app` (the command
group, what tests and other in-process callers use) are resolved on first access, so that
importing any `ssogen.cli.<module>` (which runs this file first) never imports the root and its commands back."""

from __future__ import annotations

import os
import sys
from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "run_command_line"):
        try:
            from ssogen.cli.process import loading
        except KeyboardInterrupt:  # Ctrl-C before any handler is set
            sys.stderr.write("error: interrupted while ssogen started; nothing was done\n")
            sys.stderr.flush()
            # Not SystemExit: a KeyboardInterrupt that left an `exec` of a string (a dataclass or namedtuple being
            # made) makes Python end the process by SIGINT at exit whatever the exit status. Nothing was done yet.
            os._exit(130)
        with loading():  # Ctrl-C while the commands load (a second or two): one line, exit 130
            from ssogen.cli import main
        return getattr(main, name)  # `main` is the module here; the entry point is named otherwise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
