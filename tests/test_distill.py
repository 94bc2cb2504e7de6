"""Distillation (issue 22): stored teacher outputs (views regenerated bit for bit, top-k round trip, CED's filled
targets, ensembles, resume after a kill), students (sizes, training through the engine, checkpoints that load
everywhere) and the one-line errors of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ast_audio import AST, FrontendConfig
from ast_audio.audio.features import FeatureExtractor
from ast_audio.audio.io import load_audio
from ast_audio.config import STUDENT_SIZES, FrameHeadConfig
from ast_audio.errors import ConfigError
from ast_audio.infer.archive import KILL_HOOK
from ast_audio.train import distill as DI
from ast_audio.train import logits as L
from ast_audio.train.recipes import make_recipe
from ast_audio.weights.checkpoint import load_model, save_model
from conftest import run_cli, run_main, tiny_config, write_tone

LABELS = ["a", "b", "c", "d", "e"]
FREQS = (220.0, 440.0, 880.0, 1760.0, 3000.0)


def save_teacher(folder: Path, seed: int = 0, **changes) -> Path:
    """A tiny random teacher (128 frames x 128 bins, 5 named classes, multi-label) saved to `folder`."""
    torch.manual_seed(seed)
    config = tiny_config(**changes)
    model = AST(config, frontend=FrontendConfig(target_length=config.input_tdim), labels=LABELS, multi_label=True)
    save_model(model, folder)
    return folder


def clips(folder: Path, count: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_tone(folder / f"clip{i}.wav", seconds=1.0 + 0.2 * i, freq=FREQS[i % len(FREQS)])
    return folder


def labelled(folder: Path, classes: list[str]) -> Path:
    """A class-folder layout (one tone per class, two clips each) for --eval-data."""
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            write_tone(folder / name / f"{i}.wav", seconds=1.0, freq=FREQS[c % len(FREQS)] * (1 + 0.05 * i))
    return folder


@pytest.fixture
def teacher(tmp_path) -> Path:
    return save_teacher(tmp_path / "teacher")


# ----------------------------------------------------------------------------------------------------------------
# Stored teacher outputs


def test_views_regenerate_the_teachers_features_bit_for_bit(tmp_path, teacher, monkeypatch):
    """The features the teacher was run on (recorded at its call, decoded in a DataLoader worker) equal, bit for bit,
    those the student's dataset regenerates from the stored seeds in this process; and views differ from each other."""
    seen: list[torch.Tensor] = []
    call = DI.Teacher.__call__

    def recording(self, x, batch_size=8):
        seen.append(x.clone())
        return call(self, x, batch_size)

    monkeypatch.setattr(DI.Teacher, "__call__", recording)
    DI.extract_logits([str(teacher)], clips(tmp_path / "audio", 3), tmp_path / "logits", views=4, top_k=3,
                      batch_size=3, workers=1)
    teacher_inputs = torch.cat(seen)  # (3 clips * 4 views, T, F), clip-major
    stored = L.load_logits(tmp_path / "logits")
    source = DI.ClipSource("files", "", list(stored.index["clips"]), None, None)
    dataset = DI.DistillDataset(stored, source, [0, 1, 2], FrontendConfig(target_length=128), views=4, seed=0)
    rows = stored.row()
    for clip in range(3):
        for view in range(4):
            dataset.view_of = lambda i, v=view: v  # every view in turn
            x, _, _ = dataset[clip]
            position = list(stored.clip).index(clip) * 4 + view
            assert torch.equal(x, teacher_inputs[position]), (clip, view)
            assert DI.feature_crc(x) == stored.crc[rows[clip], view]
    assert dataset.mismatches == 0
    assert not torch.equal(teacher_inputs[0], teacher_inputs[1])  # view 1 is augmented
    plain = FeatureExtractor(FrontendConfig(target_length=128))(load_audio(stored.index["clips"][0]))[0]
    assert torch.allclose(teacher_inputs[0], plain, atol=1e-5)  # view 0: the clip as it is


