"""Recipe defaults against the spec's table (§3.2, typed in here from the spec), and TrainConfig behaviour."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from ast_audio.cli import main
from ast_audio.config import FrontendConfig
from ast_audio.errors import ConfigError
from ast_audio.train.recipes import FLAT_FIELDS, RECIPES, AugmentConfig, ModelSpec, TrainConfig, make_recipe, milestones

# spec §3.2, one column per recipe (values copied from the table, not from the code)
SPEC = {
    "audioset-full": dict(init="imagenet", lr=1e-5, epochs=5, batch_size=12, balanced_sampling=True, warmup=True,
                          lr_scheduler_start=2, lr_scheduler_step=1, lr_scheduler_decay=0.5, loss="bce",
                          metric="map", mixup=0.5, freqm=48, timem=192, noise=False, target_length=1024,
                          mean=-4.2677393, std=4.5689974, selection="wa", wa_start=1, wa_end=5, layout="audioset"),
    "audioset-balanced": dict(init="imagenet", lr=5e-5, epochs=25, batch_size=12, balanced_sampling=False,
                              warmup=True, lr_scheduler_start=10, lr_scheduler_step=5, lr_scheduler_decay=0.5,
                              loss="bce", metric="map", mixup=0.5, freqm=48, timem=192, noise=False,
                              target_length=1024, mean=-4.2677393, std=4.5689974, selection="wa", wa_start=6,
                              wa_end=25, layout="audioset"),
    "esc50": dict(init="audioset", lr=1e-5, epochs=25, batch_size=48, balanced_sampling=False, warmup=False,
                  lr_scheduler_start=5, lr_scheduler_step=1, lr_scheduler_decay=0.85, loss="ce", metric="acc",
                  mixup=0.0, freqm=24, timem=96, noise=False, target_length=512, mean=-6.6268077, std=5.358466,
                  selection="best", layout="esc50", folds=(1, 2, 3, 4, 5)),
    "speechcommands": dict(init="imagenet", lr=2.5e-4, epochs=30, batch_size=128, balanced_sampling=False,
                           warmup=False, lr_scheduler_start=5, lr_scheduler_step=1, lr_scheduler_decay=0.85,
                           loss="bce", metric="acc", mixup=0.6, freqm=48, timem=48, noise=True, target_length=128,
                           mean=-6.845978, std=5.5654526, selection="best", layout="speechcommands"),
}
COMMON = dict(betas=(0.95, 0.999), weight_decay=5e-7, warmup_steps=1000, warmup_interval=50, mixup_alpha=10.0,
              sample_rate=16000, num_mel_bins=128, model_size="base384", fstride=10, tstride=10,
              eval_batch_factor=2)


def field(config: TrainConfig, flat: str):
    """A config value by its flat (spec table) name: the front-end, augmentation and model fields are nested."""
    part, key = FLAT_FIELDS.get(flat, (None, flat))
    return getattr(getattr(config, part) if part else config, key)


@pytest.mark.parametrize("name", sorted(SPEC))
def test_recipe_defaults_equal_spec_table(name):
    config = make_recipe(name)
    for key, value in {**SPEC[name], **COMMON}.items():
        assert field(config, key) == value, f"{name}.{key}"


def test_esc50_lr_without_audioset_pretraining_is_1e_4():
    # spec §3.2: "1e-5 (1e-4 if AudioSet pretraining is off)"
    assert make_recipe("esc50", init="none").lr == 1e-4
    assert make_recipe("esc50", init="imagenet:/x/deit.pth").lr == 1e-4
    assert make_recipe("esc50", init="audioset:/x/as.pth").lr == 1e-5
    assert make_recipe("esc50", init="none", lr=3e-5).lr == 3e-5  # an explicit lr wins


def test_milestones_and_effective_schedule_shape():
    assert milestones(make_recipe("audioset-full"))[:4] == [2, 3, 4, 5]
    assert milestones(make_recipe("audioset-balanced"))[:4] == [10, 15, 20, 25]
    assert milestones(make_recipe("esc50"))[:3] == [5, 6, 7]
    assert milestones(make_recipe("speechcommands"))[-1] == 999


def test_folder_recipe_follows_the_data_and_readme_guidance():
    config = make_recipe("folder", target_length=500)
    assert (config.init, config.loss, config.metric) == ("none", "auto", "auto")
    assert config.augment.timem == 100 and config.augment.freqm == 48  # ~20 % of the frames, 48 of 128 mel bins
    assert (config.frontend.mean, config.frontend.std) == (-4.2677393, 4.5689974)  # AudioSet stats (spec §2.1)
    single, multi = config.resolve(multi_label=False), config.resolve(multi_label=True)
    assert (single.loss, single.metric, single.main_metric) == ("ce", "acc", "acc")
    assert (multi.loss, multi.metric, multi.main_metric) == ("bce", "map", "mAP")
    assert make_recipe("folder", timem=7).augment.timem == 7


@pytest.mark.parametrize("name", [r for r in RECIPES if r != "distill"])  # distill needs logits: test_distill.py
def test_json_round_trip(name):
    config = make_recipe(name, model_config={"embed_dim": 32, "depth": 2}, init="none")
    again = TrainConfig.from_dict(json.loads(config.to_json()))
    assert again == config


@pytest.mark.parametrize("changes,match", [
    (dict(loss="mse"), "loss"), (dict(epochs=0), "epochs"), (dict(init="bogus:x"), "init"),
    (dict(init="checkpoint"), "checkpoint:PATH"), (dict(model_config={"width": 3}), "model_config"),
    (dict(init="imagenet:/a.pth", model_config={"depth": 2}), "from scratch"), (dict(wa_start=6, wa_end=2), "wa"),
    (dict(mixup=1.5), "mixup"), (dict(layout="kaldi"), "layout"),
])
def test_bad_values_raise_config_error(changes, match):
    with pytest.raises(ConfigError, match=match):
        make_recipe("folder", **changes)


def test_unknown_field_and_recipe():
    with pytest.raises(ConfigError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ConfigError, match="unknown recipe"):
        make_recipe("imagenet")


def test_print_config_cli(tmp_path):
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(["train", "--recipe", "audioset-full", "--data", str(tmp_path / "train.json"), "--print-config",
                     "--epochs", "3", "--set", "mixup=0.25", "--model-size", "base224"])
    assert code == 0
    printed = json.loads(buffer.getvalue())
    assert printed["epochs"] == 3 and printed["augment"]["mixup"] == 0.25
    assert printed["model"]["model_size"] == "base224"
    assert printed["lr"] == 1e-5 and printed["balanced_sampling"] is True
    assert TrainConfig.from_dict(printed).data == str(tmp_path / "train.json")


def test_config_nests_typed_parts_and_reads_flat_names():
    """frontend, augment and model are typed configs; flat names (recipes, --set, configs saved before the nesting)
    land in them, in one place; model_config sets the from-scratch model fields."""
    config = make_recipe("esc50", freqm=12, num_mel_bins=64, fstride=12, init="none",
                         model_config={"embed_dim": 32, "depth": 2, "num_heads": 4})
    assert isinstance(config.frontend, FrontendConfig) and isinstance(config.augment, AugmentConfig)
    assert isinstance(config.model, ModelSpec)
    assert (config.frontend.target_length, config.frontend.num_mel_bins) == (512, 64)
    assert config.augment.freqm == 12 and (config.model.fstride, config.model.embed_dim) == (12, 32)
    flat = {k: v for k, v in config.to_dict().items() if k not in ("frontend", "augment", "model")}
    flat.update({name: field(config, name) for name in FLAT_FIELDS})
    assert TrainConfig.from_dict(flat) == config  # a flat (old-style) config reads back the same
    ast_config = config.model.ast_config(config.frontend, num_classes=50)
    assert (ast_config.input_tdim, ast_config.input_fdim, ast_config.embed_dim) == (512, 64, 32)
    with pytest.raises(ConfigError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"frontend": {"mean": 0.0}, "width": 3})
    with pytest.raises(ConfigError, match="frontend"):
        TrainConfig.from_dict({"frontend": {"hop": 3}})
