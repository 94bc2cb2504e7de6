"""Key maps between checkpoint formats: pure functions from one state dict to another.

Native names are timm's DeiT names without the reference's `v.` (exactly `AST.state_dict()` keys):
`cls_token`, `dist_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,
mlp.fc2}.*`, `norm.*`, `mlp_head.{0,1}.*`.

Formats handled here (spec §4.3, §11):
- reference AST `.pth`: `module.v.<timm name>` and `module.mlp_head.{0,1}.*` (the `module.` prefix is optional);
  the unused ImageNet heads `v.head.*` / `v.head_dist.*` are dropped;
- transformers AST, in the v4 spelling stored in hub checkpoints (`encoder.layer.N.attention.attention.query`, ...)
  and the v5 in-memory spelling (`layers.N.attention.q_proj`, ...); the fused qkv projection is split into /
  merged from three equal row blocks in the order q, k, v.

Every function raises CheckpointError naming the keys it did not expect. Tensors are not copied.
`check_state_fits` is the one exact key and shape check of weights against a model (every reader and the ImageNet
adaptation call it).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping

import torch

from ..config import ASTConfig
from ..errors import CheckpointError
from ..model import AST

StateDict = dict[str, torch.Tensor]

# Every key an AST state dict may hold, in native spelling.
_NATIVE_KEY = re.compile(
    r"(cls_token|dist_token|pos_embed"
    r"|patch_embed\.proj\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
    r"|norm\.(weight|bias)"
    r"|mlp_head\.[01]\.(weight|bias))"
)

HF_PREFIX = "audio_spectrogram_transformer."

# transformers name (after HF_PREFIX, or `classifier.`) -> native name, for everything but the qkv projection.
_HF_SIMPLE = {
    "embeddings.cls_token": "cls_token",
    "embeddings.distillation_token": "dist_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_HEAD = {"classifier.layernorm": "mlp_head.0", "classifier.dense": "mlp_head.1"}

# Per-block module names: v4 (hub files) and v5 (transformers 5 in memory) -> native; q/k/v handled apart.
_HF_V4_BLOCK = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_HF_V5_BLOCK = {
    "layernorm_before": "norm1",
    "attention.o_proj": "attn.proj",
    "layernorm_after": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_V4_QKV = {"attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2}
_HF_V5_QKV = {"attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2}
_V4_BLOCK_KEY = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")
_V5_BLOCK_KEY = re.compile(r"layers\.(\d+)\.(.+)\.(weight|bias)")


def _raise_unexpected(unexpected: Iterable[str], what: str) -> None:
    unexpected = sorted(unexpected)
    if unexpected:
        shown = ", ".join(unexpected[:6]) + (f", ... ({len(unexpected) - 6} more)" if len(unexpected) > 6 else "")
        raise CheckpointError(f"unexpected keys for a {what}: {shown}")


def is_native_key(key: str) -> bool:
    """Whether `key` is a parameter name of some `AST` (any depth)."""
    return _NATIVE_KEY.fullmatch(key) is not None


# ----------------------------------------------------------------------------------------------------------------
# Reference AST (`module.v.*`) <-> native


def reference_to_native(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Reference AST state dict (`[module.]v.<timm name>`, `[module.]mlp_head.{0,1}.*`) -> native names.

    The unused ImageNet heads `v.head.*` and `v.head_dist.*` (spec §1.3) are dropped.
    """
    out: StateDict = {}
    unexpected = []
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name.startswith(("v.head.", "v.head_dist.")):
            continue
        if name.startswith("v."):
            name = name[2:]
        elif not name.startswith("mlp_head."):
            unexpected.append(key)
            continue
        if not is_native_key(name):
            unexpected.append(key)
            continue
        out[name] = value
    _raise_unexpected(unexpected, "reference AST checkpoint (expected module.v.* and module.mlp_head.*)")
    return out


