# Not from ssogen.cli.main: through the package, a Ctrl-C while the commands load is one line, not a traceback.
from ssogen.cli import run_command_line

run_command_line()
