from .fbank import fbank

__all__ = ["fbank"]
