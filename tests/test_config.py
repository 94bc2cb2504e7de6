"""Config validation, defaults equal to the released recipe, JSON round trips."""

from __future__ import annotations

import json

import pytest

from ast_audio import AST, ASTConfig, FrontendConfig
from ast_audio.errors import ConfigError


def test_defaults_are_the_released_audioset_model():
    cfg = ASTConfig()
    assert (cfg.model_size, cfg.embed_dim, cfg.num_heads, cfg.depth) == ("base384", 768, 12, 12)
    assert (cfg.input_fdim, cfg.input_tdim, cfg.fstride, cfg.tstride, cfg.num_classes) == (128, 1024, 10, 10, 527)
    assert (cfg.layer_norm_eps, cfg.head_norm_eps, cfg.pooling) == (1e-6, 1e-5, "tokens")
    fe = FrontendConfig()
    assert (fe.sample_rate, fe.num_mel_bins, fe.target_length) == (16000, 128, 1024)
    assert (fe.mean, fe.std) == (-4.2677393, 4.5689974)
    assert (fe.window_samples, fe.hop_samples) == (400, 160)


@pytest.mark.parametrize("cls,data", [
    (ASTConfig, dict(model_size="tiny224", embed_dim=64, depth=3, num_heads=4, fshape=128, tshape=2, pooling="mean")),
    (FrontendConfig, dict(target_length=512, mean=-6.6268077, std=5.358466)),
])
def test_json_round_trip(cls, data):
    cfg = cls(**data)
    again = cls.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize("changes,match", [
    (dict(model_size="huge"), "model_size"),
    (dict(embed_dim=100, num_heads=12), "divisible"),
    (dict(fstride=0), "fstride"),
    (dict(pooling="max"), "pooling"),
    (dict(fshape=200), "does not fit"),
    (dict(num_classes=2.5), "num_classes"),
])
def test_impossible_configs_raise(changes, match):
    with pytest.raises(ConfigError, match=match):
        ASTConfig(**changes)


def test_unknown_fields_and_mismatched_frontend_raise():
    with pytest.raises(ConfigError, match="unknown"):
        ASTConfig.from_dict({"hidden": 3})
    with pytest.raises(ConfigError, match="frames"):
        AST(ASTConfig(model_size="tiny224", depth=1, input_tdim=128), frontend=FrontendConfig(target_length=1024))
    with pytest.raises(ConfigError, match="label names"):
        AST(ASTConfig(model_size="tiny224", depth=1, input_tdim=128, num_classes=3), labels=["a", "b"])
