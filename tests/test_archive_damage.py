"""Archives held to the hostile-input standard (issue 21): names that are not UTF-8, lists with U+2028, parts that
were edited, cut or lost, a damaged line mid-output, options archive mode cannot honour, failed files retried in a
sharded run, and temporaries a killed writer left.

The commands run in this process (`run_main`, `--workers 0`: no interpreter start per run); the one killed writer
is a real process that SIGKILLs itself in the middle of an atomic write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ast_audio.weights.checkpoint import save_model
from conftest import run_main, tiny_model, write_tone

OPTIONS = ("--batch-size", "2", "--num-workers", "0", "--top-k", "1")


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]


def tag(capsys, files_from: Path, output: Path, ckpt: Path, *extra: str) -> tuple[int, str]:
    rc, _, err = run_main(capsys, "tag", "--files-from", files_from, "--checkpoint", ckpt, "--output", output,
                          *OPTIONS, *extra)
    return rc, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("ast-audio: error:")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A checkpoint, a list of 7 tones (so parts of 2 have 4 and 3 files), and a pristine 2-part run of it."""
    root = tmp_path_factory.mktemp("archive_damage")
    save_model(tiny_model(seed=1, num_classes=3), root / "ckpt")
    audio = root / "audio"
    audio.mkdir()
    files = [write_tone(audio / f"t{i}.wav", seconds=0.4, freq=300.0 + 100 * i) for i in range(7)]
    listing = root / "list.txt"
    listing.write_text("".join(f"{f}\n" for f in files))
    return {"root": root, "ckpt": root / "ckpt", "files": [str(f) for f in files], "list": listing}


def sharded_run(capsys, setup, out: Path) -> None:
    for k in range(2):
        rc, err = tag(capsys, setup["list"], out, setup["ckpt"], "--shard", f"{k}/2")
        assert rc == 0, err
    assert [r["file"] for r in rows(out)] == setup["files"]


# ------------------------------------------------------------------------------------------------------- names


def test_names_that_are_not_utf8_are_written_faithfully_and_resumed(setup, tmp_path, capsys):
    folder = tmp_path / "names"
    folder.mkdir()
    good = os.fsencode(folder) + b"/caf\xe9.wav"  # Latin-1 bytes: not valid UTF-8
    broken = os.fsencode(folder) + b"/bad\xff.wav"
    shutil.copy(setup["files"][0], good)
    with open(broken, "wb") as f:
        f.write(b"RIFF\x00\x00 not audio")
    out = tmp_path / "out.jsonl"
    rc, err = tag(capsys, folder, out, setup["ckpt"])
    assert rc == 1, err  # the broken one fails, with its own line; the batch is not lost
    got = {os.fsencode(r["file"]): r for r in rows(out)}  # json -> str with surrogates -> the same bytes
    assert set(got) == {good, broken}
    assert "labels" in got[good] and "error" not in got[good]  # decoded: not reported as a corrupt WAV
    assert "error" in got[broken] and "cannot decode" in got[broken]["error"]
    out.read_bytes().decode("utf-8")  # the output stays valid UTF-8 (the bytes are JSON escapes)
    rc, err = tag(capsys, folder, out, setup["ckpt"], "--resume")
    assert rc == 0 and "0 files written" in err and "2 already there" in err, err
    # a list file holding the raw bytes names the same files
    listing = tmp_path / "list.txt"
    listing.write_bytes(good + b"\n")
    rc, err = tag(capsys, listing, tmp_path / "listed.jsonl", setup["ckpt"])
    assert rc == 0, err
    assert [os.fsencode(r["file"]) for r in rows(tmp_path / "listed.jsonl")] == [good]


def test_a_list_is_split_on_newlines_only(setup, tmp_path, capsys):
    name = tmp_path / "a\u2028b\x0cc.wav"  # a line separator and a form feed inside one name
    shutil.copy(setup["files"][1], name)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# one file\n{name}\r\n", encoding="utf-8")
    rc, err = tag(capsys, listing, tmp_path / "out.jsonl", setup["ckpt"])
    assert rc == 0, err
    assert [r["file"] for r in rows(tmp_path / "out.jsonl")] == [str(name)]


# ------------------------------------------------------------------------------------------------------- parts


def _delete_line(part: Path) -> None:
    lines = part.read_bytes().splitlines(keepends=True)
    part.write_bytes(b"".join(lines[:1] + lines[2:]))


def _swap_lines(part: Path) -> None:
    lines = part.read_bytes().splitlines(keepends=True)
    part.write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))


def _old_marker(part: Path) -> None:
    Path(f"{part}.done").write_text(json.dumps({"files": 4}) + "\n")  # what main wrote


