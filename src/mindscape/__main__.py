from mindscape.cli import app

app(prog_name="mindscape")
