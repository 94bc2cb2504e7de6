"""ast-audio: the Audio Spectrogram Transformer (Gong, Chung & Glass, 2021) as software.

Public API:
    AST, ASTConfig, FrontendConfig   the network and its frozen configs
    load_model, save_model, save_hf  every checkpoint format in, native and transformers formats out
    fbank, FeatureExtractor          Kaldi log-mel front end and the padded, normalised model input
    load_audio                       decode + downmix + resample any soundfile-readable file
    Tagger                           batched, sliding-window tagging of files, or of waveforms (numpy arrays or
                                     tensors) with their sample_rate=
    grid_size                        the patch grid of an input size, kernel and stride

The names are imported on first use (PEP 562 `__getattr__`), so `import ast_audio` and the command line's --help do
not import torch. docs/architecture.md describes the package's layers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# Public name -> the module that defines it.
_HOMES = {
    "AST": "ast_audio.model.ast",
    "ASTConfig": "ast_audio.config",
    "FrontendConfig": "ast_audio.config",
    "grid_size": "ast_audio.config",
    "FeatureExtractor": "ast_audio.audio.features",
    "fbank": "ast_audio.audio.fbank",
    "load_audio": "ast_audio.audio.io",
    "Tagger": "ast_audio.infer.tagger",
    "load_model": "ast_audio.weights.checkpoint",
    "save_model": "ast_audio.weights.checkpoint",
    "save_hf": "ast_audio.weights.checkpoint",
    "AstAudioError": "ast_audio.errors",
    "AudioInputError": "ast_audio.errors",
    "CheckpointError": "ast_audio.errors",
    "ConfigError": "ast_audio.errors",
}

__all__ = [
    "AST", "ASTConfig", "FrontendConfig", "FeatureExtractor", "Tagger", "fbank", "load_audio", "load_model",
    "save_model", "save_hf", "grid_size", "AstAudioError", "AudioInputError", "CheckpointError", "ConfigError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is used, and keep the name here."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ast_audio' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time `__getattr__` imports these on first use
    from .audio.fbank import fbank
    from .audio.features import FeatureExtractor
    from .audio.io import load_audio
    from .config import ASTConfig, FrontendConfig, grid_size
    from .errors import AstAudioError, AudioInputError, CheckpointError, ConfigError
    from .infer.tagger import Tagger
    from .model.ast import AST
    from .weights.checkpoint import load_model, save_hf, save_model
