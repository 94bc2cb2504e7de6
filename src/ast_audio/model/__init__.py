"""The network: `AST` (ast.py), position-embedding resizing, inference precisions and the score rule."""

from .ast import AST
from .pos_embed import adapt_pos_embed

__all__ = ["AST", "adapt_pos_embed"]
