"""Sound-event detection the DCASE way: background clips in the folder layout, the overlap-add score grid, energy
refinement, the DCASE formats read back by the scorers themselves, eval-events against the libraries' own results
and a hand count, and event-F1 calibration. (The trained demo model on generated scenes: tests/test_cli.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ast_audio import AST
from ast_audio.infer.calibrate import calibrate_events
from ast_audio.infer.evaluate_events import (
    PSDS1,
    PSDS2,
    _import_sed_eval,
    _import_sed_scores_eval,
    evaluate_events,
    read_truth,
)
from ast_audio.infer.events import Energy, EventConfig, ScoreGrid, detect_events, refine_with_energy, score_grid
from ast_audio.infer.formats import dcase_durations, dcase_events, format_event_files, scores_tsv
from ast_audio.infer.stream import Timeline
from ast_audio.train.layouts import load_splits
from ast_audio.train.metrics import accuracy
from ast_audio.weights.checkpoint import save_model
from conftest import run_cli, tiny_model, write_tone
from helpers import brute_force_timeline

sed_eval = _import_sed_eval()
sse = _import_sed_scores_eval()


def timeline(scores: np.ndarray, window_s: float, hop_s: float, duration_s: float,
             labels: tuple[str, ...] = ("a", "b")) -> Timeline:
    """Windows at 0, hop, 2 hop, ... while they fit, then one aligned to the end (as `window_starts` places them)."""
    starts = list(np.arange(0.0, duration_s - window_s + 1e-9, hop_s))
    if starts[-1] + window_s < duration_s - 1e-9:
        starts.append(duration_s - window_s)
    starts_t = torch.tensor(starts, dtype=torch.float64)
    assert len(starts) == scores.shape[0], len(starts)
    return Timeline(starts_t, starts_t + window_s, torch.tensor(scores, dtype=torch.float32), labels, duration_s,
                    hop_s, window_s)


# ----------------------------------------------------------------------------------------------------------------------
# Background clips: an all-zero target, multi-label data


def test_background_folder_and_manifest_label_are_all_zero_targets(tmp_path):
    for split in ("train", "valid"):
        for name in ("dog", "cat", "_background"):
            (tmp_path / split / name).mkdir(parents=True)
            write_tone(tmp_path / split / name / "a.wav", seconds=0.5)
    splits = load_splits("folder", tmp_path)
    assert splits.train.labels == ("cat", "dog") and splits.train.multi_label
    by_key = {e.key: e.targets for e in splits.train.examples}
    assert by_key == {"_background/a.wav": (), "cat/a.wav": (0,), "dog/a.wav": (1,)}
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\ntrain/dog/a.wav,dog\ntrain/_background/a.wav,_background\n"
                        "train/cat/a.wav,cat;dog\n")
    splits = load_splits("folder", manifest, eval_data=str(manifest))
    assert [e.targets for e in splits.train.examples] == [(1,), (), (0, 1)] and splits.train.multi_label
    # a data set of single-label clips stays single-label (softmax), as before
    single = tmp_path / "single.csv"
    single.write_text("path,label\ntrain/dog/a.wav,dog\ntrain/cat/a.wav,cat\n")
    assert not load_splits("folder", single, eval_data=str(single)).train.multi_label


def test_accuracy_leaves_out_clips_without_a_class():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.1], [0.3, 0.2]])
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])  # two background clips: no top class to hit
    assert accuracy(scores, targets) == 0.5


# ----------------------------------------------------------------------------------------------------------------------
# The score grid


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_score_grid_is_gapless_and_equals_the_covering_windows(reduce):
    rng = np.random.default_rng(0)
    tl = timeline(rng.random((24, 2)), window_s=1.0, hop_s=0.3, duration_s=7.75)  # last window end-aligned
    grid = score_grid(tl, reduce)
    assert grid.bounds_s[0] == 0.0 and grid.bounds_s[-1] == pytest.approx(7.75)
    assert np.all(np.diff(grid.bounds_s) > 0) and grid.scores.shape == (len(grid.bounds_s) - 1, 2)
    starts, ends, scores = tl.starts_s.numpy(), tl.ends_s.numpy(), tl.scores.numpy().astype(np.float64)
    for m, t in enumerate(grid.centres_s):  # brute force: the windows that contain the piece's centre
        covering = (starts <= t) & (t < ends)
        expected = scores[covering].mean(0) if reduce == "mean" else scores[covering].max(0)
        np.testing.assert_allclose(grid.scores[m], expected, atol=1e-12)


def test_score_grid_of_a_short_file_is_one_piece():
    tl = Timeline(torch.tensor([0.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64),
                  torch.tensor([[0.2, 0.7]]), ("a", "b"), 0.8, 1.0, 2.0)  # one zero-padded window
    grid = score_grid(tl)
    np.testing.assert_allclose(grid.bounds_s, [0.0, 0.8])
    np.testing.assert_allclose(grid.scores, [[0.2, 0.7]], atol=1e-7)


def test_mean_grid_with_interpolation_places_a_sound_that_windows_see_at_half():
    """A model that scores 1 when a sound fills at least half of a window: on the mean grid (the fraction of covering
    windows that fire), the 0.5 crossing interpolated between piece centres falls on the sound's true edges."""
    window, hop, duration, onset, offset = 1.0, 0.1, 10.0, 3.23, 6.57
    starts = np.arange(0.0, duration - window + 1e-9, hop)
    fill = np.clip(np.minimum(starts + window, offset) - np.maximum(starts, onset), 0, None) / window
    scores = np.stack([(fill >= 0.5).astype(float), np.zeros_like(fill)], axis=1)
    tl = timeline(scores, window, hop, duration)
    (event,) = detect_events(tl, EventConfig(threshold=0.5, hysteresis=1.0, grid="mean", interpolate=True))
    assert event.label == "a"
    assert event.onset_s == pytest.approx(onset, abs=hop / 2) and event.offset_s == pytest.approx(offset, abs=hop / 2)
    (cells,) = detect_events(tl, EventConfig(threshold=0.5, hysteresis=1.0))  # the earlier rule: same truth
    assert cells.onset_s == pytest.approx(onset, abs=hop / 2 + 1e-9)