def test_stored_top_k_round_trip(tmp_path, teacher, capsys):
    """Stored top-k = the k largest of the teacher's own probabilities on the clip (view 0), computed apart from
    the extraction code: indices exact, probabilities as float16."""
    audio = clips(tmp_path / "audio", 3)
    rc, _, err = run_main(capsys, "distill", "logits", "--teacher", teacher, "--data", audio, "--views", "2",
                          "--top-k", "3", "--num-workers", "0", "--no-progress", "-o", tmp_path / "logits")
    assert rc == 0, err
    stored = L.load_logits(tmp_path / "logits")
    model = load_model(teacher)
    rows = stored.row()
    assert stored.top_index.dtype == np.int16 and stored.top_prob.dtype == np.float16
    for clip, name in enumerate(stored.index["clips"]):
        with torch.no_grad():
            probs = torch.sigmoid(model(FeatureExtractor(model.frontend)(load_audio(name))))[0].numpy()
        order = np.argsort(-probs)[:3]
        assert stored.top_index[rows[clip], 0].tolist() == order.tolist()
        np.testing.assert_allclose(stored.top_prob[rows[clip], 0], probs[order].astype(np.float16), atol=1e-3)


def test_filled_targets_follow_ced():
    """Classes outside the top k get min(top-k) / (C - k) each (CED's min(top-20) / 507); with k = C none."""
    idx, prob = np.array([4, 1], np.int16), np.array([0.8, 0.2], np.float16)
    filled = L.fill_targets(idx, prob, 6)
    np.testing.assert_allclose(filled, [0.05, 0.2, 0.05, 0.05, 0.8, 0.05], atol=1e-3)  # float16 storage
    whole = L.fill_targets(np.array([2, 0, 1]), np.array([0.5, 0.3, 0.1], np.float16), 3)
    np.testing.assert_allclose(whole, [0.3, 0.1, 0.5], atol=1e-3)


def test_ensemble_teacher_is_the_mean_of_its_members(tmp_path):
    a, b = save_teacher(tmp_path / "a", seed=1), save_teacher(tmp_path / "b", seed=2)
    audio = clips(tmp_path / "audio", 2)
    dense = {}
    for name, teachers in (("a", [a]), ("b", [b]), ("ab", [a, b])):
        DI.extract_logits([str(t) for t in teachers], audio, tmp_path / name, views=2, top_k=5)
        stored = L.load_logits(tmp_path / name)
        order = np.argsort(stored.clip)
        dense[name] = L.fill_targets(stored.top_index, stored.top_prob, 5)[order]  # (clips, views, C)
    np.testing.assert_allclose(dense["ab"], (dense["a"] + dense["b"]) / 2, atol=2e-3)
    assert not np.allclose(dense["a"], dense["b"], atol=1e-2)  # the members do differ


