from .ast import AST
from .pos_embed import adapt_pos_embed, grid_size

__all__ = ["AST", "adapt_pos_embed", "grid_size"]