# ----------------------------------------------------------------------------------------------------------------------
# Energy refinement


def test_energy_refinement_snaps_to_loud_stretches_and_splits_at_quiet_gaps():
    rate = 16000
    rng = np.random.default_rng(1)
    audio = 0.003 * rng.standard_normal(10 * rate)
    for a, b in ((2.0, 3.0), (3.4, 4.6), (7.25, 7.7)):
        first, last = round(a * rate), round(b * rate)
        audio[first:last] += 0.3 * np.sin(2 * np.pi * 800 * np.arange(last - first) / rate)
    chunks = np.array_split(audio, 7)  # streamed in uneven chunks: same frames as one piece
    energy = Energy.from_chunks(chunks, rate)
    np.testing.assert_allclose(energy.db, Energy.from_chunks([audio], rate).db, atol=1e-9)
    runs = energy.loud_runs()
    assert runs == [pytest.approx((2.0, 3.0), abs=0.011), pytest.approx((3.4, 4.6), abs=0.011),
                    pytest.approx((7.25, 7.7), abs=0.011)]
    from ast_audio.infer.events import Event

    # window-scale boundaries (0.4 s early/late) covering both tone runs: split in two, snapped to their edges;
    # an event with no loud stretch inside stays as it was.
    refined = refine_with_energy([Event("a", 1.6, 5.0, 0.9), Event("b", 8.5, 9.5, 0.8)], runs, search_s=0.5)
    assert [(e.label, round(e.onset_s, 2), round(e.offset_s, 2)) for e in refined] == [
        ("a", 2.0, 3.0), ("a", 3.4, 4.6), ("b", 8.5, 9.5)]
    # a loud stretch that starts long before the event (another sound it overlaps) keeps the score's onset
    (late,) = refine_with_energy([Event("a", 1.8, 3.3, 0.9)], [(1.0, 3.0)], search_s=0.5)
    assert (late.onset_s, late.offset_s) == (1.8, 3.0)
    with pytest.raises(Exception, match="needs the recording's Energy"):
        detect_events(timeline(np.zeros((10, 2)), 1.0, 1.0, 10.0), EventConfig(refine="energy"))


# ----------------------------------------------------------------------------------------------------------------------
# Formats read back by the scorers


