"""``python -m stockstore``: the ``stockstore`` command, where the console script is not on PATH."""

from .cli import main

main(prog_name="stockstore")
