"""The HEAR benchmark's module API (Turian et al., "HEAR: Holistic Evaluation of Audio Representations", 2022).

    import ast_audio.hear as module
    model = module.load_model("runs/mine/model")        # any checkpoint `load_model` reads; "" = the default hub model
    scene = module.get_scene_embeddings(audio, model)   # audio: (n_sounds, n_samples) float in [-1, 1] at 16 kHz
    emb, ts = module.get_timestamp_embeddings(audio, model)

What the specification asks, and how it is met:
- `load_model(model_file_path)` returns a torch module with `sample_rate`, `scene_embedding_size` and
  `timestamp_embedding_size` (ints). Extra keyword arguments (hear-eval-kit's `--model-options`) set the
  timestamp windows: `timestamp_hop_s` (default 0.05 s: the spec asks for at most 50 ms for event tasks; at least
  the front end's 10 ms frame shift, `min_timestamp_hop_s`: a finer hop only repeats near-identical windows, and
  1 us would cost 16,000 model inputs per second of audio),
  `timestamp_window_s` (default: the model's input length) and `layer` (a block, as `ast-audio embed --layer`).
- `get_timestamp_embeddings(audio, model)` -> (embeddings (n_sounds, n_timestamps, D), timestamps
  (n_sounds, n_timestamps) in milliseconds): one embedding per window, placed as `ast-audio embed` places them
  (the last window is aligned to the end of the audio), its timestamp the window centre.
- `get_scene_embeddings(audio, model)` -> (n_sounds, D): the clip embedding (mean of the embeddings of windows
  of the model's input length at half-window hops).
Inputs and outputs are torch tensors; outputs are float32 on the audio's device. Every sound of a batch has the same
length (the spec's contract), so every sound has the same timestamps. Audio is checked as every in-memory waveform
and every decoded file is (`ast_audio.audio.io.as_waveform`): float samples (int, bool and complex tensors are
refused, not scaled), finite, no peak above 2.0 (int-scaled audio is refused); errors name the sound, `audio[i]`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from ..errors import AudioInputError, ConfigError
from ..infer.embed import Embedder
from ..model import AST

TIMESTAMP_HOP_S = 0.05  # HEAR: "we recommend a hop size of 50 ms or less" for timestamp embeddings


class HearModel(torch.nn.Module):
    """An AST wrapped for the HEAR API (see the module docstring for the attributes and options)."""

    def __init__(self, model: AST, timestamp_hop_s: float = TIMESTAMP_HOP_S, timestamp_window_s: float | None = None,
                 layer: int | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.sample_rate: int = model.frontend.sample_rate
        self.scene_embedding_size: int = model.config.embed_dim
        self.timestamp_embedding_size: int = model.config.embed_dim
        self.layer = layer
        self.timestamp_window_s = timestamp_window_s
        self.timestamp_hop_s = _check_hop(timestamp_hop_s, min_timestamp_hop_s(model))
        Embedder(model, layer=layer).tagger.window_and_hop(timestamp_window_s, timestamp_hop_s)  # check them now

    def embedder(self) -> Embedder:
        """An Embedder on the device the wrapped model is on now (the user may have moved the module)."""
        return Embedder(self.model, device=next(self.model.parameters()).device, layer=self.layer)


def min_timestamp_hop_s(model: AST) -> float:
    """The finest timestamp hop allowed: the front end's frame shift (10 ms for every AST checkpoint)."""
    return model.frontend.frame_shift_ms / 1000


def _check_hop(hop_s: Any, low: float) -> float:
    """`hop_s` as float seconds, at least `low` (the window's upper bound is `window_and_hop`'s)."""
    value = math.nan
    if isinstance(hop_s, (int, float)) and not isinstance(hop_s, bool):
        try:
            value = float(hop_s)
        except OverflowError:  # an int beyond float range
            value = math.inf
    if not (math.isfinite(value) and value >= low):
        shown = f"{hop_s!r}"[:40]
        raise ConfigError(f"timestamp_hop_s must be a number of seconds >= {low:g} (the front end's frame shift), "
                          f"got {shown}")
    return value


def load_model(model_file_path: str | os.PathLike = "", **options: Any) -> HearModel:
    """The model at `model_file_path` ("" = the default AudioSet model from the Hugging Face cache), wrapped for the
    HEAR API; `options`: HearModel's timestamp_hop_s, timestamp_window_s, layer."""
    from ..weights.checkpoint import load_model as load_checkpoint
    from ..weights.hub import DEFAULT_MODEL

    unknown = sorted(set(options) - {"timestamp_hop_s", "timestamp_window_s", "layer"})
    if unknown:
        raise ConfigError(f"unknown HEAR model option(s) {unknown}; expected timestamp_hop_s, timestamp_window_s, "
                          "layer")
    return HearModel(load_checkpoint(str(model_file_path) or DEFAULT_MODEL), **options)


def _check_audio(audio: Any, model: HearModel) -> torch.Tensor:
    if not isinstance(audio, torch.Tensor) or audio.dim() != 2 or audio.shape[0] < 1 or audio.shape[1] < 1:
        got = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
        raise AudioInputError(f"expected audio as a torch tensor (n_sounds, n_samples) at {model.sample_rate} Hz, "
                              f"got {got}")
    return audio


def _names(audio: torch.Tensor) -> list[str]:
    """What errors call each sound: audio[i]."""
    return [f"audio[{i}]" for i in range(audio.shape[0])]


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_sounds, n_samples) -> (embeddings (n_sounds, n_timestamps, D), timestamps (n_sounds, n_timestamps) ms)."""
    audio = _check_audio(audio, model)
    results = list(model.embedder().embed(list(audio), window_s=model.timestamp_window_s,
                                          hop_s=model.timestamp_hop_s, batch_size=16, sample_rate=model.sample_rate,
                                          names=_names(audio)))
    embeddings = torch.stack([torch.from_numpy(r.windows) for r in results])  # n_sounds x (W, D) -> (n, W, D)
    centres_ms = torch.from_numpy((results[0].starts_s + results[0].ends_s) / 2 * 1000).float()  # (W,)
    return embeddings.to(audio.device), centres_ms.expand(len(results), -1).contiguous().to(audio.device)


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """(n_sounds, n_samples) -> (n_sounds, D) clip embeddings."""
    audio = _check_audio(audio, model)
    results = model.embedder().embed(list(audio), batch_size=16, sample_rate=model.sample_rate, names=_names(audio))
    return torch.stack([torch.from_numpy(r.clip) for r in results]).to(audio.device)  # (n, D)