TRUTH = [("f1.wav", 1.0, 3.0, "a"), ("f1.wav", 5.0, 6.0, "b"), ("f1.wav", 8.0, 9.5, "a"), ("f2.wav", 0.5, 2.5, "b")]
# By hand, against TRUTH (onset collar 0.2 s, offset collar max(0.2 s, 20 % of the true length)):
PRED = [("f1.wav", 1.15, 3.3, "a"),  # hit: onset 0.15 off, offset 0.3 off <= 0.2 * 2.0 = 0.4
        ("f1.wav", 5.3, 6.0, "b"),  # miss: onset 0.3 off
        ("f1.wav", 8.0, 9.5, "b"),  # wrong class: a false positive, and the "a" event is missed
        ("f2.wav", 0.5, 2.6, "b"),  # hit
        ("f2.wav", 4.0, 5.0, "a")]  # false positive
EVENT_TP, EVENT_FP, EVENT_FN = 2, 3, 2


def write_tables(folder: Path) -> tuple[Path, Path, Path]:
    truth, pred, durations = folder / "truth.tsv", folder / "pred.tsv", folder / "durations.tsv"
    truth.write_text(dcase_events(TRUTH))
    pred.write_text(dcase_events(PRED))
    durations.write_text(dcase_durations({"f1.wav": 10.0, "f2.wav": 6.0}))
    return truth, pred, durations


def test_dcase_tables_read_back_by_sed_scores_eval_and_dcase_util(tmp_path):
    truth, pred, durations = write_tables(tmp_path)
    assert truth.read_text().splitlines()[0] == "filename\tonset\toffset\tevent_label"
    read = {k: [tuple(e) for e in v] for k, v in sse.io.read_ground_truth_events(truth).items()}
    assert read == {"f1": [(1.0, 3.0, "a"), (5.0, 6.0, "b"), (8.0, 9.5, "a")], "f2": [(0.5, 2.5, "b")]}
    assert sse.io.read_audio_durations(durations) == {"f1": 10.0, "f2": 6.0}
    from dcase_util.containers import MetaDataContainer

    loaded = MetaDataContainer().load(filename=str(pred), file_format="CSV", fields=None, csv_header=True)
    assert [(e.filename, e.onset, e.offset, e.event_label) for e in loaded] == PRED


def test_format_event_files_dcase_and_scores_tsv_read_back(tmp_path):
    from ast_audio.infer.events import Event

    tl = timeline(np.random.default_rng(2).random((9, 2)), 2.0, 1.0, 10.0, labels=("dog bark", "cat"))
    text = format_event_files([("/data/x/rec one.flac", tl, [Event("dog bark", 0.5, 1.25, 0.9)]),
                               ("y.wav", tl, [])], "dcase")
    (tmp_path / "e.tsv").write_text(text)
    assert text.count("filename\tonset") == 1
    read = sse.io.read_ground_truth_events(tmp_path / "e.tsv")
    assert {k: [tuple(e) for e in v] for k, v in read.items()} == {"rec one": [(0.5, 1.25, "dog bark")]}
    (tmp_path / "rec one.tsv").write_text(scores_tsv(score_grid(tl)))
    frame = sse.io.read_sed_scores(tmp_path / "rec one.tsv")  # the scorer's own reader validates the table
    sse.io.validate_score_dataframe(frame, event_classes=["dog bark", "cat"])
    onsets, offsets = frame["onset"].to_numpy(), frame["offset"].to_numpy()
    assert onsets[0] == 0.0 and offsets[-1] == 10.0 and np.array_equal(onsets[1:], offsets[:-1])  # gapless
    np.testing.assert_allclose(frame[["dog bark", "cat"]].to_numpy(), score_grid(tl).scores, atol=5e-7)


# ----------------------------------------------------------------------------------------------------------------------
# Metrics: the libraries' own results, and a hand count


