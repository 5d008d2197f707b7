from ssogen.cli.main import app

app(prog_name="ssogen")
