"""Where in the spectrogram the model looked: relevance of time-frequency cells for the AST's output, and two measures
of how good a relevance map is where the evidence is known (`pointing_game`, `deletion_curve`).

Two methods (`explain_methods.METHODS`), both read the attention maps of every block:

- "gradient-rollout" (default; the top-scoring class unless `class_name` says which): gradient-weighted rollout
  (Chefer, Gur & Wolf, ICCV 2021, "Generic attention-model explainability", eq. 5-6): Ā_l = mean_h (∂y_c/∂A_l ⊙
  A_l)^+ (only heads and entries that push the class's clip logit y_c up), R = I, then R <- R + Ā_l R for
  l = 1..L. The gradients come from one backward pass through the returned maps (`torch.autograd.grad`).
- "rollout": class-agnostic attention rollout (Abnar & Zuidema, ACL 2020). Per layer l, average the heads,
  add the identity for the residual connection and renormalise the rows: Â_l = norm_rows(mean_h A_l + I). The
  rollout R = Â_L ... Â_2 Â_1 says how much each input token flows into each output token.

AST's prediction reads the mean of the cls and dist outputs, so the patch relevance is (R[cls, patches] +
R[dist, patches]) / 2 (with SSAST's 'mean' pooling, the mean of the patch rows). A frame model is explained through
its clip score (the cls/dist head).

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
from .explain_methods import CLASS_AGNOSTIC, DEFAULT_METHOD, METHODS


@dataclass
class Explanation:
    """fbank: (T, F) log-mel frames of the explained window, unnormalised (as `FeatureExtractor.frames` gives them,
    cropped to the model input); relevance: (T, F) in [0, 1], min-max scaled over the cells the patches cover
    (uncovered edge cells 0); patch_relevance: the unscaled (f_dim, t_dim) patch values; labels: top (label,
    score) of that window;
    class_name: the class explained (the top class unless one was asked for; "" for the class-agnostic rollout);
    method: "gradient-rollout" or "rollout";
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


def _output_rows(matrix: torch.Tensor, pooling: str) -> torch.Tensor:
    """(S, S) -> (N,) relevance of the patch columns for the rows the head reads: the mean of the cls and dist rows
    (AST's 'tokens' pooling) or of the patch rows (SSAST's 'mean' pooling)."""
    rows = matrix[:NUM_PREFIX_TOKENS] if pooling == "tokens" else matrix[NUM_PREFIX_TOKENS:]
    return rows[:, NUM_PREFIX_TOKENS:].mean(dim=0)


def check_method(method: str, class_name: str | None, labels: list[str] | tuple[str, ...]) -> None:
    """ConfigError for an unknown method, an unknown class, or a class given to a class-agnostic method."""
    if method not in METHODS:
        raise ConfigError(f"unknown explanation method {method!r}; expected one of {', '.join(METHODS)}")
    if class_name is None:
        return
    if method in CLASS_AGNOSTIC:
        raise ConfigError(f"{method} is class-agnostic (the same map for every class), so it takes no class; drop "
                          f"the class, or use method {DEFAULT_METHOD} to explain {class_name!r}")
    check_labels([class_name], list(labels))


def torch_ast(model: Any) -> AST:
    """The AST whose attention maps explain `model` (an ONNX Runtime model is explained through its fp32 source)."""
    model = getattr(model, "torch_model", None) or model
    if not isinstance(model, AST):
        raise ConfigError(f"an explanation reads the attention maps of the torch model, which precision "
                          f"{getattr(model, 'precision', type(model).__name__)} does not have; use --precision auto, "
                          "fp32 or bf16")
    return model


def model_input(model: AST, frames: torch.Tensor) -> torch.Tensor:
    """(T, F) unnormalised log-mel frames -> (1, target_length, F) model input, padded or cropped and normalised,
    on the model's device."""
    features = FeatureExtractor(model.frontend)
    x = features.normalize(features.pad_or_crop(frames.float()))[None]  # (1, target_length, F)
    return x.to(next(model.parameters()).device)


def _gradient_maps(model: AST, x: torch.Tensor, class_index: int | None
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, int]:
    """One forward and one backward pass: per-layer (H, S, S) maps and d(logit)/d(map), (C,) logits, the class.

    The gradients come from `torch.autograd.grad` on the returned maps (the model needs no hooks, and no parameter
    `.grad` is touched). The input requires grad, so the maps are on the graph even in a frozen model."""
    if model.precision == "int8":
        raise ConfigError("gradient-rollout needs gradients through the transformer blocks, which int8-quantized "
                          "layers do not have; use precision fp32 (default) or bf16, or the class-agnostic method "
                          "rollout")
    with torch.enable_grad():
        tokens, maps = model.forward_features(x.detach().requires_grad_(True), return_attention=True)
        logits = model.forward_head(model.pool(tokens))[0]  # (C,) clip logits (a frame model's clip head too)
        index = int(logits.argmax()) if class_index is None else class_index
        grads = torch.autograd.grad(logits[index], maps)
    return [m[0].detach() for m in maps], [g[0] for g in grads], logits.detach(), index