def sed_eval_reference(truth: Path, pred: Path) -> tuple[float, float]:
    """Event- and segment-based micro F1 the way sed_eval's documentation runs it (its own file loading)."""
    import dcase_util

    ref_all = dcase_util.containers.MetaDataContainer().load(filename=str(truth), file_format="CSV", fields=None,
                                                              csv_header=True)
    est_all = dcase_util.containers.MetaDataContainer().load(filename=str(pred), file_format="CSV", fields=None,
                                                              csv_header=True)
    labels = sorted(set(ref_all.unique_event_labels) | set(est_all.unique_event_labels))
    event = sed_eval.sound_event.EventBasedMetrics(event_label_list=labels, t_collar=0.2, percentage_of_length=0.2)
    segment = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=labels, time_resolution=1.0)
    for name in sorted(set(ref_all.unique_files)):
        ref, est = ref_all.filter(filename=name), est_all.filter(filename=name)
        event.evaluate(ref, est)
        segment.evaluate(ref, est, evaluated_length_seconds={"f1.wav": 10.0, "f2.wav": 6.0}[name])
    return (event.results_overall_metrics()["f_measure"]["f_measure"],
            segment.results_overall_metrics()["f_measure"]["f_measure"])


def test_eval_events_equals_sed_eval_and_the_hand_count(tmp_path):
    truth, pred, durations = write_tables(tmp_path)
    result = evaluate_events(truth, pred_path=pred, durations_path=durations)
    precision, recall = EVENT_TP / (EVENT_TP + EVENT_FP), EVENT_TP / (EVENT_TP + EVENT_FN)
    assert result.event_precision == pytest.approx(precision) and result.event_recall == pytest.approx(recall)
    assert result.event_f1 == pytest.approx(2 * precision * recall / (precision + recall))  # 4/9
    event_f1, segment_f1 = sed_eval_reference(truth, pred)
    assert result.event_f1 == pytest.approx(event_f1, abs=1e-12)
    assert result.segment_f1 == pytest.approx(segment_f1, abs=1e-12)
    # Segment-based by hand (1 s segments; a class is active in a segment any of its events touches):
    # truth f1: a in 1,2 and 8,9; b in 5. f2: b in 0,1,2.  pred f1: a in 1,2,3; b in 5 and 8,9. f2: b 0,1,2; a 4.
    # tp = a{1,2} + b{5} + b{0,1,2} = 6; fp = a{3} + b{8,9} + a{4} = 4; fn = a{8,9} = 2.
    assert result.segment_f1 == pytest.approx(2 * 6 / (2 * 6 + 4 + 2))
    assert result.psds1 is None  # needs score tables