@pytest.mark.parametrize("damage, message", [
    (_delete_line, "3 line(s), but its marker counts 4 file(s)"),
    (lambda part: part.write_bytes(b""), "0 line(s), but its marker counts 4 file(s)"),
    (lambda part: part.unlink(), "marks part 0 of 2 done, but"),
    (_swap_lines, "differ from the ones its marker records"),
    (_old_marker, "not a part marker of this version"),
])
def test_merge_parts_checks_every_part_against_its_marker(setup, tmp_path, capsys, damage, message):
    out = tmp_path / "out.jsonl"
    sharded_run(capsys, setup, out)
    merged = out.read_bytes()
    part = Path(f"{out}.part0-of-2")
    damage(part)
    rc, _, err = run_main(capsys, "merge-parts", out)
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert message in err and "--shard 0/2 --resume" in err, err
    assert "permission" not in err
    assert out.read_bytes() == merged  # the merged output is left as it was
    # what the message says to run repairs the part, and its merge gives the list's order again
    rc, err = tag(capsys, setup["list"], out, setup["ckpt"], "--shard", "0/2", "--resume")
    assert rc == 0 and "merged into" in err, err
    assert [r["file"] for r in rows(out)] == setup["files"]


def test_retry_failed_in_a_sharded_run(setup, tmp_path, capsys):
    """A file that failed is done again by `--retry-failed` on its part, without editing any part by hand; the part
    that finishes last merges, in the list's order."""
    audio = tmp_path / "audio"
    shutil.copytree(Path(setup["files"][0]).parent, audio)
    files = sorted(audio.glob("*.wav"))
    files[2].write_bytes(b"RIFF\x00\x00 cut")  # file 2: part 0 of 2
    out = tmp_path / "out.jsonl"
    for k in range(2):
        rc, err = tag(capsys, audio, out, setup["ckpt"], "--shard", f"{k}/2")
    assert "error" in rows(out)[2]
    shutil.copy(setup["files"][2], files[2])  # the file is repaired
    rc, err = tag(capsys, audio, out, setup["ckpt"], "--shard", "0/2", "--retry-failed")
    assert rc == 0 and "1 files written" in err and "merged into" in err, err
    got = rows(out)
    assert [r["file"] for r in got] == [str(f) for f in files] and all("labels" in r for r in got)


# -------------------------------------------------------------------------------------------- damage and resume


def test_resume_drops_a_damaged_line_and_redoes_its_file(setup, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    rc, err = tag(capsys, setup["list"], out, setup["ckpt"])
    assert rc == 0, err
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:3] + [lines[3][:25] + b"\n"] + lines[4:]))  # line 4 cut in the middle
    rc, err = tag(capsys, setup["list"], out, setup["ckpt"], "--resume")
    assert rc == 0, err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "dropped 1 damaged line(s) (line 4" in warning[0], err
    assert "1 files written" in err and "6 already there" in err
    assert [r["file"] for r in rows(out)] == setup["files"]  # every file once, in the list's order


def test_resume_refuses_an_output_of_another_list(setup, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"file": "/elsewhere/x.wav", "labels": []}) + "\n")
    rc, err = tag(capsys, setup["list"], out, setup["ckpt"], "--resume")
    assert rc == 1 and "not in this run's list of files" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, option", [
    (["tag", "--format", "csv"], "--format csv"),
    (["events", "--format", "dcase"], "--format dcase"),
    (["events", "--plot", "p.png"], "--plot"),
    (["events", "--scores-dir", "scores"], "--scores-dir"),
])
def test_archive_mode_refuses_options_it_cannot_honour(tmp_path, capsys, argv, option):
    rc, _, err = run_main(capsys, *argv, "--files-from", tmp_path, "--output", tmp_path / "o.jsonl")
    assert rc == 1 and error_lines(err) == err.strip().splitlines() and len(error_lines(err)) == 1
    assert f"{option} does not apply to --files-from" in err


# ------------------------------------------------------------------------------------------------- temporaries

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from ast_audio.utils import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_bytes(b"x" * 100000)
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_the_next_run_removes_what_a_killed_writer_left(setup, tmp_path, capsys):
    out = tmp_path / "runs" / "out.jsonl"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out)], capture_output=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert killed.returncode == -9, killed.stderr
    assert len(list(out.parent.glob(".out.jsonl.*.tmp"))) == 1  # 100 kB left behind
    rc, err = tag(capsys, setup["list"], out, setup["ckpt"])
    assert rc == 0, err
    assert list(out.parent.glob(".*.tmp")) == []
