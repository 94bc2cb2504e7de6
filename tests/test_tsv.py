"""The one DCASE TSV reader (`ast_audio.infer.tsv`, issues 20 and 21): each bad row is one line naming the file and
the row, through the library and through the real `eval-events` and `calibrate --truth`; the reader never raises
anything but `ConfigError` (fuzzed); `scenes` writes the layout that `events --plot-truth`, `eval-events` and
training read, and its truth is where the audio says."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ast_audio import AST
from ast_audio.errors import ConfigError
from ast_audio.infer.tsv import audio_id, read_durations, read_strong, read_weak
from ast_audio.weights.checkpoint import save_model
from conftest import run_main, tiny_model

HEADER = "filename\tonset\toffset\tevent_label\n"
GOOD = "a.wav\t0.5\t1.5\tdog\n"

# (table body after the header, the reader's constraints, the expected row, words of the message)
BAD_STRONG = {
    "unknown file": ("x.wav\t0.5\t1.5\tdog\n", dict(files={"a.wav"}), 3, "not one of the 1 known file"),
    "onset after offset": ("a.wav\t2.0\t1.5\tdog\n", {}, 3, "onset 2 s is after offset 1.5 s"),
    "negative onset": ("a.wav\t-0.5\t1.5\tdog\n", {}, 3, "onset -0.5 is negative"),
    "nan onset": ("a.wav\tnan\t1.5\tdog\n", {}, 3, "onset 'nan' is not finite"),
    "inf offset": ("a.wav\t0.5\tinf\tdog\n", {}, 3, "offset 'inf' is not finite"),
    "huge offset": ("a.wav\t0.5\t1e308\tdog\n", {}, 3, "offset 1e+308 s is beyond"),
    "not a number": ("a.wav\t0.5\tone\tdog\n", {}, 3, "offset 'one' is not a number"),
    "unknown label": ("a.wav\t0.5\t1.5\tcat\n", dict(labels={"dog"}), 3, "label 'cat' is not one of the 1 known"),
    "past the end": ("a.wav\t0.5\t9.5\tdog\n", dict(durations={"a.wav": 9.0}), 3, "after the file's end at 9 s"),
    "past the end (audio id)": ("a.wav\t0.5\t9.5\tdog\n", dict(durations={"a": 9.0}), 3, "after the file's end"),
    "three fields": ("a.wav\t0.5\t1.5\n", {}, 3, "3 tab-separated field(s), the header has 4"),
    "five fields": ("a.wav\t0.5\t1.5\tdog\tx\n", {}, 3, "5 tab-separated field(s), the header has 4"),
    "empty label": ("a.wav\t0.5\t1.5\t\n", {}, 3, "the event_label is empty"),
    "empty filename": ("\t0.5\t1.5\tdog\n", {}, 3, "the filename is empty"),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _assert_one_line(message: str, path: Path, row: int, words: str) -> None:
    assert "\n" not in message.strip() and "Traceback" not in message, message
    assert f"{path}:{row}:" in message and words in message, message


@pytest.mark.parametrize("case", sorted(BAD_STRONG))
def test_bad_event_rows_name_file_and_row(case, tmp_path):
    body, constraints, row, words = BAD_STRONG[case]
    path = _write(tmp_path / "t.tsv", HEADER + GOOD + body)
    with pytest.raises(ConfigError) as info:
        read_strong(path, **constraints)
    _assert_one_line(str(info.value), path, row, words)


@pytest.mark.parametrize("first_line, words", [
    (GOOD, "missing or wrong header"),  # no header: the first row is data
    ("file\tstart\tend\tlabel\n", "lacks filename, onset, offset, event_label"),
    ("filename,onset,offset,event_label\n", "lacks"),  # commas, not tabs
])
def test_missing_or_wrong_header(first_line, words, tmp_path):
    path = _write(tmp_path / "t.tsv", first_line + GOOD)
    with pytest.raises(ConfigError) as info:
        read_strong(path)
    _assert_one_line(str(info.value), path, 1, words)


def test_several_bad_rows_name_the_first_and_count_the_rest(tmp_path):
    path = _write(tmp_path / "t.tsv", HEADER + GOOD + "a.wav\t2\t1\tdog\n" + GOOD + "a.wav\t-1\t1\tdog\n\n"
                  + "a.wav\tnan\t1\tdog\n")
    with pytest.raises(ConfigError, match=r"t\.tsv:3: onset 2 s is after offset 1 s \(2 more bad rows after it\)"):
        read_strong(path)


def test_good_table_files_without_events_and_ids(tmp_path):
    """Rows in order; a row with empty onset, offset and label lists a file with no events; the scorers' key is
    the name without its extension; a byte-order mark, CRLF line ends, blank lines and spaces around fields are
    accepted; an event may end up to 10 ms past its file's end."""
    text = "\ufeff" + HEADER.replace("\n", "\r\n") + "sub/a.wav\t0.5\t1.5\tdog\r\n\r\nb.wav\t\t\t\r\n" \
        + "sub/a.wav \t 1.0\t9.005\tcat\n"
    table = read_strong(_write(tmp_path / "t.tsv", text), durations={"sub/a.wav": 9.0}, labels={"dog", "cat"},
                        files={"sub/a", "b.wav"})
    assert table.files == ("sub/a.wav", "b.wav")
    assert table.by_file() == {"sub/a.wav": [(0.5, 1.5, "dog"), (1.0, 9.005, "cat")], "b.wav": []}
    assert table.by_audio_id() == {"sub/a": [(0.5, 1.5, "dog"), (1.0, 9.005, "cat")], "b": []}
    assert [e.row for e in table.events] == [2, 5] and table.labels() == ["cat", "dog"]
    assert table.events_of("/elsewhere/a.wav") == [(0.5, 1.5, "dog"), (1.0, 9.005, "cat")]
    assert audio_id("x.y.wav") == "x.y"


