"""`ast-audio` sub-commands: placeholder until implemented (see ast_audio.commands)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Add this module's sub-parsers to `commands`."""
