from ssogen.cli import app

app(prog_name="ssogen")
