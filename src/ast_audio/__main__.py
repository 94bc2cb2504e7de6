"""`python -m ast_audio` runs the `ast-audio` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
