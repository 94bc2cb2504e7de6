"""Where in the spectrogram the model looked: relevance of time-frequency cells for the AST's output.

Two methods, both read the attention maps of every block:

- class-agnostic (default): attention rollout (Abnar & Zuidema, ACL 2020). Per layer l, average the heads,
  add the identity for the residual connection and renormalise the rows: Â_l = norm_rows(mean_h A_l + I). The
  rollout R = Â_L ... Â_2 Â_1 says how much each input token flows into each output token. AST's prediction
  reads the mean of the cls and dist outputs, so the patch relevance is (R[cls, patches] + R[dist, patches]) / 2.
- class-specific (`class_name`): gradient-weighted rollout (Chefer, Gur & Wolf, ICCV 2021, "Generic
  attention-model explainability", eq. 5-6): Ā_l = mean_h (∂y_c/∂A_l ⊙ A_l)^+ (only heads and entries that
  push the class logit y_c up), R = I, then R <- R + Ā_l R for l = 1..L; relevance again from the cls/dist rows.

The patch grid (f_dim x t_dim patches of fshape x tshape cells at stride fstride/tstride; patches overlap) is mapped
back to (T, F) cells by spreading each patch's relevance over its receptive field and dividing every cell by the
number of patches covering it. Cells no patch covers (the last few bins/frames when the stride does not fit) get 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..audio.features import FeatureExtractor
from ..audio.io import as_waveform
from ..errors import ConfigError
from ..labels import check_labels, top_labels
from ..model import AST
from ..model.ast import NUM_PREFIX_TOKENS
from ..model.scores import probabilities


@dataclass
class Explanation:
    """fbank: (T, F) log-mel frames of the explained window, unnormalised (as `FeatureExtractor.frames` gives them,
    cropped to the model input); relevance: (T, F) in [0, 1], min-max scaled over the cells the patches cover
    (uncovered edge cells 0); patch_relevance: the unscaled (f_dim, t_dim) patch values; labels: top (label,
    score) of that window;
    class_name: the class explained ("" for the class-agnostic rollout); method: "rollout" or "gradient-rollout";
    start_s: where the explained window starts in the input."""

    fbank: torch.Tensor
    relevance: torch.Tensor
    labels: list[tuple[str, float]]
    class_name: str
    sample_rate: int
    frame_shift_s: float
    method: str = "rollout"
    start_s: float = 0.0
    patch_relevance: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (f_dim, t_dim) float64


def rollout(maps: list[torch.Tensor]) -> torch.Tensor:
    """Attention rollout: per-layer (H, S, S) maps -> (S, S) = Â_L ... Â_1, Â = norm_rows(mean_h A + I)."""
    size = maps[0].shape[-1]
    eye = torch.eye(size, dtype=torch.float64)
    result = eye
    for a in maps:
        a = a.double().mean(dim=0) + eye  # (H, S, S) -> (S, S), plus the residual path
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result


def gradient_rollout(maps: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """Chefer et al. 2021: R = I; for each layer R <- R + mean_h((grad ⊙ A)^+) R. Maps and grads (H, S, S)."""
    size = maps[0].shape[-1]
    result = torch.eye(size, dtype=torch.float64)
    for a, g in zip(maps, grads, strict=True):
        cam = (g.double() * a.double()).clamp(min=0).mean(dim=0)  # (H, S, S) -> (S, S)
        result = result + cam @ result
    return result


def patches_to_cells(patch: torch.Tensor, size: tuple[int, int], kernel: tuple[int, int],
                     stride: tuple[int, int]) -> torch.Tensor:
    """(f_dim, t_dim) patch values -> (F, T) cell values: each cell the mean over the patches covering it (0 if none).

    size = (F, T) cells; kernel = (fshape, tshape); stride = (fstride, tstride).
    """
    ones = torch.ones(1, 1, *kernel, dtype=torch.float64)
    total = torch.nn.functional.conv_transpose2d(patch.double()[None, None], ones, stride=stride)[0, 0]
    count = torch.nn.functional.conv_transpose2d(torch.ones_like(patch, dtype=torch.float64)[None, None], ones,
                                                 stride=stride)[0, 0]  # (covered F, covered T)
    out = torch.zeros(size, dtype=torch.float64)
    f, t = min(size[0], total.shape[0]), min(size[1], total.shape[1])
    out[:f, :t] = total[:f, :t] / count[:f, :t]
    return out


def _coverage(config) -> torch.Tensor:
    """(F, T_input) number of patches covering each cell."""
    f_dim, t_dim = config.grid
    ones = torch.ones(1, 1, config.fshape, config.tshape, dtype=torch.float64)
    count = torch.nn.functional.conv_transpose2d(torch.ones(1, 1, f_dim, t_dim, dtype=torch.float64), ones,
                                                 stride=(config.fstride, config.tstride))[0, 0]
    out = torch.zeros(config.input_fdim, config.input_tdim, dtype=torch.float64)
    out[:count.shape[0], :count.shape[1]] = count[:config.input_fdim, :config.input_tdim]
    return out


def _min_max(values: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    """Scale the covered cells to [0, 1] (min -> 0, max -> 1; all equal -> 1); uncovered cells stay 0.

    Rollout keeps every token's own residual share, so raw relevance varies only a few percent around its mean;
    min-max scaling shows where it is highest, not how much higher (the plot's colour bar says "relative")."""
    out = torch.zeros_like(values)
    if not covered.any():
        return out
    inside = values[covered]
    low, high = inside.min(), inside.max()
    out[covered] = (inside - low) / (high - low) if high > low else torch.ones_like(inside)
    return out


def _prefix_rows(matrix: torch.Tensor) -> torch.Tensor:
    """(S, S) -> (N,) mean of the cls and dist rows over the patch columns."""
    return matrix[:NUM_PREFIX_TOKENS, NUM_PREFIX_TOKENS:].mean(dim=0)


def explain(model: AST, waveform: Any, *, sample_rate: int | None = None, class_name: str | None = None,
            top_k: int = 3, start_s: float = 0.0) -> Explanation:
    """Relevance of each (frame, mel bin) of one model input window for the model's output.

    Args:
        model: an AST (an ONNX Runtime model from `runtime_model` is explained through the fp32 AST it was built
            from).
        waveform: (N,) float waveform (numpy array or torch tensor) at `sample_rate`; the window [start_s,
            start_s + input length) is explained (audio past it is ignored; shorter audio is zero-padded in the
            log-mel domain as usual).
        sample_rate: the waveform's rate in Hz (required; resampled to the model's rate with `as_waveform`).
        class_name: explain this class with gradient-weighted rollout; None = class-agnostic rollout.
        top_k: number of (label, score) pairs in the result.
        start_s: where the window starts, in seconds.
    """
    model = getattr(model, "torch_model", None) or model  # an ONNX Runtime model explains with its fp32 source
    if not isinstance(model, AST):
        raise ConfigError(f"an explanation reads the attention maps of the torch model, which precision "
                          f"{getattr(model, 'precision', type(model).__name__)} does not have; use --precision auto, "
                          "fp32 or bf16")
    frontend = model.frontend
    waveform = as_waveform(waveform, sample_rate, frontend.sample_rate)  # (N,) at sample_rate -> (M,) model rate
    labels = list(model.labels)
    if class_name is not None:
        check_labels([class_name], labels)
    start = round(start_s * frontend.sample_rate)
    if not 0 <= start < waveform.shape[0]:
        raise ConfigError(f"start_s={start_s:g} is outside the audio (0 to {waveform.shape[0] / frontend.sample_rate:g}"
                          " s)")
    features = FeatureExtractor(frontend)
    frames = features.frames(waveform[start:start + frontend.input_samples].detach().float().cpu())  # (T', F)
    frames = frames[:frontend.target_length]
    x = features.normalize(features.pad_or_crop(frames))[None]  # (1, target_length, F)
    x = x.to(next(model.parameters()).device)  # where the model is (--device)

    model.eval()
    if class_name is None:
        with torch.no_grad():
            tokens, maps = model.forward_features(x, return_attention=True)
            logits = model.forward_head(model.pool(tokens))
        matrix = rollout([m[0] for m in maps])
        method = "rollout"
    else:
        if model.precision == "int8":
            raise ConfigError("a class-specific explanation needs gradients through the transformer blocks, which "
                              "int8-quantized layers do not have; use precision fp32 (default) or bf16, or drop "
                              "the class for the class-agnostic rollout")
        with torch.enable_grad():
            tokens, maps = model.forward_features(x, return_attention=True)
            for m in maps:
                m.retain_grad()
            logits = model.forward_head(model.pool(tokens))
            model.zero_grad(set_to_none=True)
            logits[0, labels.index(class_name)].backward()
        if any(m.grad is None for m in maps):
            raise ConfigError("the model's output has no gradient with respect to its attention maps (quantized or "
                              "frozen layers?); use a fp32 model for a class-specific explanation")
        matrix = gradient_rollout([m[0].detach() for m in maps], [m.grad[0] for m in maps])
        model.zero_grad(set_to_none=True)
        method = "gradient-rollout"
    logits, matrix = logits.detach().float().cpu(), matrix.cpu()
    probs = probabilities(logits, model.multi_label)[0]

    config = model.config
    f_dim, t_dim = config.grid
    patch = _prefix_rows(matrix).reshape(f_dim, t_dim)  # (N,) -> (f_dim, t_dim): token = f_idx * t_dim + t_idx
    cells = patches_to_cells(patch, (config.input_fdim, config.input_tdim), (config.fshape, config.tshape),
                             (config.fstride, config.tstride))  # (F, T_input)
    relevance = cells.T[:frames.shape[0]]  # (T_input, F) -> (T, F), the frames that hold audio
    relevance = _min_max(relevance, covered=_coverage(config).T[:frames.shape[0]] > 0).float()
    return Explanation(fbank=frames, relevance=relevance,
                       labels=top_labels(probs, labels, top_k),
                       class_name=class_name or "", sample_rate=frontend.sample_rate,
                       frame_shift_s=frontend.frame_shift_ms / 1000, method=method,
                       start_s=start / frontend.sample_rate,
                       patch_relevance=patch)