@pytest.mark.parametrize("body, constraints, words", [
    ("a.wav\tdog,cat\na.wav\tdog\n", {}, "listed twice"),
    ("a.wav\tdog,,cat\n", {}, "has an empty label"),
    ("a.wav\tdog,bird\n", dict(labels={"dog", "cat"}), "label 'bird' is not one of the 2 known"),
    ("x.wav\tdog\n", dict(files={"a.wav", "b.wav"}), "not one of the 2 known file"),
    ("a.wav\n", {}, "1 tab-separated field(s), the header has 2"),
])
def test_bad_weak_rows(body, constraints, words, tmp_path):
    path = _write(tmp_path / "weak.tsv", "filename\tevent_labels\nb.wav\tdog\n" + body)
    with pytest.raises(ConfigError) as info:
        read_weak(path, **constraints)
    row = 4 if "twice" in words else 3
    _assert_one_line(str(info.value), path, row, words)


def test_weak_and_durations_good(tmp_path):
    weak = _write(tmp_path / "weak.tsv", "filename\tevent_labels\na.wav\tdog, cat\nb.wav\t\n")
    assert read_weak(weak) == {"a.wav": ("dog", "cat"), "b.wav": ()}
    durations = _write(tmp_path / "d.tsv", "filename\tduration\na.wav\t10\nb.wav\t2.5\n")
    assert read_durations(durations) == {"a.wav": 10.0, "b.wav": 2.5}


@pytest.mark.parametrize("body, words", [
    ("a.wav\t-1\n", "duration -1 is negative"),
    ("a.wav\tnan\n", "duration 'nan' is not finite"),
    ("a.wav\t1e308\n", "beyond"),
    ("b.wav\t3\n", "listed twice"),
    ("a.wav\n", "1 tab-separated field(s)"),
])
def test_bad_durations(body, words, tmp_path):
    path = _write(tmp_path / "d.tsv", "filename\tduration\nb.wav\t2\n" + body)
    with pytest.raises(ConfigError) as info:
        read_durations(path)
    _assert_one_line(str(info.value), path, 3, words)


# ---------------------------------------------------------------------------------------------------------------
# Fuzz: whatever the bytes, a table or one ConfigError line

FIELDS = st.sampled_from(["a.wav", "b.wav", "", " ", "0", "1.5", "-1", "nan", "inf", "-inf", "1e308", "1e-320",
                          "dog", "cat", "dog,cat", ",", "x\x00y", "é", "\ufeff", "0x10", "1_000", "∞", "10"])
HEADERS = st.sampled_from(["filename\tonset\toffset\tevent_label", "filename\tevent_labels", "filename\tduration",
                           "filename\tonset\toffset", "onset\tfilename\tevent_label\toffset", "", "filename\tfilename"])
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@st.composite
def tables(draw: st.DrawFn) -> bytes:
    rows = draw(st.lists(st.lists(FIELDS, min_size=0, max_size=6).map("\t".join), max_size=8))
    separator = draw(st.sampled_from(["\n", "\r\n", "\r", "\n\n"]))
    text = separator.join([draw(HEADERS), *rows])
    data = text.encode("utf-8")
    if draw(st.booleans()):  # raw bytes: invalid UTF-8, NULs, truncations
        data = draw(st.binary(max_size=40)) + data[: draw(st.integers(0, len(data)))]
    return data


