"""Weight surgery: ImageNet ViT/DeiT -> AST (spec §1.4), and a trained AST -> another input size, stride or head
(spec §1.5).

Pure functions on state dicts and models; each logs what it changed. Nothing here reads files.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from ..config import ASTConfig, FrontendConfig
from ..errors import CheckpointError, ConfigError
from ..model import AST, adapt_pos_embed
from .convert import StateDict, check_state_fits

log = logging.getLogger(__name__)

HEAD_KEYS = frozenset({"mlp_head.0.weight", "mlp_head.0.bias", "mlp_head.1.weight", "mlp_head.1.bias"})
FRAME_HEAD_PREFIX = "frame_head."
# Frame-head parameters whose shape follows the class count: new with a new clip head.
FRAME_CLASS_PREFIXES = ("frame_head.classifier.", "frame_head.weak_attention.")
# ImageNet classifier heads of timm ViT/DeiT checkpoints: not used by AST (spec §1.4 step 3).
IMAGENET_HEAD_KEYS = frozenset({"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"})

# ASTConfig fields that `adapt_model` can change on trained weights; every other field is fixed by the weights.
ADAPTABLE_FIELDS = ("input_tdim", "input_fdim", "fstride", "tstride", "num_classes", "pooling",
                    "layer_norm_eps", "head_norm_eps", "frame_head")
MODEL_KEYWORDS = ("labels", "multi_label", "frontend")


def adapt_input_conv(weight: torch.Tensor, mode: Literal["sum", "mean"] = "sum") -> torch.Tensor:
    """RGB patch kernels (D, 3, kh, kw) -> single-channel kernels (D, 1, kh, kw).

    `"sum"` is what the reference code does (spec §1.4): feeding a spectrogram through the summed kernel equals
    feeding the same spectrogram as three identical RGB channels. `"mean"` is the paper's wording ("average"),
    which scales the first-layer response by 1/3.
    """
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise CheckpointError(f"expected an RGB patch kernel (D, 3, kh, kw), got shape {tuple(weight.shape)}")
    if mode == "sum":
        return weight.sum(dim=1, keepdim=True)  # (D, 3, kh, kw) -> (D, 1, kh, kw)
    if mode == "mean":
        return weight.mean(dim=1, keepdim=True)
    raise ConfigError(f"in_chans_reduce must be 'sum' (reference code) or 'mean' (paper wording), got {mode!r}")


def unwrap_state_dict(obj: Any) -> Any:
    """Strip the `{"model": state}` / `{"state_dict": state}` wrappers that DeiT and training scripts save."""
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            return obj[wrapper]
    return obj


def from_imagenet(state_dict: Mapping[str, Any], config: ASTConfig,
                  in_chans_reduce: Literal["sum", "mean"] = "sum") -> StateDict:
    """A timm ViT/DeiT ImageNet state dict -> a complete native AST state dict for `config` (spec §1.4).

    - patch conv: RGB kernels summed (or averaged) to one channel, bias copied; the kernel must be
      fshape x tshape (16 x 16 ImageNet kernels cannot become, e.g., 128 x 2 frame patches);
    - pos-embed: the square ImageNet grid (side = sqrt(patch count)) is cut/interpolated per axis to `config.grid`
      with `adapt_pos_embed`; the prefix (cls, dist) embeddings are reused;
    - a ViT without a distillation token (one prefix token) gets `dist_token` and its position embedding copied
      from the cls ones. The two prefix tokens then start identical, so AST's (cls + dist) / 2 pooling initially
      equals the ViT's own cls output;
    - blocks and final norm copied; the ImageNet `head` / `head_dist` dropped; `mlp_head` (and a frame head, when
      `config` has one) freshly initialised (taken from a new `AST(config)`, so it draws from torch's global RNG).

    Accepts a `{"model": state}` wrapper. Any key beyond the expected set, or a missing one, raises CheckpointError.
    """
    state = dict(unwrap_state_dict(state_dict))
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state or "cls_token" not in state:
        raise CheckpointError("not a timm ViT/DeiT state dict: expected patch_embed.proj.weight, cls_token and "
                              f"pos_embed, found keys {sorted(state)[:5]}...")
    weight = state["patch_embed.proj.weight"]
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise CheckpointError(f"ImageNet patch kernel must be (D, 3, kh, kw), got {tuple(weight.shape)}")
    dim, _, kh, kw = weight.shape
    if (kh, kw) != (config.fshape, config.tshape):
        raise ConfigError(f"the ImageNet patch kernel is {kh}x{kw} but the config asks for {config.fshape}x"
                          f"{config.tshape} patches; only a matching kernel can be reused (train other patch "
                          "shapes from scratch, without ImageNet weights)")
    if dim != config.embed_dim:
        raise ConfigError(f"the ImageNet model is {dim} wide but the config asks for embed_dim={config.embed_dim}")
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    if depth != config.depth:
        raise ConfigError(f"the ImageNet model has {depth} blocks but the config asks for depth={config.depth}")

    has_dist = "dist_token" in state
    num_prefix = 2 if has_dist else 1
    pos_embed = state.pop("pos_embed")
    num_patches = pos_embed.shape[1] - num_prefix
    side = math.isqrt(max(num_patches, 0))
    if pos_embed.dim() != 3 or side * side != num_patches:
        raise CheckpointError(f"ImageNet pos_embed of shape {tuple(pos_embed.shape)} is not {num_prefix} prefix "
                              "embeddings plus a square grid")
    if not has_dist:
        state["dist_token"] = state["cls_token"].clone()
        pos_embed = torch.cat([pos_embed[:, :1], pos_embed], dim=1)  # (1, 1 + s*s, D) -> (1, 2 + s*s, D)
    state["pos_embed"] = adapt_pos_embed(pos_embed, (side, side), config.grid)
    state["patch_embed.proj.weight"] = adapt_input_conv(weight, in_chans_reduce)
    for key in IMAGENET_HEAD_KEYS:
        state.pop(key, None)

    model = AST(config)
    expected = model.state_dict()
    fresh = HEAD_KEYS | {k for k in expected if k.startswith(FRAME_HEAD_PREFIX)}
    check_state_fits({k: tuple(v.shape) for k, v in expected.items()}, state, "ImageNet checkpoint", fresh=fresh)
    for key in fresh:
        state[key] = expected[key]
    log.info("ImageNet -> AST: %d prefix token(s), grid %dx%d -> %dx%d, RGB kernels %s, new %d-class head",
             num_prefix, side, side, *config.grid, in_chans_reduce, config.num_classes)
    return state


def override_frontend(frontend: FrontendConfig, override: FrontendConfig | Mapping[str, Any] | None) -> FrontendConfig:
    """The `frontend=` keyword applied to `frontend`: a FrontendConfig replaces it, a dict changes those fields."""
    if override is None:
        return frontend
    if isinstance(override, FrontendConfig):
        return override
    if isinstance(override, Mapping):
        return frontend.replace(**override)
    raise ConfigError(f"frontend must be a FrontendConfig or a dict of its fields, got {type(override).__name__}")


def adapt_model(model: AST, **overrides: Any) -> AST:
    """A new AST with `model`'s backbone adapted to changed input size, stride or classes (spec §1.5, generalised).

    Keywords: ASTConfig fields in `ADAPTABLE_FIELDS` (input_tdim, input_fdim, fstride, tstride, num_classes,
    pooling, layer_norm_eps, head_norm_eps, frame_head), plus `labels` (CSV path or names), `multi_label` and
    `frontend` (a FrontendConfig, or a dict of FrontendConfig fields applied on top of the current front end).

    - the patch conv is rebuilt with the new stride and the same kernel (the reference keeps stride 10 here
      and crashes, issue #73);
    - `pos_embed` is cut/interpolated from the old grid to the new one (`adapt_pos_embed`, time axis first);
    - the head is kept when `num_classes` is unchanged, else freshly initialised with default labels
      (unless `labels` is given), and so are the frame head's class-sized layers (classifier, weak attention);
    - `frame_head` (a `FrameHeadConfig`, or None for a clip model) different from the model's gives a freshly
      initialised frame head (a clip model becomes a frame model: encoder and clip head kept);
    - the front end's target_length / num_mel_bins follow input_tdim / input_fdim; mean/std are kept unless
      `frontend` overrides them.

    A different kernel (fshape/tshape), width, depth, head count or MLP size cannot be adapted: ConfigError.
    `model` is not modified.
    """
    from ..labels import resolve_labels

    old = model.config
    config_changes = {k: v for k, v in overrides.items() if k not in MODEL_KEYWORDS}
    fields = {f.name for f in dataclasses.fields(old)}
    unknown = sorted(set(config_changes) - fields)
    if unknown:
        raise ConfigError(f"unknown override(s) {unknown}; expected ASTConfig fields {list(ADAPTABLE_FIELDS)} "
                          f"or {list(MODEL_KEYWORDS)}")
    fixed = {k: v for k, v in config_changes.items() if k not in ADAPTABLE_FIELDS and getattr(old, k) != v}
    if fixed:
        name, value = next(iter(fixed.items()))
        raise ConfigError(f"cannot change {name} from {getattr(old, name)!r} to {value!r} on trained weights: "
                          f"only {', '.join(ADAPTABLE_FIELDS)} can be adapted; build a new model to train "
                          "another architecture or patch shape from scratch")
    config = old.replace(**config_changes)

    frontend = model.frontend.replace(target_length=config.input_tdim, num_mel_bins=config.input_fdim)
    frontend = override_frontend(frontend, overrides.get("frontend"))

    new_head = config.num_classes != old.num_classes
    labels: Sequence[str] | None
    if overrides.get("labels") is not None:
        labels = resolve_labels(overrides["labels"])
    else:
        labels = None if new_head else model.labels
    multi_label = overrides.get("multi_label", model.multi_label)

    new = AST(config, frontend=frontend, labels=labels, multi_label=multi_label)
    new_frames = config.frame_head != old.frame_head
    state = {k: v.detach() for k, v in model.state_dict().items()
             if not (new_frames and k.startswith(FRAME_HEAD_PREFIX))}
    if old.grid != config.grid:
        state["pos_embed"] = adapt_pos_embed(state["pos_embed"], old.grid, config.grid)
    for key, value in new.state_dict().items():  # the fresh parts: new heads, or their class-sized layers
        if key.startswith(FRAME_HEAD_PREFIX):
            fresh = new_frames or (new_head and key.startswith(FRAME_CLASS_PREFIXES))
        else:
            fresh = new_head and key in HEAD_KEYS
        if fresh:
            state[key] = value
    new.load_state_dict(state, strict=True)
    reference = next(model.parameters())
    new.to(device=reference.device, dtype=reference.dtype)
    new.train(model.training)
    changed = {k: (getattr(old, k), getattr(config, k))
               for k in ADAPTABLE_FIELDS if getattr(old, k) != getattr(config, k)}
    log.info("adapted AST: %s%s%s", changed or "no config change", ", new head" if new_head else "",
             ", new frame head" if new_frames and config.frame_head is not None else "")
    return new



def remap_head(model: AST, labels: Sequence[str], rows: Sequence[int | None]) -> AST:
    """A copy of `model` whose head scores `labels`: output i keeps `model`'s trained head row `rows[i]` (weight row
    and bias of the classifier), or starts fresh where `rows[i]` is None (a class the model did not have).

    `rows` comes from `ast_audio.labels.match_classes(labels, model.labels, allow_new=True)`, so a checkpoint whose
    classes are the data's in another order keeps its trained head, reordered by name. The head's LayerNorm is kept
    when any row is; when none is, the whole head is new (as `adapt_model` makes it for another class count). New
    rows are drawn from torch's global RNG, like every fresh head. `model` is not modified.
    """
    if len(rows) != len(labels):
        raise ConfigError(f"remap_head needs one row per label, got {len(rows)} rows for {len(labels)} labels")
    config = model.config.replace(num_classes=len(labels))
    new = AST(config, frontend=model.frontend, labels=list(labels), multi_label=model.multi_label)
    fresh = new.state_dict()
    state = {k: v.detach() for k, v in model.state_dict().items()}
    kept = [(i, r) for i, r in enumerate(rows) if r is not None]
    if kept:
        to_rows, from_rows = [i for i, _ in kept], [r for _, r in kept]
        for key in ("mlp_head.1.weight", "mlp_head.1.bias"):  # (C, D) and (C,)
            value = fresh[key].clone()
            value[to_rows] = state[key][from_rows].to(value.dtype)
            state[key] = value
    else:
        state.update({key: fresh[key] for key in HEAD_KEYS})
    new.load_state_dict(state, strict=True)
    reference = next(model.parameters())
    new.to(device=reference.device, dtype=reference.dtype)
    new.train(model.training)
    log.info("head: %d of %d classes keep their trained row (matched by name), %d new", len(kept), len(labels),
             len(labels) - len(kept))
    return new
