"""The network: `AST` (ast.py), position-embedding resizing, inference precisions and the score rule.

The names below are imported on first use, so that `ast_audio.model.names` (precision names, no torch) can be
imported by the command line without importing the network."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ast import AST
    from .pos_embed import adapt_pos_embed

__all__ = ["AST", "adapt_pos_embed"]
_HOMES = {"AST": ".ast", "adapt_pos_embed": ".pos_embed"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
