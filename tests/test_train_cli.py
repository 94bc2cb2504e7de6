"""`ast-audio train / eval / average` end to end on generated data in the real layouts, with a 32-wide 2-layer AST.

Every recipe runs for real (1-3 epochs); outputs are checked against independent computations: scikit-learn metrics
of the model's own outputs, hand means of saved weights, the spec's lr numbers, a resumed run against an
uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import average_precision_score, roc_auc_score

from ast_audio.cli import main
from ast_audio.train.data import ClipDataset
from ast_audio.train.layouts import load_splits
from ast_audio.train.outputs import METRIC_COLUMNS
from ast_audio.weights.checkpoint import load_model
from fake_datasets import make_audioset, make_esc50, make_folder, make_speechcommands

BIN = Path(sys.executable).parent
TINY = ["--model-config", '{"embed_dim": 32, "depth": 2, "num_heads": 4}', "--init", "none", "--num-workers", "0",
        "--no-progress"]


def _train(*args: str) -> int:
    return main(["train", *TINY, *args])


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("folder") / "data", classes=("tone", "chirp", "noise"),
                       clips_per_class=6)


@pytest.fixture(scope="module")
def folder_run(folder_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("folder_run") / "out"
    assert _train("--recipe", "folder", "--data", str(folder_data), "-o", str(out), "--epochs", "2",
                  "--batch-size", "4", "--target-length", "100") == 0
    return out


def test_folder_recipe_outputs(folder_run, folder_data):
    rows = _rows(folder_run / "metrics.csv")
    assert list(rows[0]) == list(METRIC_COLUMNS) and [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["lr"]) == 1e-4 for r in rows)  # folder recipe: constant until epoch 5
    assert (folder_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(p.name.startswith("events.out.tfevents") for p in (folder_run / "tb").iterdir())
    result = json.loads((folder_run / "result.json").read_text())
    assert result["selection"] == "best" and result["best_epoch"] in (1, 2)
    model = load_model(folder_run / "model")
    assert model.labels == ("chirp", "noise", "tone") and model.multi_label is False  # CE model: softmax scores
    assert model.config.embed_dim == 32 and model.config.input_tdim == 100
    best = rows[result["best_epoch"] - 1]
    assert float(best["acc"]) == max(float(r["acc"]) for r in rows)


def test_trained_model_tags_a_file(folder_run, folder_data):
    wav = next((folder_data / "tone").glob("*.wav"))
    proc = subprocess.run([str(BIN / "ast-audio"), "tag", "--checkpoint", str(folder_run / "model"), str(wav),
                           "--format", "json", "--top-k", "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    top = json.loads(proc.stdout)[0]["labels"]
    assert {t["label"] for t in top} == {"chirp", "noise", "tone"}
    assert sum(t["score"] for t in top) == pytest.approx(1.0, abs=1e-4)  # softmax over the 3 classes


def _independent_probs(checkpoint: Path, data: Path) -> tuple[np.ndarray, np.ndarray]:
    model = load_model(checkpoint)
    valid = load_splits("folder", data).valid
    items = [ClipDataset(valid, model.frontend)[i] for i in range(len(valid))]
    x = torch.stack([it[0] for it in items])
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=-1).double().numpy()
    return probs, torch.stack([it[1] for it in items]).numpy()


def test_eval_and_ensemble_match_sklearn(folder_run, folder_data, capsys):
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(folder_run / "model"), "--layout", "folder", "--data",
                 str(folder_data), "--split", "valid"]) == 0
    single = json.loads(capsys.readouterr().out)
    probs, targets = _independent_probs(folder_run / "model", folder_data)
    sk_map = np.mean([average_precision_score(targets[:, c], probs[:, c]) for c in range(3)])
    sk_auc = np.mean([roc_auc_score(targets[:, c], probs[:, c]) for c in range(3)])
    assert single["mAP"] == pytest.approx(sk_map, abs=1e-6)  # float32 logits on both sides
    assert single["mAUC"] == pytest.approx(sk_auc, abs=1e-6)
    assert single["acc"] == pytest.approx(np.mean(probs.argmax(1) == targets.argmax(1)), abs=1e-12)

    assert main(["eval", "--checkpoint", str(folder_run / "model"), "--ensemble", str(folder_run / "checkpoint"),
                 "--layout", "folder", "--data", str(folder_data), "--split", "valid"]) == 0
    ensemble = json.loads(capsys.readouterr().out)
    other, _ = _independent_probs(folder_run / "checkpoint", folder_data)
    mean = (probs + other) / 2
    assert ensemble["mAP"] == pytest.approx(np.mean([average_precision_score(targets[:, c], mean[:, c])
                                                     for c in range(3)]), abs=1e-6)
    assert len(ensemble["checkpoints"]) == 2


def test_average_command_and_refusal(folder_run, tmp_path, capsys):
    a, b = folder_run / "model", folder_run / "checkpoint"
    assert main(["average", str(a), str(b), "-o", str(tmp_path / "wa")]) == 0
    got, wa, wb = _weights(tmp_path / "wa"), _weights(a), _weights(b)
    for key, value in got.items():
        assert torch.allclose(value.double(), (wa[key].double() + wb[key].double()) / 2, atol=1e-7, rtol=0), key
    other = tmp_path / "other"
    assert _train("--recipe", "folder", "--data", str(folder_run.parent / "missing"), "-o", str(other)) == 1
    from ast_audio.weights.checkpoint import save_model
    from conftest import tiny_model

    save_model(tiny_model(num_classes=3), tmp_path / "different")
    capsys.readouterr()
    assert main(["average", str(a), str(tmp_path / "different"), "-o", str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ast-audio: error:") and "differs" in err and "\n" not in err
    assert not (tmp_path / "bad").exists()


def test_esc50_all_folds_summary(tmp_path):
    data = make_esc50(tmp_path / "esc", classes=2, clips_per_class_per_fold=1, seconds=0.5)
    out = tmp_path / "out"
    assert _train("--recipe", "esc50", "--data", str(data), "-o", str(out), "--epochs", "2", "--batch-size", "4",
                  "--target-length", "64") == 0
    summary = json.loads((out / "summary.json").read_text())
    per_fold = {k: [float(r["acc"]) for r in _rows(out / f"fold{k}" / "metrics.csv")] for k in range(1, 6)}
    means = [np.mean([per_fold[k][e] for k in range(1, 6)]) for e in range(2)]
    best = int(np.argmax(means))  # spec §3.3: one epoch for all folds, by the fold-averaged accuracy
    assert summary["best_epoch"] == best + 1
    assert summary["fold_values"] == pytest.approx([per_fold[k][best] for k in range(1, 6)], abs=1e-6)
    assert summary["mean"] == pytest.approx(means[best], abs=1e-6)
    assert (out / "acc_fold.csv").read_text().splitlines()[0] == "fold,acc"
    for k in range(1, 6):
        assert load_model(out / f"fold{k}" / "model").config.num_classes == 2


def test_speechcommands_from_imagenet_schedule_and_test_split(tmp_path):
    from helpers import make_imagenet

    data = make_speechcommands(tmp_path / "sc", clips_per_word=6)
    deit = make_imagenet(side=24, depth=2, dim=32)  # a small random DeiT with the real timm key names
    torch.save({"model": deit}, tmp_path / "deit.pth")
    out = tmp_path / "out"
    assert main(["train", "--recipe", "speechcommands", "--data", str(data), "-o", str(out), "--epochs", "3",
                 "--batch-size", "4", "--set", "lr_scheduler_start=2", "--init", f"imagenet:{tmp_path / 'deit.pth'}",
                 "--num-workers", "0", "--no-progress"]) == 0
    lrs = [float(r["lr"]) for r in _rows(out / "metrics.csv")]
    assert lrs == pytest.approx([2.5e-4, 2.5e-4, 2.5e-4 * 0.85], rel=1e-5)  # decays after epoch 2's validation
    test = json.loads((out / "test_result.json").read_text())
    assert test["clips"] == 3 and 0.0 <= test["acc"] <= 1.0
    model = load_model(out / "model")
    assert model.multi_label is True  # SC trains with BCE (spec §3.1): sigmoid scores
    assert model.frontend.mean == pytest.approx(-6.845978)
    assert (model.config.embed_dim, model.config.depth, model.config.grid) == (32, 2, (12, 12))  # 128 frames


def test_audioset_full_weight_averaging(tmp_path):
    train_json, eval_json, label_csv = make_audioset(tmp_path / "as", classes=4, train_clips=12, eval_clips=6)
    out = tmp_path / "out"
    assert _train("--recipe", "audioset-full", "--data", str(train_json), "--eval-data", str(eval_json),
                  "--labels", str(label_csv), "-o", str(out), "--epochs", "2", "--batch-size", "4",
                  "--target-length", "100", "--set", "warmup_steps=4", "--set", "warmup_interval=2") == 0
    rows = _rows(out / "metrics.csv")
    # staircase warm-up over 4 steps in steps of 2 (3 steps per epoch): epoch 1 ends at step 2 -> lr/2,
    # epoch 2 at step 4 -> lr (no decay yet: the first milestone is 2, after epoch 2)
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.5e-5, 1e-5], rel=1e-6)
    averaged, e1, e2 = _weights(out / "model"), _weights(out / "models" / "epoch_1"), _weights(out / "models" /
                                                                                                "epoch_2")
    for key, value in averaged.items():
        assert torch.allclose(value.double(), (e1[key].double() + e2[key].double()) / 2, atol=1e-7, rtol=0), key
    wa = json.loads((out / "wa_result.json").read_text())
    assert wa["epochs"] == [1, 2] and wa["clips"] == 6
    model = load_model(out / "model")
    assert model.multi_label is True and model.config.num_classes == 4


def test_audioset_balanced_short_run_keeps_last_epoch(tmp_path):
    train_json, eval_json, label_csv = make_audioset(tmp_path / "as", classes=3, train_clips=6, eval_clips=3)
    out = tmp_path / "out"
    assert _train("--recipe", "audioset-balanced", "--data", str(train_json), "--eval-data", str(eval_json),
                  "--labels", str(label_csv), "-o", str(out), "--epochs", "1", "--batch-size", "3",
                  "--target-length", "64") == 0
    result = json.loads((out / "result.json").read_text())
    assert result["selection"] == "last"  # 1 epoch < wa_start 6: nothing to average
    assert torch.equal(_weights(out / "model")["pos_embed"], _weights(out / "checkpoint")["pos_embed"])


def test_existing_output_needs_resume(folder_run, folder_data):
    assert _train("--recipe", "folder", "--data", str(folder_data), "-o", str(folder_run)) == 1


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    # Three runs of 4 short epochs (24 clips of 100 frames): the kill lands between epochs, the checks are bitwise.
    data = make_folder(tmp_path / "data", classes=("tone", "chirp", "noise", "am"), clips_per_class=6)
    args = ["--recipe", "folder", "--data", str(data), "--epochs", "4", "--batch-size", "4", "--target-length",
            "100", "--set", "mixup=0.5", "--seed", "3", *TINY]
    full = tmp_path / "full"
    assert main(["train", *args, "-o", str(full)]) == 0

    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([str(BIN / "ast-audio"), "train", *args, "-o", str(killed), "--num-workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    state = killed / "checkpoint" / "train_state.pt"
    deadline = time.monotonic() + 240
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # the process we started, by its id
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    epoch_at_kill = torch.load(state, weights_only=True)["epoch"]
    assert 1 <= epoch_at_kill < 4 and not (killed / "result.json").exists()

    resumed = subprocess.run([str(BIN / "ast-audio"), "train", *args, "-o", str(killed), "--resume"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {killed} after epoch {epoch_at_kill}" in resumed.stderr
    a, b = _weights(full / "checkpoint"), _weights(killed / "checkpoint")
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bitwise: CPU, fixed seed, deterministic data
    assert _rows(full / "metrics.csv") != [] and [r["train_loss"] for r in _rows(full / "metrics.csv")] == \
        [r["train_loss"] for r in _rows(killed / "metrics.csv")]


def test_training_streams_tar_shards(tmp_path, capsys):
    train_json, eval_json, label_csv = make_audioset(tmp_path / "as", classes=3, train_clips=8, eval_clips=4)
    shards = tmp_path / "shards"
    assert main(["prepare", "--layout", "audioset", "--data", str(train_json), "--eval-data", str(eval_json),
                 "--labels", str(label_csv), "-o", str(shards), "--shard-size", "3"]) == 0
    out = tmp_path / "out"
    common = ["--recipe", "audioset-balanced", "--data", str(shards), "--labels", str(label_csv), "--epochs", "2",
              "--batch-size", "4", "--target-length", "64"]
    assert _train(*common, "-o", str(out)) == 1  # no validation set given
    assert "--eval-data" in capsys.readouterr().err
    assert _train(*common, "--eval-data", str(eval_json), "-o", str(out)) == 0
    rows = _rows(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(r["skipped"] == "0" for r in rows)
    assert "training audioset-balanced: 8 train / 4 valid clips" in capsys.readouterr().err
    assert load_model(out / "model").config.num_classes == 3
    # The full recipe's balanced sampler reads the shards' clips by offset (issue 15; it was refused before).
    full = ["--recipe", "audioset-full", "--data", str(shards), "--eval-data", str(eval_json), "--labels",
            str(label_csv), "-o", str(tmp_path / "full"), "--epochs", "1", "--batch-size", "4", "--target-length",
            "64"]
    assert _train(*full) == 0
    assert "training audioset-full: 8 train / 4 valid clips" in capsys.readouterr().err
    assert [r["skipped"] for r in _rows(tmp_path / "full" / "metrics.csv")] == ["0"]


def test_resume_from_the_backup_a_kill_between_the_renames_leaves(tmp_path, monkeypatch, capsys):
    """A kill between atomic_path's two renames (checkpoint -> .checkpoint.old, temporary -> checkpoint) leaves the
    previous epoch only in .checkpoint.old (and an unfinished temporary folder). Simulated: a run interrupted while
    saving epoch 2, then the first rename done by hand. --resume says it restores .checkpoint.old, continues after
    epoch 1, removes the temporary folder and ends with the weights of an uninterrupted run, bit for bit."""
    from ast_audio.train import checkpointing

    data = make_folder(tmp_path / "data", classes=("tone", "chirp", "noise"), clips_per_class=6)
    args = ["--recipe", "folder", "--data", str(data), "--epochs", "3", "--batch-size", "4", "--target-length",
            "100", "--seed", "5"]
    full = tmp_path / "full"
    assert _train(*args, "-o", str(full)) == 0

    real_save = checkpointing.save_checkpoint

    def interrupted_at_epoch_2(folder, model, state):
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # the run dies while saving epoch 2
        real_save(folder, model, state)

    out = tmp_path / "killed"
    monkeypatch.setattr(checkpointing, "save_checkpoint", interrupted_at_epoch_2)
    assert _train(*args, "-o", str(out)) == 130
    monkeypatch.setattr(checkpointing, "save_checkpoint", real_save)
    os.replace(out / "checkpoint", out / ".checkpoint.old")  # atomic_path's first rename, then the kill
    (out / ".checkpoint.x1y2.tmp").mkdir()  # the unfinished new checkpoint
    (out / ".checkpoint.x1y2.tmp" / "model.safetensors").write_bytes(b"partial")
    capsys.readouterr()

    assert _train(*args, "-o", str(out), "--resume") == 0
    err = capsys.readouterr().err
    assert f"restored the previous checkpoint from {out / '.checkpoint.old'}" in err
    assert f"resuming {out} after epoch 1" in err
    assert not (out / ".checkpoint.old").exists() and not (out / ".checkpoint.x1y2.tmp").exists()
    a, b = _weights(full / "checkpoint"), _weights(out / "checkpoint")
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bitwise: CPU, fixed seed, deterministic data
    assert [r["train_loss"] for r in _rows(full / "metrics.csv")] == \
        [r["train_loss"] for r in _rows(out / "metrics.csv")]