def native_to_reference(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> StateDict:
    """Native state dict -> reference layout (`module.v.*`, `module.mlp_head.*`); no ImageNet heads are invented."""
    _raise_unexpected((k for k in state if not is_native_key(k)), "native AST state dict")
    return {prefix + (k if k.startswith("mlp_head.") else "v." + k): v for k, v in state.items()}


# ----------------------------------------------------------------------------------------------------------------
# transformers AST (v4 or v5 spelling) <-> native


def is_hf_state_dict(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether `state` looks like a transformers AST state dict (either spelling)."""
    return any(k.startswith(HF_PREFIX) for k in state)


def hf_to_native(state: Mapping[str, torch.Tensor]) -> StateDict:
    """transformers `ASTForAudioClassification` state dict (v4 or v5 key spelling) -> native names.

    q, k and v projections are concatenated along the output rows, in that order, into `attn.qkv`
    ((D, D) x 3 -> (3D, D); biases (D,) x 3 -> (3D,)).
    """
    out: StateDict = {}
    qkv_parts: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
    unexpected = []
    for key, value in state.items():
        head_module, _, param = key.rpartition(".")
        if head_module in _HF_HEAD and param in ("weight", "bias"):
            out[f"{_HF_HEAD[head_module]}.{param}"] = value
            continue
        if not key.startswith(HF_PREFIX):
            unexpected.append(key)
            continue
        name = key[len(HF_PREFIX):]
        if name in _HF_SIMPLE:
            out[_HF_SIMPLE[name]] = value
            continue
        for pattern, block_map, qkv_map in ((_V4_BLOCK_KEY, _HF_V4_BLOCK, _HF_V4_QKV),
                                            (_V5_BLOCK_KEY, _HF_V5_BLOCK, _HF_V5_QKV)):
            match = pattern.fullmatch(name)
            if match is None:
                continue
            index, module, param = int(match[1]), match[2], match[3]
            if module in block_map:
                out[f"blocks.{index}.{block_map[module]}.{param}"] = value
                break
            if module in qkv_map:
                qkv_parts.setdefault((index, param), {})[qkv_map[module]] = value
                break
        else:
            unexpected.append(key)
    _raise_unexpected(unexpected, "transformers AST checkpoint")
    for (index, param), parts in sorted(qkv_parts.items()):
        if sorted(parts) != [0, 1, 2]:
            missing = [("query", "key", "value")[i] for i in range(3) if i not in parts]
            raise CheckpointError(f"transformers AST checkpoint: layer {index} lacks the attention {param} "
                                  f"of {', '.join(missing)}")
        shapes = [tuple(parts[i].shape) for i in range(3)]
        if len(set(shapes)) != 1 or not shapes[0]:
            raise CheckpointError(f"transformers AST checkpoint: layer {index} has attention {param} shapes "
                                  f"{shapes} for query, key, value; expected three equal shapes")
        # 3 x (D, ...) -> (3D, ...), rows q then k then v
        out[f"blocks.{index}.attn.qkv.{param}"] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    return out


def native_to_hf(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Native state dict -> transformers AST state dict in the v4 spelling used by hub checkpoints.

    `attn.qkv` (3D, D) / (3D,) is split into three equal row blocks: query, key, value.
    """
    _raise_unexpected((k for k in state if not is_native_key(k)), "native AST state dict")
    simple = {native: hf for hf, native in _HF_SIMPLE.items()}
    block = {native: hf for hf, native in _HF_V4_BLOCK.items()}
    out: StateDict = {}
    for key, value in state.items():
        if key in simple:
            out[HF_PREFIX + simple[key]] = value
        elif key.startswith("mlp_head."):
            head = "classifier.layernorm" if key.startswith("mlp_head.0.") else "classifier.dense"
            out[f"{head}.{key.rpartition('.')[2]}"] = value
        else:
            _, index, rest = key.split(".", 2)  # blocks.N.<module>.<param>
            module, _, param = rest.rpartition(".")
            layer = f"{HF_PREFIX}encoder.layer.{index}."
            if module == "attn.qkv":
                query, key_, value_ = value.chunk(3, dim=0)  # (3D, ...) -> 3 x (D, ...)
                for name, part in (("query", query), ("key", key_), ("value", value_)):
                    out[f"{layer}attention.attention.{name}.{param}"] = part
            else:
                out[f"{layer}{block[module]}.{param}"] = value
    return out


# ----------------------------------------------------------------------------------------------------------------
# Weights against a model


def expected_shapes(config: ASTConfig) -> dict[str, tuple[int, ...]]:
    """{parameter name: shape} of `AST(config)`, from a model built on the meta device (nothing allocated).

    `config` has passed its bounds, so this takes milliseconds whatever the file claims.
    """
    with torch.device("meta"):
        model = AST(config)
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def check_state_fits(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor], source: str, *,
                     fresh: Collection[str] = ()) -> None:
    """CheckpointError naming the first missing or unexpected keys, or the first wrong shape, of `state` (real or
    meta tensors) against `expected` ({name: shape}).

    `fresh`: keys the model initialises itself (a new classifier head), which `state` must not hold: every other
    expected key must be there, and nothing else. The one exact check of weights against a model.
    """
    fresh = set(fresh)
    missing = sorted(set(expected) - set(state) - fresh)
    unexpected = sorted(set(state) - (set(expected) - fresh))
    if missing or unexpected:
        new = f" (only {', '.join(sorted(fresh))} may be new)" if fresh else ""
        raise CheckpointError(f"{source}: weights do not fit the model: missing {missing[:4]}"
                              f"{'...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
                              f"{'...' if len(unexpected) > 4 else ''}{new}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key]):
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(expected[key])}")


def load_state_exact(model: AST, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`, raising a CheckpointError that names the first mismatching keys/shapes."""
    check_state_fits({k: tuple(v.shape) for k, v in model.state_dict().items()}, state, source)
    model.load_state_dict(state, strict=True)