@FUZZ
@given(data=tables(), constrained=st.booleans())
def test_fuzz_the_reader_raises_only_config_error(tmp_path, data, constrained):
    path = tmp_path / "fuzz.tsv"
    path.write_bytes(data)
    known = dict(files={"a.wav", "b"}, labels={"dog"}, durations={"a.wav": 5.0}) if constrained else {}
    for read in (lambda: read_strong(path, **known),
                 lambda: read_weak(path, **{k: v for k, v in known.items() if k != "durations"}),
                 lambda: read_durations(path, **{k: v for k, v in known.items() if k == "files"})):
        try:
            result = read()
        except ConfigError as exc:
            assert str(exc) and "\n" not in str(exc)
            continue
        if hasattr(result, "events"):  # every accepted event is usable
            assert all(math.isfinite(e.onset) and 0 <= e.onset <= e.offset and e.label for e in result.events)
        elif result and isinstance(next(iter(result.values())), float):
            assert all(math.isfinite(v) and v >= 0 for v in result.values())


# ---------------------------------------------------------------------------------------------------------------
# Through the real CLI: eval-events and calibrate --truth refuse the same rows with the same line


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> dict[str, Path]:
    """Two 4 s recordings, their durations and a good truth, and a tiny two-class model (labels dog, cat)."""
    root = tmp_path_factory.mktemp("tsv_cli")
    base = tiny_model(seed=1, num_classes=2)
    model = AST(base.config, frontend=base.frontend, labels=("dog", "cat"), multi_label=True)
    model.load_state_dict(base.state_dict())
    save_model(model, root / "ckpt")
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav"):
        sf.write(str(root / name), (0.05 * rng.standard_normal(4 * 16000)).astype(np.float32), 16000)
    _write(root / "durations.tsv", "filename\tduration\na.wav\t4.0\nb.wav\t4.0\n")
    _write(root / "pred.tsv", HEADER + GOOD + "b.wav\t1.0\t2.0\tcat\n")
    return {"root": root, "ckpt": root / "ckpt"}


CLI_CASES = {  # case -> (bad row, what the message says); the truth's row 3 is the bad one
    "unknown file": ("c.wav\t0.5\t1.5\tdog\n", "not one of the 2 known file"),
    "onset after offset": ("a.wav\t2.0\t1.5\tdog\n", "onset 2 s is after offset 1.5 s"),
    "negative": ("a.wav\t-0.5\t1.5\tdog\n", "negative"),
    "nan": ("a.wav\tnan\t1.5\tdog\n", "not finite"),
    "past the end": ("a.wav\t0.5\t9.5\tdog\n", "after the file's end at 4 s"),
    "three fields": ("a.wav\t0.5\t1.5\n", "3 tab-separated field(s)"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_eval_events_cli_refuses_bad_truth_rows(case, labelled, tmp_path, capsys):
    row, words = CLI_CASES[case]
    root = labelled["root"]
    truth = _write(tmp_path / "truth.tsv", HEADER + GOOD + row)
    rc, _, err = run_main(capsys, "eval-events", "--truth", truth, "--pred", root / "pred.tsv", "--durations",
                          root / "durations.tsv")
    assert rc != 0
    _assert_one_line(err, truth, 3, words)


def test_eval_events_cli_refuses_bad_prediction_rows_too(tmp_path, capsys):
    truth = _write(tmp_path / "truth.tsv", HEADER + GOOD)
    pred = _write(tmp_path / "pred.tsv", HEADER + "a.wav\t3\t2\tdog\n")
    rc, _, err = run_main(capsys, "eval-events", "--truth", truth, "--pred", pred)
    assert rc != 0
    _assert_one_line(err, pred, 2, "onset 3 s is after offset 2 s")


@pytest.mark.parametrize("case", ["onset after offset", "negative", "nan", "three fields"])
def test_calibrate_truth_cli_refuses_the_same_rows(case, labelled, capsys):
    row, words = CLI_CASES[case]
    truth = _write(labelled["root"] / "truth.tsv", HEADER + GOOD + row)
    rc, _, err = run_main(capsys, "calibrate", "--checkpoint", labelled["ckpt"], "--truth", truth, "-o",
                          labelled["root"] / "t.csv")
    assert rc != 0
    _assert_one_line(err, truth, 3, words)


def test_calibrate_truth_cli_names_the_row_of_a_class_the_model_lacks(labelled, capsys):
    truth = _write(labelled["root"] / "truth.tsv", HEADER + GOOD + "b.wav\t0.5\t1.5\tbird\n")
    rc, _, err = run_main(capsys, "calibrate", "--checkpoint", labelled["ckpt"], "--truth", truth, "-o",
                          labelled["root"] / "t.csv")
    assert rc != 0
    _assert_one_line(err, truth, 3, "label 'bird' is not one of the 2 known classes")


def test_eval_events_cli_accepts_a_good_table(labelled, tmp_path, capsys):
    root = labelled["root"]
    truth = _write(tmp_path / "truth.tsv", HEADER + GOOD + "b.wav\t1.0\t2.0\tcat\n")
    rc, out, err = run_main(capsys, "eval-events", "--truth", truth, "--pred", root / "pred.tsv", "--durations",
                            root / "durations.tsv")
    assert rc == 0, err
    assert "2 file(s), 2 true event(s)" in out
