"""The `ast-audio` command line: `main` (cli/main.py) and one module per command group."""

from .main import main

__all__ = ["main"]