def test_resume_after_a_kill_stores_each_clip_view_once(tmp_path, teacher):
    """A real SIGKILL after 2 of 5 clips, then --resume: every clip once, with the arrays of an uninterrupted run."""
    audio = clips(tmp_path / "audio", 5)
    args = ["distill", "logits", "--teacher", teacher, "--data", audio, "--views", "3", "--top-k", "2",
            "--batch-size", "1", "--chunk-size", "1", "--num-workers", "0", "--no-progress"]
    killed = run_cli(*args, "-o", tmp_path / "logits", env={KILL_HOOK: "2"})
    assert killed.returncode == -9, killed.stderr
    assert len(L.chunk_files(tmp_path / "logits")) == 2
    refused = run_cli(*args, "-o", tmp_path / "logits")
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1 and "--resume" in refused.stderr
    resumed = run_cli(*args, "-o", tmp_path / "logits", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "3 clips x 3 views" in resumed.stderr and "2 already there" in resumed.stderr
    whole = run_cli(*args, "-o", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    got, want = L.load_logits(tmp_path / "logits"), L.load_logits(tmp_path / "whole")
    assert sorted(got.clip.tolist()) == list(range(5)) and len(got.clip) == 5
    for name in ("seed", "crc", "top_index", "top_prob"):
        np.testing.assert_array_equal(getattr(got, name)[np.argsort(got.clip)],
                                      getattr(want, name)[np.argsort(want.clip)])


def test_unreadable_clips_are_listed_and_chunks_hold_chunk_size_clips(tmp_path, teacher, capsys):
    """A clip that cannot be decoded: one stderr line, exit 1, stored as failed (not retried by --resume, left out of
    training); chunk files hold --chunk-size clips."""
    audio = clips(tmp_path / "audio", 4)
    (audio / "broken.wav").write_bytes(b"RIFF not audio at all")
    rc, _, err = run_main(capsys, "distill", "logits", "--teacher", teacher, "--data", audio, "--views", "1",
                          "--top-k", "2", "--batch-size", "1", "--chunk-size", "2", "--num-workers", "0",
                          "--no-progress", "-o", tmp_path / "logits")
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "broken.wav" in lines[0] and "1 unreadable" in lines[1]
    stored = L.load_logits(tmp_path / "logits")
    broken = stored.index["clips"].index(str(audio / "broken.wav"))
    assert stored.failed.tolist() == [broken] and broken not in stored.clip.tolist() and len(stored.clip) == 4
    assert len(L.chunk_files(tmp_path / "logits")) == 3  # 5 clips, 2 per chunk


def test_shards_split_the_clips(tmp_path, teacher):
    """--shard 0/2 and 1/2 into one folder store every clip once; the folder is complete when both are done; a
    part of another split (0/3) is refused."""
    audio = clips(tmp_path / "audio", 5)
    for k in (0, 1):
        summary = DI.extract_logits([str(teacher)], audio, tmp_path / "logits", views=1, top_k=2, shard=(k, 2))
    assert summary["complete"]
    assert sorted(L.load_logits(tmp_path / "logits").clip.tolist()) == list(range(5))
    # another split into the same folder would store some clips twice: refused in one line
    with pytest.raises(ConfigError, match="split into 2 part") as info:
        DI.extract_logits([str(teacher)], audio, tmp_path / "logits", views=1, top_k=2, shard=(0, 3))
    assert "\n" not in str(info.value) and not L.chunk_files(tmp_path / "logits", (0, 3))


# ----------------------------------------------------------------------------------------------------------------
# Students


@pytest.mark.parametrize("name,width", [("tiny", 192), ("mini", 256), ("small", 384)])
def test_student_sizes_store_what_was_built(tmp_path, teacher, name, width):
    """--student tiny/mini/small: 12 blocks of 192/256/384, 16x16 patches at stride 16 on the teacher's input; the
    config names the size it was built as (not "custom")."""
    DI.extract_logits([str(teacher)], clips(tmp_path / "audio", 1), tmp_path / "logits", views=1, top_k=2)
    config = make_recipe("distill", logits=str(tmp_path / "logits"), student=name)
    student = DI.student_config(config, 5)
    assert (student.embed_dim, student.depth, student.model_size) == (width, 12, STUDENT_SIZES[name])
    assert (student.fstride, student.tstride, student.fshape) == (16, 16, 16)
    assert (student.input_tdim, student.input_fdim) == (128, 128) and student.grid == (8, 8)
    half = DI.student_config(make_recipe("distill", logits=str(tmp_path / "logits"),
                                         student=json.dumps({"model_size": STUDENT_SIZES[name], "input_fdim": 64})), 5)
    assert half.input_fdim == 64 and half.grid == (4, 8)


def test_distill_config_round_trips(tmp_path, teacher):
    """The distill recipe's config (the teacher's front end, the student's model fields) survives JSON."""
    from ast_audio.train.recipes import TrainConfig

    DI.extract_logits([str(teacher)], clips(tmp_path / "audio", 1), tmp_path / "logits", views=1, top_k=2)
    config = make_recipe("distill", logits=str(tmp_path / "logits"), student="mini", label_weight=0.1)
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
    assert config.frontend.target_length == 128 and config.model.model_size == "mini256"


def test_student_trains_and_its_checkpoint_loads_everywhere(tmp_path, capsys):
    """train --recipe distill through the CLI (a frame teacher: clip and frame targets); the student is a normal
    frame checkpoint: tag, events and export take it."""
    head = FrameHeadConfig(temporal="none")
    teacher = save_teacher(tmp_path / "teacher", frame_head=head)
    audio = clips(tmp_path / "audio", 4)
    DI.extract_logits([str(teacher)], audio, tmp_path / "logits", views=2, top_k=3)
    stored = L.load_logits(tmp_path / "logits")
    assert stored.frame_prob is not None and stored.frame_prob.shape[1:] == (2, 12, 3)  # 12 teacher columns
    out = tmp_path / "student"
    student = json.dumps({"embed_dim": 32, "depth": 1, "num_heads": 4})
    rc, _, err = run_main(capsys, "train", "--recipe", "distill", "--logits", tmp_path / "logits", "--student", student,
                          "--eval-data", labelled(tmp_path / "eval", ["a", "c"]), "--epochs", "2", "--batch-size",
                          "2", "--num-workers", "0", "--device", "cpu", "--no-progress", "--set", "tensorboard=false",
                          "-o", out)
    assert rc == 0, err
    model = load_model(out / "model")
    assert model.has_frame_head and model.config.tstride == 16 and list(model.labels) == LABELS
    assert model.config.model_size == "custom" and model.frontend.target_length == 128
    rows = json.loads((out / "result.json").read_text())["epochs"]
    assert len(rows) == 2
    wav = write_tone(tmp_path / "x.wav", seconds=3.0)
    for args in (["tag", wav, "--checkpoint", out / "model"],
                 ["events", wav, "--checkpoint", out / "model", "--format", "json"],
                 ["export", out / "model", tmp_path / "student.onnx"]):
        rc, _, err = run_main(capsys, *args)
        assert rc == 0, (args, err)
    # resume: a finished 2-epoch run extended to 3
    rc, _, err = run_main(capsys, "train", "--recipe", "distill", "--logits", tmp_path / "logits", "--student", student,
                          "--eval-data", tmp_path / "eval", "--epochs", "3", "--batch-size", "2", "--num-workers",
                          "0", "--device", "cpu", "--no-progress", "--set", "tensorboard=false", "-o", out, "--resume")
    assert rc == 0, err
    assert len(json.loads((out / "result.json").read_text())["epochs"]) == 3


def test_frame_targets_move_onto_the_students_columns():
    """Teacher columns of 0.1 s, student columns of 0.16 s: each student row averages the teacher columns it overlaps,
    by overlap (computed by hand for the first two)."""
    teacher = tiny_config(frame_head=FrameHeadConfig(temporal="none"))
    student = tiny_config(fstride=16, tstride=16)
    weights = DI.frame_resampler(teacher, student, FrontendConfig(target_length=128))
    assert weights.shape == (8, 12)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(weights[0, :2], [0.1 / 0.16, 0.06 / 0.16], atol=1e-5)  # [0, 0.16): 0.1 + 0.06
    np.testing.assert_allclose(weights[1, 1:4], [0.04 / 0.16, 0.1 / 0.16, 0.02 / 0.16], atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one line


def _one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ast-audio: error:"), err
    for word in words:
        assert word in lines[0], lines[0]


def test_missing_logits_folder_is_one_line(tmp_path, capsys):
    rc, _, err = run_main(capsys, "train", "--recipe", "distill", "--logits", tmp_path / "nowhere", "--student",
                          "tiny", "-o", tmp_path / "out")
    assert rc == 1
    _one_line_error(err, "nowhere", "distill logits")


def test_label_mismatch_and_views_beyond_stored_are_one_line(tmp_path, teacher, capsys):
    DI.extract_logits([str(teacher)], clips(tmp_path / "audio", 2), tmp_path / "logits", views=2, top_k=2)
    common = ["train", "--recipe", "distill", "--logits", tmp_path / "logits", "--student",
              '{"embed_dim": 32, "depth": 1, "num_heads": 4}', "--epochs", "1", "--num-workers", "0", "--device",
              "cpu", "--no-progress"]
    rc, _, err = run_main(capsys, *common, "--eval-data", labelled(tmp_path / "eval", ["a", "zebra"]), "-o",
                          tmp_path / "o1")
    assert rc == 1
    _one_line_error(err, "zebra", "teacher")
    rc, _, err = run_main(capsys, *common, "--set", "views=5", "-o", tmp_path / "o2")
    assert rc == 1
    _one_line_error(err, "views=5", "stores 2 views")
    rc, _, err = run_main(capsys, "train", "--recipe", "distill", "--logits", tmp_path / "logits", "--student",
                          "huge", "-o", tmp_path / "o3")
    assert rc == 1
    _one_line_error(err, "tiny, mini, small")
    other = tiny_config()
    save_model(AST(other, frontend=FrontendConfig(target_length=128), labels=list("vwxyz")), tmp_path / "other")
    rc, _, err = run_main(capsys, "train", "--recipe", "distill", "--logits", tmp_path / "logits", "--student",
                          "tiny", "--init", f"checkpoint:{tmp_path / 'other'}", "--num-workers", "0", "--device", "cpu",
                          "--no-progress", "-o", tmp_path / "o4")
    assert rc == 1
    _one_line_error(err, "not the teacher's")
    with pytest.raises(ConfigError, match="input_tdim"):
        make_recipe("distill", logits=str(tmp_path / "logits"), student='{"input_tdim": 64}')


def test_unfinished_logits_are_refused_in_one_line(tmp_path, teacher, capsys):
    DI.extract_logits([str(teacher)], clips(tmp_path / "audio", 4), tmp_path / "logits", views=1, top_k=2,
                      shard=(0, 2))
    rc, _, err = run_main(capsys, "train", "--recipe", "distill", "--logits", tmp_path / "logits", "--student",
                          "tiny", "--no-progress", "-o", tmp_path / "out")
    assert rc == 1
    _one_line_error(err, "2 of 4 clips", "--resume")


def test_bench_times_the_students_beside_the_base(capsys):
    """`student_speeds`: the base first, then tiny/mini/small at stride 16 with their parameters, tokens, GFLOP per
    10 s (the FLOP count of `ast_flops`, scaled from the input's seconds) and speed-ups relative to the base."""
    from ast_audio.bench.speed import format_students, student_speeds
    from ast_audio.bench.timing import ast_flops

    torch.manual_seed(0)
    config = tiny_config()
    base = AST(config, frontend=FrontendConfig(target_length=128)).eval()
    rows = student_speeds(base, batch=2, repeats=1, precision="fp32")
    assert [r["model"] for r in rows] == ["base (custom)", "tiny", "mini", "small", "tiny@64", "mini@64", "small@64"]
    assert [r["tokens"] for r in rows] == [12 * 12 + 2, 66, 66, 66, 34, 34, 34]  # 8 x 8 patches; 4 x 8 at 64 bins
    assert rows[0]["speedup"] == 1.0 and all(r["s_per_clip"] > 0 for r in rows)
    seconds = FrontendConfig(target_length=128).duration_s
    assert rows[1]["gflop_per_10s"] == pytest.approx(ast_flops(DI.ASTConfig(
        model_size="tiny224", fstride=16, tstride=16, input_tdim=128, num_classes=5))["total"] / 1e9 * 10 / seconds)
    assert rows[3]["parameters"] > rows[2]["parameters"] > rows[1]["parameters"]
    assert "small" in format_students(rows)


def test_bench_students_in_auto_precision_through_the_cli(tmp_path, capsys, monkeypatch):
    """`ast-audio bench --students` with its default `--students-precision auto` resolves auto once and times
    every student in what it picked (it stopped with "precision auto must be resolved first"). onnxruntime is
    hidden from the choice so that auto is a torch precision: fast here, and the same on every CPU of the tests."""
    from ast_audio.bench import speed
    from ast_audio.model.precision import choose_precision

    monkeypatch.setattr(speed, "choose_precision",
                        lambda requested="auto", **kw: choose_precision(requested, onnxruntime=False, **kw))
    torch.manual_seed(0)
    base = save_model(AST(tiny_config(), frontend=FrontendConfig(target_length=128)), tmp_path / "base")
    rc, out, err = run_main(capsys, "bench", "--checkpoint", base, "--students", "--precisions", "fp32",
                            "--compare", "none", "--seconds", "0", "--no-peak", "--repeats", "1", "--batch-size", "1",
                            "--json", tmp_path / "bench.json")
    assert rc == 0, err
    rows = json.loads((tmp_path / "bench.json").read_text())["students"]
    expected = choose_precision("auto", onnxruntime=False).precision
    assert [r["model"] for r in rows][:4] == ["base (custom)", "tiny", "mini", "small"]
    assert {r["precision"] for r in rows} == {expected}
    assert "mini" in out