def patch_relevance(model: AST, x: torch.Tensor, method: str = DEFAULT_METHOD, class_index: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """Relevance of each patch of one model input for the model's output.

    Args:
        model: the AST (eval mode).
        x: (1, T, F) normalised model input (`model_input`).
        method: "gradient-rollout" (the class's clip logit; the top class when `class_index` is None) or
            "rollout" (class-agnostic; `class_index` must be None).
    Returns:
        (f_dim, t_dim) float64 patch relevance (unscaled), (C,) float32 clip logits, and the class explained
        (None for rollout).
    """
    if method == "rollout":
        if class_index is not None:
            raise ConfigError("rollout is class-agnostic: it takes no class")
        with torch.no_grad():
            tokens, maps = model.forward_features(x, return_attention=True)
            logits = model.forward_head(model.pool(tokens))[0]
        matrix, explained = rollout([m[0] for m in maps]), None
    elif method == "gradient-rollout":
        maps, grads, logits, explained = _gradient_maps(model, x, class_index)
        matrix = gradient_rollout(maps, grads)
    else:
        raise ConfigError(f"unknown explanation method {method!r}; expected one of {', '.join(METHODS)}")
    f_dim, t_dim = model.config.grid
    patch = _output_rows(matrix.cpu(), model.config.pooling).reshape(f_dim, t_dim)  # token = f_idx * t_dim + t_idx
    return patch, logits.float().cpu(), explained


def _cell_relevance(patch: torch.Tensor, config: Any, num_frames: int) -> torch.Tensor:
    """(f_dim, t_dim) patch relevance -> (num_frames, F) cells, min-max scaled over the covered cells (float32)."""
    cells = patches_to_cells(patch, (config.input_fdim, config.input_tdim), (config.fshape, config.tshape),
                             (config.fstride, config.tstride))  # (F, T_input)
    relevance = cells.T[:num_frames]  # (T_input, F) -> (T, F), the frames that hold audio
    return _min_max(relevance, covered=_coverage(config).T[:num_frames] > 0).float()


def explain(model: AST, waveform: Any, *, sample_rate: int | None = None, class_name: str | None = None,
            method: str = DEFAULT_METHOD, top_k: int = 3, start_s: float = 0.0) -> Explanation:
    """Relevance of each (frame, mel bin) of one model input window for the model's output.

    Args:
        model: an AST (an ONNX Runtime model from `runtime_model` is explained through the fp32 AST it was built
            from).
        waveform: (N,) float waveform (numpy array or torch tensor) at `sample_rate`; the window [start_s,
            start_s + input length) is explained (audio past it is ignored; shorter audio is zero-padded in the
            log-mel domain as usual).
        sample_rate: the waveform's rate in Hz (required; resampled to the model's rate with `as_waveform`).
        class_name: the class gradient-rollout explains (default: the top-scoring class of the window). The
            class-agnostic rollout takes none (ConfigError).
        method: "gradient-rollout" (default) or "rollout" (`explain_methods.METHODS`).
        top_k: number of (label, score) pairs in the result.
        start_s: where the window starts, in seconds.
    """
    model = torch_ast(model)
    labels = list(model.labels)
    check_method(method, class_name, labels)
    frontend = model.frontend
    waveform = as_waveform(waveform, sample_rate, frontend.sample_rate)  # (N,) at sample_rate -> (M,) model rate
    start = round(start_s * frontend.sample_rate)
    if not 0 <= start < waveform.shape[0]:
        raise ConfigError(f"start_s={start_s:g} is outside the audio (0 to {waveform.shape[0] / frontend.sample_rate:g}"
                          " s)")
    frames = FeatureExtractor(frontend).frames(waveform[start:start + frontend.input_samples].detach().float().cpu())
    frames = frames[:frontend.target_length]  # (T, F), T <= target_length
    model.eval()
    class_index = labels.index(class_name) if class_name is not None else None
    patch, logits, explained = patch_relevance(model, model_input(model, frames), method, class_index)
    probs = probabilities(logits, model.multi_label)
    return Explanation(fbank=frames, relevance=_cell_relevance(patch, model.config, frames.shape[0]),
                       labels=top_labels(probs, labels, top_k),
                       class_name=labels[explained] if explained is not None else "",
                       sample_rate=frontend.sample_rate, frame_shift_s=frontend.frame_shift_ms / 1000, method=method,
                       start_s=start / frontend.sample_rate, patch_relevance=patch)


# ----------------------------------------------------------------------------------------------------------------
# How good an explanation is, where the evidence is known: a pointing game and a deletion curve


def patch_cells(config: Any, index: int) -> tuple[slice, slice]:
    """Patch `index` (token order: f_idx * t_dim + t_idx) -> its receptive field as (frame slice, mel-bin slice)."""
    t_dim = config.grid[1]
    f_idx, t_idx = divmod(index, t_dim)
    return (slice(t_idx * config.tstride, t_idx * config.tstride + config.tshape),
            slice(f_idx * config.fstride, f_idx * config.fstride + config.fshape))


def _patch_hits(region: torch.Tensor, config: Any) -> torch.Tensor:
    """(T, F) bool region (T <= input_tdim) -> (N,) bool: whether each patch's receptive field holds a region cell."""
    return torch.tensor([bool(region[patch_cells(config, n)].any()) for n in range(config.num_patches)])


def pointing_game(patch: torch.Tensor, region: torch.Tensor, config: Any) -> bool:
    """Whether the most relevant patch (the first, on ties) has a cell of `region` in its receptive field.

    patch: (f_dim, t_dim) patch relevance; region: (T, F) bool, the cells where the sound is (frames past T count
    as outside); config: the model's ASTConfig (patch size and stride)."""
    return bool(_patch_hits(region, config)[int(patch.flatten().argmax())])


def pointing_chance(region: torch.Tensor, config: Any) -> float:
    """The pointing game's hit rate of a patch picked at random: the share of patches touching `region`."""
    return float(_patch_hits(region, config).double().mean())


def relevance_order(patch: torch.Tensor) -> torch.Tensor:
    """(f_dim, t_dim) patch relevance -> (N,) patch indices, most relevant first (stable on ties)."""
    return torch.argsort(patch.flatten(), descending=True, stable=True)


@dataclass
class DeletionCurve:
    """The class score as patches are removed: fractions (K + 1,) of patches removed, from 0 to 1; scores (K + 1,)
    the class score (sigmoid or softmax, as the model scores) at each."""

    fractions: torch.Tensor
    scores: torch.Tensor

    @property
    def auc(self) -> float:
        """Area under the curve (trapezoids over the removed fraction): smaller = the evidence went first."""
        return float(torch.trapezoid(self.scores.double(), self.fractions.double()))


def deletion_curve(model: AST, frames: torch.Tensor, class_name: str, order: torch.Tensor, fill: torch.Tensor | float,
                   *, steps: int = 20, batch_size: int = 16) -> DeletionCurve:
    """Remove patches in `order` and track the class's clip score (Petsiuk et al. 2018's deletion metric).

    Removing a patch sets the cells of its receptive field (frames holding audio only; the padding stays) to
    `fill`, in the unnormalised log-mel domain, before the usual padding and normalisation.

    Args:
        model: the AST.
        frames: (T, F) unnormalised log-mel frames (`Explanation.fbank`), T <= target_length.
        class_name: the class whose score is tracked.
        order: (N,) a permutation of the patch indices (`relevance_order`, or a random one).
        fill: what a removed cell becomes, broadcastable to (T, F): a background level (a scalar, or (F,) per mel
            bin). The choice changes the curve; state it with the numbers.
        steps: the curve is sampled at K = steps + 1 evenly spaced counts of removed patches (0 .. N).
    """
    model = torch_ast(model).eval()
    check_labels([class_name], list(model.labels))
    config = model.config
    n = config.num_patches
    order = torch.as_tensor(order, dtype=torch.long)
    if order.shape != (n,) or not torch.equal(order.sort().values, torch.arange(n)):
        raise ConfigError(f"order must be a permutation of the {n} patch indices, got shape {tuple(order.shape)}")
    counts = torch.linspace(0, n, steps + 1).round().long()  # (K,) patches removed at each point
    frames = frames.float()[:model.frontend.target_length]  # (T, F)
    fill = torch.as_tensor(fill, dtype=torch.float32).expand_as(frames)
    removed = torch.zeros_like(frames, dtype=torch.bool)
    inputs, done = [], 0
    for count in counts.tolist():  # masks grow cumulatively along the order
        for index in order[done:count].tolist():
            removed[patch_cells(config, index)] = True
        done = count
        inputs.append(model_input(model, torch.where(removed, fill, frames))[0])  # (target_length, F)
    column, scores = model.labels.index(class_name), []
    with torch.no_grad():
        for batch in torch.stack(inputs).split(batch_size):  # (K, target_length, F) in batches
            scores.append(probabilities(model(batch).float().cpu(), model.multi_label)[:, column])
    return DeletionCurve(fractions=counts.double() / n, scores=torch.cat(scores))
