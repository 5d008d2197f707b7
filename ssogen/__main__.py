from ssogen.cli import app  # not ssogen.cli.main: a Ctrl-C while it loads is one line, not a traceback

app(prog_name="ssogen")
