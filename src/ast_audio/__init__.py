"""ast-audio: the Audio Spectrogram Transformer (Gong, Chung & Glass, 2021) as software.

Public API:
    AST, ASTConfig, FrontendConfig   the network and its frozen configs
    load_model, save_model, save_hf  every checkpoint format in, native and transformers formats out
    fbank, FeatureExtractor          Kaldi log-mel front end and the padded, normalised model input
    load_audio                       decode + downmix + resample any soundfile-readable file
    Tagger                           batched, sliding-window tagging of files or waveforms
"""

from .audio.fbank import fbank
from .audio.features import FeatureExtractor
from .audio.io import load_audio
from .config import ASTConfig, FrontendConfig
from .errors import AstAudioError, AudioInputError, CheckpointError, ConfigError
from .infer.tagger import Tagger
from .model import AST, grid_size
from .weights.checkpoint import load_model, save_hf, save_model

__version__ = "0.1.0"

__all__ = [
    "AST", "ASTConfig", "FrontendConfig", "FeatureExtractor", "Tagger", "fbank", "load_audio", "load_model",
    "save_model", "save_hf", "grid_size", "AstAudioError", "AudioInputError", "CheckpointError", "ConfigError",
    "__version__",
]
