"""Engine pieces against hand computations: lr schedule (spec §3.1-3.2 numbers), losses, averaging, checkpoint state,
ESC-50 summary, initialisation, bad clips."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import torch

from ast_audio.errors import CheckpointError
from ast_audio.train import checkpointing, evaluate, optim
from ast_audio.train import engine as E
from ast_audio.train.average import average_models, average_state_dicts
from ast_audio.train.metrics import esc50_summary
from ast_audio.train.recipes import make_recipe
from ast_audio.weights.checkpoint import save_model
from conftest import tiny_model
from fake_datasets import make_folder

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 4}


def _simulate_lrs(config, steps_per_epoch: int) -> tuple[list[float], list[float]]:
    """Drive warm-up + scheduler exactly as train_run does; returns (lr of every step, lr of each epoch's last step)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = optim.make_optimizer(torch.nn.ParameterList([param]), config)
    scheduler = optim.make_scheduler(optimizer, config)
    step_lrs, epoch_lrs, global_step = [], [], 0
    for _ in range(config.epochs):
        for _ in range(steps_per_epoch):
            lr = optim.warmup_lr(config, global_step)
            if lr is not None:
                optim.set_lr(optimizer, lr)
            step_lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            global_step += 1
        epoch_lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    return step_lrs, epoch_lrs


def test_audioset_full_warmup_and_effective_lrs():
    config = make_recipe("audioset-full")
    steps, epochs = _simulate_lrs(config, steps_per_epoch=1100)
    assert steps[:50] == [0.0] * 50  # spec §3.1: lr 0 for the first 50 steps
    assert steps[50:100] == pytest.approx([0.05 * 1e-5] * 50, rel=1e-12)
    assert steps[999] == pytest.approx(0.95e-5, rel=1e-12) and steps[1000] == pytest.approx(1e-5, rel=1e-12)
    assert epochs == pytest.approx([1e-5, 1e-5, 5e-6, 2.5e-6, 1.25e-6], rel=1e-12)  # spec §3.2 [log]


def test_audioset_balanced_and_speechcommands_schedules():
    _, epochs = _simulate_lrs(make_recipe("audioset-balanced"), steps_per_epoch=1010)
    expected = [5e-5] * 10 + [2.5e-5] * 5 + [1.25e-5] * 5 + [6.25e-6] * 5  # halved at 10, 15, 20 (spec §3.2)
    assert epochs == pytest.approx(expected, rel=1e-12)
    _, epochs = _simulate_lrs(make_recipe("speechcommands"), steps_per_epoch=2)
    # spec §3.1: epoch e trains with lr * gamma^(number of milestones <= e - 1), milestones 5, 6, ...
    assert epochs == pytest.approx([2.5e-4 * 0.85 ** max(0, e - 5) for e in range(1, 31)], rel=1e-9)


def test_soft_cross_entropy_against_hand_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5))
    lam = rng.beta(10, 10, size=6)
    a, b = rng.integers(0, 5, size=6), rng.integers(0, 5, size=6)
    targets = np.zeros((6, 5))
    targets[np.arange(6), a] += lam
    targets[np.arange(6), b] += 1 - lam
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    hand = float(np.mean([-(targets[i] * log_softmax[i]).sum() for i in range(6)]))
    got = float(optim.soft_cross_entropy(torch.tensor(logits), torch.tensor(targets)))
    assert abs(got - hand) < 1e-12
    # mixup targets = lam * CE(a) + (1 - lam) * CE(b), which the reference's .long() truncation loses
    mixed = np.mean([-(lam[i] * log_softmax[i, a[i]] + (1 - lam[i]) * log_softmax[i, b[i]]) for i in range(6)])
    assert abs(got - mixed) < 1e-12
    onehot = torch.nn.functional.one_hot(torch.tensor(a), 5).double()
    ce = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(a))
    assert abs(float(optim.soft_cross_entropy(torch.tensor(logits), onehot)) - float(ce)) < 1e-12


def test_validation_loss_is_computed_on_logits():
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(8, 3)) * 3, dtype=torch.float32)
    targets = torch.tensor((rng.random((8, 3)) < 0.4).astype(np.float32))
    pred = evaluate.Predictions(np.arange(8), logits, targets)
    config = make_recipe("audioset-full").resolve(True)
    row = evaluate.epoch_row(1, 1e-5, 0.5, pred, optim.loss_function(config), True,
                             torch.zeros(8, 3, dtype=torch.float64), torch.zeros(8, dtype=torch.float64), 1.0, 0)
    z, y = logits.double().numpy(), targets.double().numpy()
    hand = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))  # BCE with logits, stable form
    assert abs(row["valid_loss"] - hand) < 1e-6  # float32 logits
    p = 1 / (1 + np.exp(-z))
    reference_bug = np.mean(np.maximum(p, 0) - p * y + np.log1p(np.exp(-np.abs(p))))  # loss on sigmoid outputs
    assert abs(row["valid_loss"] - reference_bug) > 1e-2


