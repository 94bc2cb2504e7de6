"""Our AST vs transformers' ASTForAudioClassification with the same random weights, both directions.

Tolerance: logits agree to atol 1e-4 (float32, random weights scaled so that logits are O(1)); where both models
use the same LayerNorm eps the two computations are the same maths and agree far tighter.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file
from transformers import ASTConfig as HFConfig
from transformers import ASTForAudioClassification

from ast_audio import AST, ASTConfig, CheckpointError, ConfigError
from ast_audio.weights.checkpoint import load_model, save_hf
from ast_audio.weights.convert import hf_to_native, native_to_hf, native_to_reference, reference_to_native

ATOL = 1e-4  # logits, float32


def randomise_(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random (LayerNorm weights around 1), so no mapping error can hide behind an init value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.2
            is_norm_weight = p.dim() == 1 and name.endswith("weight") and ("norm" in name)
            p.copy_(noise + 1.0 if is_norm_weight else noise)


def hf_model(dim: int, heads: int, depth: int, tdim: int, stride: int, eps: float, classes: int = 7,
             seed: int = 0) -> ASTForAudioClassification:
    config = HFConfig(hidden_size=dim, num_attention_heads=heads, num_hidden_layers=depth, intermediate_size=4 * dim,
                      max_length=tdim, frequency_stride=stride, time_stride=stride, layer_norm_eps=eps,
                      num_labels=classes, id2label={i: f"sound {i}" for i in range(classes)},
                      label2id={f"sound {i}": i for i in range(classes)})
    torch.manual_seed(seed)
    model = ASTForAudioClassification(config).eval()
    randomise_(model, seed)
    return model


def hf_logits(model: ASTForAudioClassification, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_values=x).logits


def our_logits(model: AST, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


# (width, heads, depth, frames, stride, eps): tiny and base widths, stride 10 and 16, 128/512/1024 frames.
CASES = [
    (192, 3, 2, 128, 10, 1e-12),
    (192, 3, 2, 512, 16, 1e-6),
    (192, 3, 1, 1024, 10, 1e-6),
    (768, 12, 1, 128, 16, 1e-12),
    (768, 12, 2, 128, 10, 1e-6),
]


@pytest.mark.parametrize("dim,heads,depth,tdim,stride,eps", CASES)
def test_hf_folder_loads_with_same_logits(tmp_path, dim, heads, depth, tdim, stride, eps):
    hf = hf_model(dim, heads, depth, tdim, stride, eps)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf")

    c = ours.config
    assert (c.embed_dim, c.num_heads, c.depth, c.input_tdim, c.fstride, c.tstride) == (dim, heads, depth, tdim,
                                                                                       stride, stride)
    assert c.layer_norm_eps == c.head_norm_eps == eps
    assert ours.labels == tuple(f"sound {i}" for i in range(7))
    x = torch.randn(2, tdim, 128, generator=torch.Generator().manual_seed(1))
    expected = hf_logits(hf, x)
    assert expected.std() > 0.1  # the comparison means something
    torch.testing.assert_close(our_logits(ours, x), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("dim,heads,depth,tdim,stride,eps", CASES[:2] + CASES[3:4])
def test_save_hf_loads_in_transformers(tmp_path, dim, heads, depth, tdim, stride, eps):
    torch.manual_seed(3)
    config = ASTConfig(model_size="base384", embed_dim=dim, num_heads=heads, depth=depth, input_tdim=tdim,
                       fstride=stride, tstride=stride, num_classes=4, layer_norm_eps=eps, head_norm_eps=eps)
    ours = AST(config, labels=["a", "b", "c", "d"], multi_label=False).eval()
    randomise_(ours, 4)
    save_hf(ours, tmp_path / "export")

    hf, info = ASTForAudioClassification.from_pretrained(tmp_path / "export", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.id2label == {0: "a", 1: "b", 2: "c", 3: "d"}
    assert hf.config.problem_type == "single_label_classification"
    x = torch.randn(2, tdim, 128, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(hf_logits(hf.eval(), x), our_logits(ours, x), atol=ATOL, rtol=0)

    again = load_model(tmp_path / "export")  # and back: our own export reads as a transformers folder
    assert again.multi_label is False and again.labels == ("a", "b", "c", "d")
    torch.testing.assert_close(our_logits(again, x), our_logits(ours, x), atol=ATOL, rtol=0)


def test_save_hf_with_reference_eps_differs_only_slightly(tmp_path):
    """transformers has one eps: the reference head LayerNorm (1e-5) becomes 1e-6 there.

    Measured: 6e-6 to 1.4e-5 on O(1) logits, inside ATOL."""
    torch.manual_seed(0)
    ours = AST(ASTConfig(model_size="tiny224", depth=2, input_tdim=128, num_classes=6)).eval()  # eps 1e-6 / 1e-5
    randomise_(ours, 1)
    save_hf(ours, tmp_path / "export")
    hf = ASTForAudioClassification.from_pretrained(tmp_path / "export").eval()
    assert hf.config.layer_norm_eps == 1e-6
    x = torch.randn(2, 128, 128, generator=torch.Generator().manual_seed(2))
    difference = (hf_logits(hf, x) - our_logits(ours, x)).abs().max().item()
    assert difference < ATOL


def test_preprocessor_config_is_written_and_read(tmp_path):
    torch.manual_seed(0)
    ours = AST(ASTConfig(model_size="tiny224", embed_dim=32, num_heads=4, depth=1, input_tdim=128, num_classes=2))
    save_hf(ours, tmp_path / "export")
    pre = json.loads((tmp_path / "export" / "preprocessor_config.json").read_text())
    assert pre["feature_extractor_type"] == "ASTFeatureExtractor"
    assert (pre["max_length"], pre["num_mel_bins"], pre["sampling_rate"]) == (128, 128, 16000)
    assert (pre["mean"], pre["std"]) == (ours.frontend.mean, ours.frontend.std)
    pre.update(mean=-1.5, std=3.25)
    (tmp_path / "export" / "preprocessor_config.json").write_text(json.dumps(pre))
    loaded = load_model(tmp_path / "export")
    assert (loaded.frontend.mean, loaded.frontend.std, loaded.frontend.target_length) == (-1.5, 3.25, 128)


def test_v5_spelled_state_dict_loads(tmp_path):
    """A state_dict() saved straight from a transformers-5 model carries the v5 names (layers.N.attention.q_proj)."""
    hf = hf_model(64, 2, 2, 128, 10, 1e-12)
    folder = tmp_path / "v5"
    hf.save_pretrained(folder)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    assert any(".layers.0.attention.q_proj." in k for k in state)
    save_file(state, str(folder / "model.safetensors"))
    x = torch.randn(1, 128, 128)
    torch.testing.assert_close(our_logits(load_model(folder), x), hf_logits(hf, x), atol=ATOL, rtol=0)


def _v5_to_v4_by_hand(name: str) -> str:
    """The spec §11 names, written out independently of ast_audio.weights.convert."""
    table = [
        (r"\.layers\.(\d+)\.attention\.q_proj\.", r".encoder.layer.\1.attention.attention.query."),
        (r"\.layers\.(\d+)\.attention\.k_proj\.", r".encoder.layer.\1.attention.attention.key."),
        (r"\.layers\.(\d+)\.attention\.v_proj\.", r".encoder.layer.\1.attention.attention.value."),
        (r"\.layers\.(\d+)\.attention\.o_proj\.", r".encoder.layer.\1.attention.output.dense."),
        (r"\.layers\.(\d+)\.mlp\.fc1\.", r".encoder.layer.\1.intermediate.dense."),
        (r"\.layers\.(\d+)\.mlp\.fc2\.", r".encoder.layer.\1.output.dense."),
        (r"\.layers\.(\d+)\.layernorm_", r".encoder.layer.\1.layernorm_"),
    ]
    for pattern, replacement in table:
        name = re.sub(pattern, replacement, name)
    return name


def test_hand_written_v4_folder_loads(tmp_path):
    hf = hf_model(64, 2, 2, 128, 16, 1e-6)
    folder = tmp_path / "v4"
    hf.config.save_pretrained(folder)
    v4 = {_v5_to_v4_by_hand(k): v.contiguous() for k, v in hf.state_dict().items()}
    assert "audio_spectrogram_transformer.encoder.layer.1.attention.attention.value.weight" in v4
    assert not any(".layers." in k for k in v4)
    save_file(v4, str(folder / "model.safetensors"))
    x = torch.randn(1, 128, 128)
    torch.testing.assert_close(our_logits(load_model(folder), x), hf_logits(hf, x), atol=ATOL, rtol=0)


def test_pytorch_model_bin_folder_loads(tmp_path):
    hf = hf_model(64, 2, 1, 128, 10, 1e-12)
    folder = tmp_path / "bin"
    hf.config.save_pretrained(folder)
    torch.save({_v5_to_v4_by_hand(k): v for k, v in hf.state_dict().items()}, folder / "pytorch_model.bin")
    x = torch.randn(1, 128, 128)
    torch.testing.assert_close(our_logits(load_model(folder), x), hf_logits(hf, x), atol=ATOL, rtol=0)


def test_hf_folder_with_overrides_adapts(tmp_path):
    hf = hf_model(64, 2, 1, 1024, 10, 1e-12, classes=527)
    hf.save_pretrained(tmp_path / "hf")
    model = load_model(tmp_path / "hf", input_tdim=512, num_classes=50)
    assert (model.config.input_tdim, model.config.num_classes, model.config.grid) == (512, 50, (12, 50))
    assert model.labels[0] == "class_0" and model.frontend.target_length == 512
    assert model(torch.randn(1, 512, 128)).shape == (1, 50)


def test_converters_round_trip_and_split_qkv_in_order():
    torch.manual_seed(0)
    ours = AST(ASTConfig(model_size="tiny224", embed_dim=32, num_heads=4, depth=2, input_tdim=128, num_classes=3))
    state = ours.state_dict()
    hf = native_to_hf(state)
    qkv = state["blocks.1.attn.qkv.weight"]
    layer = "audio_spectrogram_transformer.encoder.layer.1.attention.attention."
    assert torch.equal(hf[layer + "query.weight"], qkv[:32])
    assert torch.equal(hf[layer + "key.weight"], qkv[32:64])
    assert torch.equal(hf[layer + "value.weight"], qkv[64:])
    back = hf_to_native(hf)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    ref = native_to_reference(state)
    assert "module.v.blocks.0.attn.qkv.weight" in ref and "module.mlp_head.1.bias" in ref
    ref["module.v.head.weight"] = torch.zeros(1000, 32)  # unused ImageNet heads are dropped
    ref["module.v.head_dist.bias"] = torch.zeros(1000)
    assert reference_to_native(ref).keys() == state.keys()


def test_converters_name_unexpected_keys():
    with pytest.raises(CheckpointError, match="audio_spectrogram_transformer.encoder.layer.0.extra.weight"):
        hf_to_native({"audio_spectrogram_transformer.encoder.layer.0.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="lacks the attention weight of value"):
        hf_to_native({f"audio_spectrogram_transformer.layers.0.attention.{p}_proj.weight": torch.zeros(2, 2)
                      for p in "qk"})
    with pytest.raises(CheckpointError, match="module.v.fc_norm.weight"):
        reference_to_native({"module.v.fc_norm.weight": torch.zeros(1), "module.mlp_head.0.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="bogus"):
        native_to_hf({"bogus": torch.zeros(1)})


def test_save_hf_refuses_what_transformers_cannot_express(tmp_path):
    rect = AST(ASTConfig(model_size="tiny224", embed_dim=32, num_heads=4, depth=1, input_tdim=128, fshape=16,
                         tshape=8, num_classes=2))
    with pytest.raises(ConfigError, match="square patches"):
        save_hf(rect, tmp_path / "a")
    mean_pool = AST(ASTConfig(model_size="tiny224", embed_dim=32, num_heads=4, depth=1, input_tdim=128,
                              pooling="mean", num_classes=2))
    with pytest.raises(ConfigError, match="pooling"):
        save_hf(mean_pool, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