def test_psds_and_score_f1_equal_sed_scores_eval_on_the_files(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "scores"
    folder.mkdir()
    truth_rows = []
    for k, duration in enumerate((20.0, 14.0)):
        tl = timeline(rng.random((int(duration / 0.5) - 1, 2)), 1.0, 0.5, duration)
        (folder / f"rec{k}.tsv").write_text(scores_tsv(score_grid(tl)))
        truth_rows += [(f"rec{k}.wav", 2.0, 4.5, "a"), (f"rec{k}.wav", 6.0, 7.0, "b")]
    (tmp_path / "truth.tsv").write_text(dcase_events(truth_rows))
    (tmp_path / "durations.tsv").write_text(dcase_durations({"rec0.wav": 20.0, "rec1.wav": 14.0}))
    result = evaluate_events(tmp_path / "truth.tsv", scores_dir=folder, durations_path=tmp_path / "durations.tsv",
                             threshold=0.6)
    # the library on the paths, reading everything itself
    for name, params in (("psds1", PSDS1), ("psds2", PSDS2)):
        value = sse.intersection_based.psds(str(folder), str(tmp_path / "truth.tsv"),
                                            str(tmp_path / "durations.tsv"), **params)[0]
        assert getattr(result, name) == pytest.approx(value, abs=1e-12), name
    f, _, _, _ = sse.collar_based.fscore(str(folder), str(tmp_path / "truth.tsv"), 0.6, onset_collar=0.2,
                                         offset_collar=0.2, offset_collar_rate=0.2)
    fs, _, _, _ = sse.segment_based.fscore(str(folder), str(tmp_path / "truth.tsv"),
                                           str(tmp_path / "durations.tsv"), 0.6, segment_length=1.0)
    assert result.event_f1 == pytest.approx(f["micro_average"]) and result.segment_f1 == pytest.approx(
        fs["micro_average"])
    assert set(result.psd_roc) == {"psds1", "psds2"} and len(result.psd_roc["psds1"]["efpr"]) > 1


def test_calibrate_events_picks_the_threshold_between_true_and_false_scores():
    """Class a scores 0.62 over its true events and 0.42 on a decoy, class b 0.37 on its events: the event-F1
    optimum is the highest candidate below each class's event score (ties go to the higher threshold)."""
    window, hop, duration = 1.0, 0.1, 20.0
    starts = np.arange(0.0, duration - window + 1e-9, hop)
    scores = np.zeros((len(starts), 2))
    centres = starts + window / 2
    scores[(centres > 3) & (centres < 6), 0] = 0.62
    scores[(centres > 10) & (centres < 12), 0] = 0.42
    scores[(centres > 14) & (centres < 16), 1] = 0.37
    tl = timeline(scores, window, hop, duration)
    truth = {"r": [(3.0, 6.0, "a"), (14.0, 16.0, "b")]}
    table = calibrate_events({"r": tl}, truth, EventConfig(hysteresis=1.0, grid="cells"))
    assert table["a"]["threshold"] == pytest.approx(0.6) and table["a"]["f1"] == pytest.approx(1.0)
    assert table["b"]["threshold"] == pytest.approx(0.35) and table["b"]["f1"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------------------------
# The command line


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sed_cli")
    base = tiny_model(seed=2, num_classes=2)
    model = AST(base.config, frontend=base.frontend, labels=("a", "b"), multi_label=True)
    model.load_state_dict(base.state_dict())
    save_model(model, root / "ckpt")
    rng = np.random.default_rng(0)
    for name, seconds in (("one.wav", 7.0), ("two.flac", 5.5)):
        audio = 0.01 * rng.standard_normal(int(seconds * 16000))
        audio[16000:40000] += 0.3 * np.sin(2 * np.pi * 600 * np.arange(24000) / 16000)
        sf.write(str(root / name), audio.astype(np.float32), 16000)
    return {"root": root, "ckpt": root / "ckpt", "one": root / "one.wav", "two": root / "two.flac"}


def test_events_dcase_durations_scores_dir_and_eval_events_cli(cli_setup, tmp_path):
    # A low threshold with this untrained model gives events (its sigmoid scores sit near 0.5).
    options = ("--checkpoint", cli_setup["ckpt"], "--window", "1.0", "--threshold", "0.45")
    run = run_cli("events", cli_setup["one"], cli_setup["two"], *options, "--format", "dcase", "-o",
                  tmp_path / "events.tsv", "--durations", tmp_path / "durations.tsv", "--scores-dir",
                  tmp_path / "scores")
    assert run.returncode == 0, run.stderr
    events = read_truth(tmp_path / "events.tsv")
    assert set(events) <= {"one", "two"} and sum(map(len, events.values())) > 0
    assert sse.io.read_audio_durations(tmp_path / "durations.tsv") == {"one": pytest.approx(7.0),
                                                                       "two": pytest.approx(5.5)}
    for name, duration in (("one", 7.0), ("two", 5.5)):
        frame = sse.io.read_sed_scores(tmp_path / "scores" / f"{name}.tsv")
        onsets, offsets = frame["onset"].to_numpy(), frame["offset"].to_numpy()
        assert onsets[0] == 0.0 and offsets[-1] == pytest.approx(duration) and np.array_equal(onsets[1:],
                                                                                              offsets[:-1])
        assert np.diff(onsets).max() == pytest.approx(0.1, abs=1e-6)  # default hop: a tenth of the 1 s window
    truth = tmp_path / "truth.tsv"
    truth.write_text(dcase_events([("one.wav", 1.0, 2.5, "a"), ("two.flac", 1.0, 2.5, "b")]))
    run = run_cli("eval-events", "--truth", truth, "--pred", tmp_path / "events.tsv", "--scores-dir",
                  tmp_path / "scores", "--durations", tmp_path / "durations.tsv", "--json", tmp_path / "r.json",
                  "--plot", tmp_path / "roc.png")
    assert run.returncode == 0, run.stderr
    expected = evaluate_events(truth, pred_path=tmp_path / "events.tsv", scores_dir=tmp_path / "scores",
                               durations_path=tmp_path / "durations.tsv").to_dict()
    got = json.loads((tmp_path / "r.json").read_text())
    assert {k: got[k] for k in expected} == expected
    assert "event-based F1" in run.stdout and "PSDS1" in run.stdout
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_events_and_calibrate_errors_are_one_line(cli_setup, tmp_path):
    truth = tmp_path / "truth.tsv"
    truth.write_text("file\tstart\tend\tlabel\nx.wav\t1\t2\ta\n")
    for args in (("eval-events", "--truth", truth, "--pred", truth),
                 ("eval-events", "--truth", truth),
                 ("eval-events", "--truth", tmp_path / "missing.tsv", "--pred", truth),
                 ("calibrate", "--checkpoint", cli_setup["ckpt"], "-o", tmp_path / "t.csv")):
        run = run_cli(*args)
        assert run.returncode == 1 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, (args, run)
        assert run.stderr.startswith("ast-audio: error:")


def test_score_grid_type():
    assert ScoreGrid(np.array([0.0, 1.0]), np.zeros((1, 1)), ("a",)).centres_s.tolist() == [0.5]


def test_generated_scenes_match_their_truth(tmp_path):
    """`write_scenes`: audio of the asked length, truth the scorers accept (no connected events of one class), some
    sounds overlapping, and the truth's events where the audio is loud: each sound stands above the quiet bed."""
    from ast_audio.apps.demo import SAMPLE_RATE, write_scenes

    paths, truth_path, durations_path = write_scenes(tmp_path, count=2, duration_s=40.0, seed=3, overlap=0.3)
    truth = sse.io.read_ground_truth_events(truth_path)
    sse.io.assert_non_connected_events(truth)  # the scorers' own check
    assert set(truth) == {"scene_000", "scene_001"}
    assert sse.io.read_audio_durations(durations_path) == {"scene_000": 40.0, "scene_001": 40.0}
    overlapping = 0
    for path in paths:
        audio, rate = sf.read(str(path))
        assert rate == SAMPLE_RATE and len(audio) == 40 * SAMPLE_RATE
        events = sorted(truth[path.stem])
        assert len(events) >= 12 and all(0 < on < off <= 40.0 for on, off, _ in events)
        overlapping += sum(b[0] < a[1] for a, b in zip(events, events[1:], strict=False))
        sounding = np.zeros(len(audio), dtype=bool)
        for on, off, _ in events:
            sounding[int(on * rate):int(off * rate)] = True
        bed = np.sqrt(np.mean(audio[~sounding] ** 2))
        for on, off, _ in events:
            part = audio[int(on * rate):int(off * rate)]
            assert np.sqrt(np.mean(part ** 2)) > 2 * bed  # every sound is audible over the bed
    assert overlapping >= 2


def test_calibrate_truth_cli_equals_the_library(cli_setup, tmp_path):
    """`calibrate --truth` scores the table's recordings with the events defaults (half-input window, tenth hop,
    mean grid, energy refinement) and writes what `calibrate_events` chooses on the same timelines."""
    from ast_audio.audio.io import load_audio
    from ast_audio.infer.calibrate import read_thresholds
    from ast_audio.weights.checkpoint import load_model

    truth = cli_setup["root"] / "truth.tsv"
    truth.write_text(dcase_events([("one.wav", 1.0, 2.5, "a"), ("two.flac", 1.0, 2.5, "b")]))
    run = run_cli("calibrate", "--checkpoint", cli_setup["ckpt"], "--truth", truth, "-o", tmp_path / "t.csv")
    assert run.returncode == 0, run.stderr
    model = load_model(cli_setup["ckpt"])
    rate = model.frontend.sample_rate
    window_s = model.frontend.input_samples / rate / 2  # the documented defaults, written out: half the input,
    timelines = {name: brute_force_timeline(model, load_audio(cli_setup[name], sample_rate=rate), window_s,
                                            window_s / 10)  # every tenth of the window; windows scored one by one
                 for name in ("one", "two")}
    energies = {name: Energy.from_file(cli_setup[name], rate) for name in ("one", "two")}
    expected = calibrate_events(timelines, read_truth(truth), EventConfig(grid="mean", interpolate=True,
                                                                          refine="energy"), energies=energies)
    assert read_thresholds(tmp_path / "t.csv") == pytest.approx({k: v["threshold"] for k, v in expected.items()})
    assert set(expected) == {"a", "b"}
    assert any(row["f1"] > 0 for row in expected.values())  # the choice is not a tie at F1 0