def test_rng_state_round_trips_through_weights_only_load():
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    state = checkpointing.rng_state()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    buffer.seek(0)
    checkpointing.set_rng_state(torch.load(buffer, weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_average_equals_hand_mean():
    models = [tiny_model(seed=s) for s in (0, 1, 2)]
    averaged = average_models(models)
    for key, value in averaged.state_dict().items():
        hand = (models[0].state_dict()[key].double() + models[1].state_dict()[key].double()
                + models[2].state_dict()[key].double()) / 3
        assert torch.allclose(value.double(), hand, atol=1e-7, rtol=0), key  # float32 rounding of the mean
    state = average_state_dicts([{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}])
    assert state["w"].tolist() == [2.0, 4.0]


def test_average_refuses_different_models():
    with pytest.raises(CheckpointError, match="tstride"):
        average_models([tiny_model(), tiny_model(tstride=12)], ["a", "b"])
    with pytest.raises(CheckpointError, match="names differ"):
        average_state_dicts([{"w": torch.zeros(1)}, {"v": torch.zeros(1)}])
    with pytest.raises(CheckpointError, match="shape"):
        average_state_dicts([{"w": torch.zeros(1)}, {"w": torch.zeros(2)}])


def test_esc50_summary_by_hand():
    rows = {k: [{"epoch": e + 1, "acc": acc} for e, acc in enumerate(accs)]
            for k, accs in {1: [0.5, 0.8, 0.7], 2: [0.6, 0.6, 0.9], 3: [0.4, 0.7, 0.6]}.items()}
    summary = esc50_summary(rows)
    # epoch means: 0.5, 0.7, 0.7333 -> epoch 3 (not each fold's own best)
    assert summary["best_epoch"] == 3
    assert summary["fold_values"] == [0.7, 0.9, 0.6]
    assert summary["mean"] == pytest.approx((0.7 + 0.9 + 0.6) / 3, abs=1e-12)


def test_build_model_inits(tmp_path):
    source = tiny_model(seed=3, num_classes=3)
    save_model(source, tmp_path / "src")
    labels = ["a", "b", "c"]
    base = dict(target_length=128, model_config={})
    cont = E.build_model(make_recipe("folder", init=f"checkpoint:{tmp_path / 'src'}", **base), labels, False)
    as_init = E.build_model(make_recipe("folder", init=f"audioset:{tmp_path / 'src'}", seed=9, **base), labels, False)
    for key, value in source.state_dict().items():
        assert torch.equal(cont.state_dict()[key], value), key  # checkpoint: every weight kept
        if key.startswith("mlp_head.1.weight"):
            assert not torch.equal(as_init.state_dict()[key], value)  # audioset: always a new head (spec §1.5)
        elif not key.startswith("mlp_head"):
            assert torch.equal(as_init.state_dict()[key], value), key
    assert cont.labels == tuple(labels) and cont.multi_label is False
    scratch = E.build_model(make_recipe("folder", target_length=128, model_config=TINY, seed=1), labels, True)
    again = E.build_model(make_recipe("folder", target_length=128, model_config=TINY, seed=1), labels, True)
    assert scratch.config.embed_dim == 32 and scratch.config.num_classes == 3
    assert all(torch.equal(a, b) for a, b in zip(scratch.state_dict().values(), again.state_dict().values(),
                                                 strict=True))


def test_build_model_from_imagenet(tmp_path):
    from helpers import make_imagenet

    deit = make_imagenet(side=24, depth=2, dim=32)
    torch.save(deit, tmp_path / "deit.pth")
    config = make_recipe("speechcommands", init=f"imagenet:{tmp_path / 'deit.pth'}")
    model = E.build_model(config, ["yes", "no"], True)
    # spec §1.4: RGB kernels summed; SC grid 12 x 12 = centre rows and columns 6..17 of the 24 x 24 ImageNet grid
    torch.testing.assert_close(model.patch_embed.proj.weight, deit["patch_embed.proj.weight"].sum(1, keepdim=True))
    grid = deit["pos_embed"][0, 2:].reshape(24, 24, 32)[6:18, 6:18].reshape(144, 32)
    torch.testing.assert_close(model.pos_embed[0, 2:], grid)
    assert model.labels == ("yes", "no") and model.frontend.target_length == 128


def test_imagenet_init_needs_a_path():
    with pytest.raises(Exception, match="imagenet:PATH"):
        E.build_model(make_recipe("speechcommands"), ["a"], True)


def test_bad_clips_are_counted_not_fatal(tmp_path):
    data = make_folder(tmp_path / "data", classes=("tone", "noise"), clips_per_class=6)
    broken = data / "tone" / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00not a wave file")
    config = make_recipe("folder", data=str(data), epochs=1, batch_size=4, target_length=100, model_config=TINY,
                         num_workers=0, progress=False, tensorboard=False, holdout=0.25)
    messages: list[str] = []
    result = E.run(config, tmp_path / "out", printer=messages.append)
    skipped = sum(int(r["skipped"]) for r in result.rows)
    assert skipped == 1
    assert "broken.wav" in (tmp_path / "out" / "bad_clips.txt").read_text()
    assert math.isfinite(result.rows[0]["train_loss"])
    assert any("1 clips skipped" in m for m in messages)


def test_a_time_budget_warns_but_never_stops_training(tmp_path):
    """time_budget_s used to stop after the first epoch past it (the demo at chance on a busy machine): now every
    epoch runs, whatever the clock says, and one warning line says the budget was passed."""
    data = make_folder(tmp_path / "data", classes=("tone", "noise"), clips_per_class=4)
    config = make_recipe("folder", data=str(data), epochs=3, batch_size=4, target_length=100, model_config=TINY,
                         num_workers=0, progress=False, tensorboard=False, holdout=0.25, time_budget_s=1e-9)
    messages: list[str] = []
    result = E.run(config, tmp_path / "out", printer=messages.append)
    assert [int(r["epoch"]) for r in result.rows] == [1, 2, 3]
    assert sum("time budget" in m for m in messages) == 1
