"""`ast-audio train --recipe sed` (issue 20 part 2): the frame model a run starts from, the loss of strong and weak
items in one batch, the config round trip, and a smoke run through the real CLI on generated scenes."""

from __future__ import annotations

import json

import torch

from ast_audio.config import FrameHeadConfig
from ast_audio.train.engine import build_model
from ast_audio.train.recipes import TrainConfig, make_recipe
from ast_audio.train.sed import SedForward, sed_loss, with_frame_head
from ast_audio.weights.checkpoint import load_model, save_model
from conftest import run_main, tiny_model

HEAD = FrameHeadConfig(hidden=16)


def test_recipe_defaults_and_round_trip():
    config = make_recipe("sed", data="scenes", frame_head=HEAD)
    assert config.main_metric == "psds1" and config.multi_label and config.selection == "best"
    assert config.augment.timem == 20 and config.init == "audioset"
    again = TrainConfig.from_dict(json.loads(config.to_json()))
    assert again == config and again.frame_head == HEAD


def test_checkpoint_init_keeps_the_encoder_and_adds_a_frame_head(tmp_path):
    clip = tiny_model(seed=4)  # 5 classes, 128 frames
    save_model(clip, tmp_path / "clip")
    config = make_recipe("sed", init=f"checkpoint:{tmp_path / 'clip'}", target_length=128, frame_head=HEAD)
    model = with_frame_head(build_model(config, [f"c{i}" for i in range(5)], True), config.frame_head)
    assert model.config.frame_head == HEAD and model.has_frame_head
    reference = clip.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith(("frame_head.", "mlp_head.")):  # the clip head follows the clip recipes' rule
            assert torch.equal(value, reference[key]), key  # the encoder is the checkpoint's
    clip_logits, frame_logits = model.forward_both(torch.randn(2, 128, 128))
    assert clip_logits.shape == (2, 5) and frame_logits.shape == (2, model.config.grid[1], 5)


def test_sed_loss_strong_and_weak_items_in_one_batch():
    """Strong items: BCE on frame logits; weak items: BCE of the pooled frame scores; all: BCE of the clip head."""
    torch.manual_seed(0)
    clip_logits, frame_logits = torch.randn(3, 2), torch.randn(3, 4, 2)
    weak = torch.rand(3, 2) * 0.8 + 0.1
    frames = (torch.rand(3, 4, 2) > 0.5).float()
    clips = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    strong = torch.tensor([True, False, True])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = (bce(clip_logits, clips) + bce(frame_logits[[0, 2]], frames[[0, 2]])
                + torch.nn.functional.binary_cross_entropy(weak[[1]], clips[[1]]))
    assert torch.allclose(sed_loss((clip_logits, frame_logits, weak), frames, clips, strong), expected)
    only_strong = sed_loss((clip_logits, frame_logits, weak), frames, clips, torch.ones(3, dtype=torch.bool))
    assert torch.allclose(only_strong, bce(clip_logits, clips) + bce(frame_logits, frames))


def test_sed_forward_gives_the_model_outputs():
    model = tiny_model(frame_head=HEAD)
    x = torch.randn(2, 128, 128)
    clip_logits, frame_logits, weak = SedForward(model)(x)
    assert torch.allclose(clip_logits, model(x), atol=1e-6)
    assert torch.allclose(weak, model.weak_probabilities(frame_logits), atol=1e-6)


def test_train_sed_smoke_through_the_cli(tmp_path, capsys):
    """scenes -> train --recipe sed (a tiny model from scratch, 2 epochs) -> a frame model selected on PSDS1."""
    rc, _, err = run_main(capsys, "scenes", tmp_path / "scenes", "--count", "3", "--seconds", "6", "--seed", "1")
    assert rc == 0, err
    rc, _, err = run_main(capsys, "train", "--recipe", "sed", "--data", tmp_path / "scenes", "--init", "none",
                          "--model-config", '{"embed_dim": 32, "depth": 1, "num_heads": 2}', "--target-length",
                          "128", "--epochs", "2", "--batch-size", "4", "--num-workers", "0", "-o", tmp_path / "run",
                          "--set", 'frame_head={"hidden": 16}', "--set", "tensorboard=false", "--set",
                          "progress=false")
    assert rc == 0, err
    assert "psds1" in err and "1 of 3 strongly labelled files validate" in err
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[-1] == "psds1"
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["selection"] == "best" and len(result["epochs"]) == 2
    assert all(0.0 <= row["psds1"] <= 1.0 for row in result["epochs"])
    model = load_model(tmp_path / "run" / "model")
    assert model.config.frame_head == HEAD and model.labels == ("chirp", "click_train", "noise_burst", "tone")


def test_sed_recipe_refuses_a_folder_without_strong_tsv(tmp_path, capsys):
    tmp_path.joinpath("data").mkdir()
    rc, _, err = run_main(capsys, "train", "--recipe", "sed", "--data", tmp_path / "data", "--init", "none",
                          "-o", tmp_path / "run")
    assert rc != 0 and "no strong.tsv" in err and "\n" not in err.strip()


def test_sed_refuses_the_linear_probe(tmp_path, capsys):
    rc, _, err = run_main(capsys, "scenes", tmp_path / "scenes", "--count", "2", "--seconds", "3")
    assert rc == 0
    rc, _, err = run_main(capsys, "train", "--recipe", "sed", "--data", tmp_path / "scenes", "--init", "none",
                          "--model-config", '{"embed_dim": 32, "depth": 1, "num_heads": 2}', "--target-length",
                          "128", "--finetune", "linear", "-o", tmp_path / "run", "--num-workers", "0")
    assert rc != 0 and "--finetune linear" in err
