"""ast-audio: the Audio Spectrogram Transformer as software."""

from .config import ASTConfig, FrontendConfig
from .errors import AstAudioError, AudioInputError, CheckpointError, ConfigError
from .model import AST, grid_size

__version__ = "0.1.0"

__all__ = [
    "AST", "ASTConfig", "FrontendConfig", "AstAudioError", "AudioInputError", "CheckpointError", "ConfigError",
    "grid_size", "__version__",
]
