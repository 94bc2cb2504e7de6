"""Archive mode of `tag` / `events` (--files-from, --resume, --shard, merge-parts) with real processes and files.

The resume test kills a real `ast-audio tag` process with SIGKILL after a chosen number of lines (the test hook
AST_AUDIO_TEST_KILL_AFTER_LINES: the process signals itself, so the kill lands at the same place on any machine),
adds the half-written line a kill during a write leaves, resumes, and counts every file exactly once.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from ast_audio.errors import ConfigError
from ast_audio.infer.archive import KILL_HOOK, list_files, merge_parts, parse_shard, share
from ast_audio.weights.checkpoint import save_model
from conftest import run_cli, tiny_model, write_tone

NUM_GOOD = 11
OPTIONS = ("--batch-size", "2", "--num-workers", "1", "--top-k", "2")


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A checkpoint, a nested folder of tones (and one corrupt file), and a one-process run over it."""
    root = tmp_path_factory.mktemp("archive")
    save_model(tiny_model(seed=3, num_classes=3), root / "ckpt")
    audio = root / "audio"
    for i in range(NUM_GOOD):
        folder = audio / f"d{i % 3}" / ("deep" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        write_tone(folder / f"tone{i:02d}.wav", seconds=0.5 + 0.1 * i, freq=200.0 + 150 * i)
    (audio / "d1" / "broken.wav").write_bytes(b"RIFF\x00\x00 not audio")
    (audio / "notes.txt").write_text("not an audio file, not listed")
    one = run_cli("tag", "--files-from", audio, "--checkpoint", root / "ckpt", "--output", root / "one.jsonl",
                  *OPTIONS)
    return {"root": root, "audio": audio, "ckpt": root / "ckpt", "one": one}


def test_folder_is_listed_recursively_and_bad_files_get_an_error_line(archive):
    run = archive["one"]
    assert run.returncode == 1, run.stderr  # one file failed
    got = rows(archive["root"] / "one.jsonl")
    expected = sorted(str(p) for p in archive["audio"].rglob("*.wav"))
    assert [r["file"] for r in got] == expected  # every audio file under the folder, sorted, none twice
    bad = [r for r in got if "error" in r]
    assert [Path(r["file"]).name for r in bad] == ["broken.wav"]
    assert all("labels" in r for r in got if "error" not in r)
    assert f"{bad[0]['file']}:" in run.stderr  # and one stderr line naming it


def test_killed_run_resumed_has_every_file_exactly_once(archive, tmp_path):
    out = tmp_path / "out.jsonl"
    args = ("tag", "--files-from", archive["audio"], "--checkpoint", archive["ckpt"], "--output", out, *OPTIONS)
    killed = run_cli(*args, env={KILL_HOOK: "4"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(rows(out)) == 4  # two whole batches reached the disk before the kill
    with open(out, "a") as f:  # what a kill in the middle of the next write leaves
        f.write('{"file": "' + str(archive["audio"]))
    again = run_cli(*args)
    assert again.returncode == 1 and "already exists" in again.stderr  # not without --resume
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 1, resumed.stderr  # the broken file again reported
    assert "4 already there" in resumed.stderr
    got = rows(out)
    counts = Counter(r["file"] for r in got)
    assert max(counts.values()) == 1
    one = rows(archive["root"] / "one.jsonl")
    assert set(counts) == {r["file"] for r in one}
    by_file = {r["file"]: r for r in one}
    for r in got:  # the same rows as the uninterrupted run (scores up to float32 batch-composition rounding)
        assert [x["label"] for x in r.get("labels", [])] == [x["label"] for x in by_file[r["file"]].get("labels", [])]


def test_two_shards_merge_into_the_one_process_output(archive, tmp_path):
    out = tmp_path / "sharded.jsonl"
    common = ("tag", "--files-from", archive["audio"], "--checkpoint", archive["ckpt"], "--output", out, *OPTIONS)
    first = run_cli(*common, "--shard", "0/2")
    assert first.returncode in (0, 1), first.stderr
    assert not out.exists()  # part 1 is not done yet
    with pytest.raises(ConfigError, match="part1-of-2"):
        merge_parts(out)
    second = run_cli(*common, env={"RANK": "1", "WORLD_SIZE": "2"})  # torchrun's variables pick the part
    assert second.returncode in (0, 1), second.stderr
    assert "merged into" in second.stderr
    parts = [rows(Path(f"{out}.part{k}-of-2")) for k in range(2)]
    assert {r["file"] for r in parts[0]}.isdisjoint(r["file"] for r in parts[1])
    assert abs(len(parts[0]) - len(parts[1])) <= 1
    merged, one = rows(out), rows(archive["root"] / "one.jsonl")
    assert [r["file"] for r in merged] == [r["file"] for r in one]
    for a, b in zip(merged, one, strict=True):
        assert a.get("error") == b.get("error")
        for x, y in zip(a.get("labels", []), b.get("labels", []), strict=True):
            assert x["label"] == y["label"]
            assert x["score"] == pytest.approx(y["score"], abs=1e-5)  # float32 sums over other batch shapes
    merge_parts(out)  # the command's merge gives the same file
    assert rows(out) == merged


def test_events_over_a_file_list(archive, tmp_path):
    files = sorted(archive["audio"].rglob("tone0*.wav"))[:3]
    listing = tmp_path / "list.txt"
    listing.write_text("# three files\n" + "\n".join(str(p) for p in files) + "\n\n")
    out = tmp_path / "events.jsonl"
    run = run_cli("events", "--files-from", listing, "--checkpoint", archive["ckpt"], "--output", out,
                  "--threshold", "0.3", "--num-workers", "0", "--batch-size", "2")
    assert run.returncode == 0, run.stderr
    got = rows(out)
    assert [r["file"] for r in got] == [str(p) for p in files]
    assert all({"events", "window_s", "hop_s", "duration_s"} <= set(r) for r in got)
    # The same documents as `events FILE...` (same defaults, energy refinement included), file for file.
    listed = tmp_path / "listed.json"
    run = run_cli("events", *files, "--checkpoint", archive["ckpt"], "--threshold", "0.3", "--batch-size", "2",
                  "--format", "json", "--no-progress", "--output", listed)
    assert run.returncode == 0, run.stderr
    assert [{**doc, "file": str(doc["file"])} for doc in json.loads(listed.read_text())] == got


def test_list_files_share_and_shard_spec(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"")
    listing = tmp_path / "l.txt"
    listing.write_text("x.wav\n# comment\n/abs/y.flac\n")
    assert list_files(listing) == [str(tmp_path / "x.wav"), "/abs/y.flac"]
    files = [f"f{i}" for i in range(10)]
    parts = [share(files, k, 3) for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(files)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


@pytest.mark.parametrize("argv, message", [
    (["tag"], "give audio files, or --files-from"),
    (["events", "x.wav", "--resume"], "--resume, --retry-failed and --shard go with --files-from"),
    (["tag", "--files-from", "list.txt"], "--files-from needs --output"),
    (["events", "x.wav", "--files-from", "list.txt", "-o", "o.jsonl"], "either audio files or --files-from"),
])
def test_archive_options_are_checked_in_one_line(argv, message, capsys):
    from ast_audio.cli.main import main

    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ast-audio: error: ") and message in err[0]
