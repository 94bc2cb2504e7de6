from .checkpoint import load_model, save_hf, save_model

__all__ = ["load_model", "save_hf", "save_model"]
