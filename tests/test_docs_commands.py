"""Every fenced `ast-audio ...` / `python ...` command in README.md and docs/*.md, run offline: docs that stop
running fail here.

How it works:

- `doc_commands()` reads the shell fences (```bash, ```sh, ```console, ```shell and plain ```) of README.md and
  docs/*.md and yields one `DocCommand` per command: `\\` continuations joined, `$ ` prompts and trailing
  `# comments` dropped, `a && b` split into its parts. A command is a part whose program is `ast-audio`,
  `python`/`python3` (any path: `.venv/bin/ast-audio` too) or `torchrun`. In plain fences without `$ ` prompts a
  line counts only when `ast-audio` is followed by one of its commands or an option (tables of `bench` output
  start with "ast-audio fp32"); in a `$ ` transcript only the `$ ` lines count, and a transcript whose output is
  `ast-audio: error: ...` expects that error (non-zero exit, the same message).
- Each command is classified: `EXCLUDED` (pattern -> why it cannot run here: the hub, a GPU, a microphone, hours
  of training) or runnable. A runnable command is what the doc says after `SUBSTITUTIONS` (placeholders such as
  `--checkpoint C` -> the demo model); one that still holds a placeholder (an ALL-CAPS word, `...`, `[--option]`)
  is unclassified and fails `test_every_command_is_classified`, so new docs must be made runnable or excluded. An
  exclusion (or substitution) that matches no documented command fails too (stale).
- Runnable commands run in document order, one working folder per doc file (later commands use what earlier ones
  wrote, as a reader following the page would), with `WORKSPACE`'s files in it: the names the docs use for inputs
  (`clip.wav`, `demo/`, `my_sounds/`, `ESC-50-master`, ...) made offline from generated audio, the demo run (the
  session's `demo_run` fixture, which is `ast-audio demo`) and tiny checkpoints. The default checkpoint (the Hub's
  MIT/ast-finetuned-audioset-10-10-0.4593, used when a command names none) is a small stand-in with the same
  format, 527 AudioSet names, depth and input length in a Hub cache (HF_HUB_CACHE), so those commands run as
  written. `RUNNERS` says how a command runs: to the end (exit 0, or the documented error), as a server (until it
  says "listening on"), as the demo (the fixture's run), or, for a synopsis (`ast-audio CMD [--option V]...`), not
  at all: every option it names must be one CMD takes.

Subprocesses get OMP_NUM_THREADS=1 and HF_HUB_OFFLINE=1, and `ast-audio`/`python` on PATH are the interpreter
running the tests (with the package it imports), whatever the docs' `.venv/bin/` prefix. The walk takes minutes
(the demo's training, then ~110 commands of a few seconds each, each a fresh interpreter): it is marked slow.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf

import ast_audio
from ast_audio.apps.demo import CLASSES as DEMO_CLASSES
from ast_audio.cli.main import build_parser
from ast_audio.config import FrameHeadConfig
from ast_audio.labels import builtin_labels
from ast_audio.weights.checkpoint import save_model
from ast_audio.weights.hub import DEFAULT_MODEL
from conftest import tiny_model, write_tone
from fake_datasets import ESC50_CATEGORIES, make_audioset, make_esc50, make_folder
from helpers import make_fake_hub_cache, ref_model, save_reference

pytestmark = pytest.mark.slow  # the demo run plus ~110 commands: minutes, not seconds

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
TIMEOUT_S = 300  # per command: a hung command fails instead of hanging the suite

# ---------------------------------------------------------------------------------------------------------------
# The tables: what cannot run here, what the placeholders stand for, which files the working folder holds

# pattern (re.search on the command as documented) -> why it is not run here
EXCLUDED: dict[str, str] = {
    r"^\.venv/bin/python -m pytest$": "the whole test suite, of which this walk is a part",
    r"--init imagenet:": "needs DeiT's ImageNet weights, and the recipes that use them train AST-base: hours",
    # hardware this machine lacks
    r"^ast-audio listen --checkpoint C( --hop 1)?$": "reads the microphone",
    r"^ffmpeg -i rtsp://": "reads a camera stream with ffmpeg",
    r"^torchrun --standalone --nproc_per_node 4|^torchrun --nnodes": "several GPUs / nodes (NCCL)",
    r"^torchrun --standalone --nproc_per_node 2 .* --device cpu \.\.\.$":
        "`...` stands for a training run's other options (tests/test_torchrun.py runs gloo torchrun)",
    r"^/tmp/ta-venv/bin/python": "a separate venv with torchaudio (the comparison in docs/export.md)",
    # real data sets and the paper's recipes: hours of AST-base training or data that is not here
    r"--recipe audioset-(full|balanced) --data (unbal|balanced_train|bal)\S* --eval":
        "AudioSet and AST-base: days of GPU time",
    r"--recipe esc50 --data ESC-50-master( --fold 3)? -o": "5 (or 1) folds of AST-base384 training: hours",
    r"--recipe esc50 --data ESC-50-master --init audioset:":
        "5 folds x 25 epochs of ESC-50 from the AudioSet model: hours (over 5 min even from a tiny stand-in)",
    r"--recipe esc50 --data ESC-50-master --finetune last:2": "fine-tuning AST-base384 on ESC-50: hours",
    r"--recipe speechcommands": "Speech Commands with AST-base384: hours",
    r"--init audioset --finetune lora": "30 epochs of LoRA on the 1024-frame AudioSet model: over 5 min even from "
        "the small stand-in of the default checkpoint (tests/test_finetune.py tests LoRA)",
    r"^ast-audio train --recipe folder --data my_sounds/ -o runs/mine$":
        "the folder recipe trains AST-base384 from scratch: hours on CPU",
    r"^ast-audio train \.\.\. --resume": "continues a killed run of the paper's recipes (see above)",
    r"^ast-audio eval --checkpoint runs/as(-full)?/model --ensemble": "AudioSet evaluation with AST-base models",
    r"^ast-audio tag --files-from /data/archive": "an archive of audio files on a cluster's disk",
    # long benchmarks (minutes of AST-base384 on CPU)
    r"^(OMP_NUM_THREADS=\d+ )?\.venv/bin/python bench/live_latency\.py": "AST-base384 latency benchmark: ~1 min on "
        "an idle machine",
    r"^(OMP_NUM_THREADS=\d+ )?\.venv/bin/python bench/events_realtime\.py": "AST-base384 with the clip defaults on "
        "minutes of audio: several minutes on an idle machine",
    # the frame-distillation measurement of docs/training.md: the 18-min sed experiment, then 30 min of training
    r"python bench/(distill_frames|sed_experiment)\.py": "a frame-distillation measurement: 10-30 min",
    r"--device cuda": "a CUDA GPU",
    r"--checkpoint runs/mini/model": "the student that the `--device cuda` run above it trains",
    r"^OMP_NUM_THREADS=1 \.venv/bin/python bench/sed_experiment\.py -o": "issue 20's whole experiment: 18 min "
        "(tests/test_sed_experiment.py runs its small preset; the commands it runs are walked below it)",
}

# (pattern, replacement): applied in order with re.sub to a runnable command before it runs; each says what the
# placeholder stands for here. Only names and sizes change: the command and its options stay the doc's.
SUBSTITUTIONS: list[tuple[str, str]] = [
    (r"^((?:[A-Z_]+=\S+ )*)\.venv/bin/", r"\1"),  # the interpreter running the tests is first on PATH
    (r"--checkpoint (C|\./my-model|/tmp/demo/model)\b", "--checkpoint demo/model"),  # the demo's model
    (r"/tmp/audioset_10_10\.pth", "audioset_10_10.pth"),  # a small 527-output reference checkpoint
    (r"^(ast-audio serve\b(?!.*--port).*)$", r"\1 --port 0"),  # 8000 may be taken on a shared machine
    (r"--port 8000\b", "--port 0"),
    # the scenes of docs/events.md (5 x 120 s test, 3 x 120 s calibration, 120 x 20 s training, 6 x 20 s
    # validation), README.md (100 x 20 s) and docs/training.md (20 of the default length): 2 x 20 s each
    (r"^(ast-audio scenes \S+) --count (?:[3-9]|\d{2,})(?: --seconds \d+)?", r"\1 --count 2 --seconds 20"),
    (r"^(ast-audio train --recipe (?:sed|distill)\b.*)$", r"\1 --epochs 1"),  # these recipes' 30 (or 40) epochs: 1
    (r"^(ast-audio train --recipe folder\b.*--finetune linear\b.*)$", r"\1 --epochs 2"),  # the linear probes: 2
    # docs/cli.md's resume example: the demo's small model instead of AST-base384 from scratch, in a folder of its
    # own (WORKSPACE's runs/mine holds the finished model other pages use)
    (r"^(ast-audio train --recipe folder --data my_sounds/ --epochs [24]) -o runs/mine\b",
     r"\1 --init checkpoint:demo/model -o runs/mine-resume"),
    (r"--checkpoint runs/sed/model\b", "--checkpoint frame/model"),  # docs/live.md: a tiny frame model
    # docs/training.md's distillation: `...` is the teacher and data of the command above it
    (r"^ast-audio distill logits \.\.\.", "ast-audio distill logits --teacher MIT/ast-finetuned-audioset-10-10-0.4593 "
     "--data my_recordings/ --views 10 --top-k 20"),
    # bench/distill_demo.py's work folder, and its runs (teacher 15 epochs, 8 views, student 60 epochs) made short
    (r"^((?:OMP_NUM_THREADS=1 )?python bench/distill_demo\.py) WORK\b(?!/)(?! --evaluate-only)",
     r"\1 WORK --draws 1 --views 1 --teacher-epochs 1 --epochs 2"),
    (r"\bWORK\b", "work"),
    # docs/training.md: the distillation students timed beside the demo's model instead of AST-base384 (minutes)
    (r"^(ast-audio bench --students\b.*)$", r"\1 --checkpoint demo/model"),
]


def _tone(path: Path, assets: Assets) -> None:
    write_tone(path, seconds=3.0, freq=880.0)


def _flac(path: Path, assets: Assets) -> None:
    write_tone(path, seconds=3.0, freq=660.0)


def _clips(path: Path, assets: Assets) -> None:
    path.mkdir()
    _tone(path / "one.wav", assets)
    _tone(path / "two.wav", assets)


def _s16le(path: Path, assets: Assets) -> None:
    wav = path.with_suffix(".wav")
    write_tone(wav, seconds=3.0, freq=880.0)
    path.write_bytes(sf.read(wav, dtype="int16")[0].tobytes())
    wav.unlink()


def _link(target: Callable[[Assets], Path]) -> Callable[[Path, Assets], None]:
    return lambda path, assets: path.symlink_to(target(assets), target_is_directory=target(assets).is_dir())


# working-folder path -> how to make it (tones, links to the session's assets); parents are real folders, so what
# a command writes beside them stays in the working folder
WORKSPACE: dict[str, Callable[[Path, Assets], None]] = {
    "clip.wav": _tone, "a.wav": _tone, "long.wav": _tone, "street.wav": _tone, "talk.wav": _tone, "dog.wav": _tone,
    "long.flac": _flac, "clips": _clips,
    "demo": _link(lambda a: a.demo),  # `ast-audio demo --out demo` (RUNNERS: the session's demo run)
    "runs/mine/model": _link(lambda a: a.demo / "model"),
    "runs/big/model": _link(lambda a: a.demo / "model"),
    "runs/as-full/models/epoch_1": _link(lambda a: a.demo / "model"),  # `average`: two checkpoints of one model
    "runs/as-full/models/epoch_2": _link(lambda a: a.demo / "model"),
    "run/best": _link(lambda a: a.esc50_model),  # a tiny model with the ESC-50 layout's class names
    "my_sounds": _link(lambda a: a.folder),  # what runs/mine/model was trained on (the demo's classes)
    "few_shots": _link(lambda a: a.folder),
    "ESC-50-master": _link(lambda a: a.esc50),
    "train.json": _link(lambda a: a.audioset / "train.json"),
    "audio": _link(lambda a: a.audioset / "audio"),  # train.json's relative paths
    "unbal_train.json": _link(lambda a: a.audioset / "train.json"),
    "x.json": _link(lambda a: a.audioset / "train.json"),
    "eval.json": _link(lambda a: a.audioset / "eval.json"),
    "class_labels_indices.csv": _link(lambda a: a.audioset / "class_labels_indices.csv"),
    "audioset_10_10.pth": _link(lambda a: a.audioset_pth),
    "list.txt": lambda path, assets: path.write_text("clip.wav\na.wav\nlong.flac\n"),  # `--files-from LIST`
    "frame/model": _link(lambda a: a.frame_model),  # a model with a frame head (`train --recipe sed`'s output)
    "audio.s16le": _s16le,  # `listen --input - < audio.s16le`: raw 16 kHz mono int16
    "demo-output": _link(lambda a: a.demo),  # `ast-audio demo`'s default output folder
    "rec.wav": _tone,
    "my_recordings": _clips,  # unlabelled audio for `distill logits`
    "runs/a/model": _link(lambda a: a.demo / "model"),  # an ensemble of teachers with the same classes
    "runs/b/model": _link(lambda a: a.demo / "model"),
    "labelled_clips": _link(lambda a: a.labelled),  # classes of the default (AudioSet) teacher
    "bench": _link(lambda a: ROOT / "bench"),
    "docs/images": lambda path, assets: path.mkdir(),  # pictures the docs regenerate land here, not in the repo
}

# pattern -> how the command runs (default: to the end, exit 0)
RUNNERS: dict[str, str] = {
    r"\[-": "synopsis",  # `ast-audio CMD [--option VALUE]...`: every option it names is one CMD takes
    r"^(\.venv/bin/)?ast-audio demo\b": "demo",
    r"^ast-audio serve\b": "server",
}

# ---------------------------------------------------------------------------------------------------------------
# Reading the docs

DEPRECATED = "is deprecated; use"  # the warning of an old option spelling (cli/args.py: `warn_deprecated`)
PROGRAM = re.compile(r"^(?:[A-Za-z_]\w*=\S*\s+)*(\S+)")  # the program of a command, after VAR=value settings
PLACEHOLDER = re.compile(r"(?<![\w./-])(?:[A-Z][A-Z0-9_]*(?:\.\.\.)?|\.\.\.)(?![\w./=-])|\[-")


@dataclass(frozen=True)
class DocCommand:
    file: str  # relative to the repository
    line: int  # where the command starts
    text: str  # one line, as documented
    fence: str  # the fence's language ("" for plain)
    expect_error: str | None = None  # a transcript's `ast-audio: error: ...` line

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def _commands() -> dict[str, argparse.ArgumentParser]:
    """ast-audio's sub-parsers by command name (and the main parser under "")."""
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return {"": parser, **action.choices}


PARSERS = _commands()
SUBCOMMANDS = frozenset(PARSERS) - {""}


def strip_comment(line: str) -> str:
    """`line` without a trailing ` # comment` (a # outside quotes, after whitespace)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _is_ours(segment: str, fence: str, transcript: bool) -> bool:
    """Whether a pipeline segment runs ast-audio / python / torchrun (see the module docstring)."""
    for part in segment.split(" | "):
        match = PROGRAM.match(part.strip())
        if not match:
            continue
        program = match.group(1).rsplit("/", 1)[-1]
        if program == "ast-audio":
            words = part.split()
            following = words[words.index(match.group(1)) + 1] if len(words) > 1 else ""
            if fence or transcript or following in SUBCOMMANDS or following[:1] in "-[":
                return True
        elif re.fullmatch(r"python(3(\.\d+)?)?|torchrun", program):
            return True
    return False


def _logical_lines(body: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """(first line number, text) with `\\` continuations joined."""
    start, parts = None, []
    for number, raw in body:
        text = raw.rstrip()
        if start is None:
            start = number
        parts.append(text.removesuffix("\\").strip())
        if text.endswith("\\"):
            continue
        yield start, " ".join(p for p in parts if p)
        start, parts = None, []
    if parts:
        yield start, " ".join(p for p in parts if p)


def _joined_synopses(body: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The logical lines, with a synopsis's indented lines (`ast-audio CMD ...` going on in lines that start with
    spaces and then `[`, `(` or `-`) joined to it."""
    goes_on = {number for number, raw in body if re.match(r"\s+[\[(-]", raw)}
    lines: list[tuple[int, str]] = []
    for number, text in _logical_lines(body):
        if lines and number in goes_on:
            lines[-1] = (lines[-1][0], f"{lines[-1][1]} {text}")
        else:
            lines.append((number, text))
    return lines


def _block_commands(file: str, fence: str, body: list[tuple[int, str]]) -> Iterator[DocCommand]:
    transcript = any(raw.startswith("$ ") for _, raw in body)
    lines = _joined_synopses(body)
    for k, (number, text) in enumerate(lines):
        if transcript and not text.startswith("$ "):
            continue
        text = strip_comment(text.removeprefix("$ "))
        expect = None
        if transcript and k + 1 < len(lines) and lines[k + 1][1].startswith("ast-audio: error: "):
            expect = lines[k + 1][1].removeprefix("ast-audio: error: ")
        for segment in (s.strip() for s in text.split(" && ")):
            if segment and _is_ours(segment, fence, transcript):
                yield DocCommand(file, number, segment, fence, expect)


def doc_commands(files: list[Path] = DOC_FILES) -> list[DocCommand]:
    """Every command in the shell fences of `files`, in document order."""
    found: list[DocCommand] = []
    for path in files:
        fence, body = None, []
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            opening = re.match(r"^\s*```\s*([\w-]*)\s*$", raw)
            if opening and fence is None:
                fence, body = opening.group(1), []
            elif raw.strip().startswith("```") and fence is not None:
                if fence in SHELL_FENCES:
                    found.extend(_block_commands(str(path.relative_to(ROOT)), fence, body))
                fence = None
            elif fence is not None:
                body.append((number, raw))
    return found


def exclusion(command: DocCommand) -> str | None:
    return next((why for pattern, why in EXCLUDED.items() if re.search(pattern, command.text)), None)


def substituted(command: DocCommand) -> str:
    text = command.text
    for pattern, replacement in SUBSTITUTIONS:
        text = re.sub(pattern, replacement, text)
    return text


def placeholders(text: str) -> list[str]:
    return [m.group(0) for m in PLACEHOLDER.finditer(text)]


def runner(command: DocCommand) -> str:
    return next((kind for pattern, kind in RUNNERS.items() if re.search(pattern, command.text)), "run")


def unclassified(command: DocCommand) -> list[str]:
    """The placeholders left in a command that is neither excluded nor a synopsis (empty: it is classified)."""
    if exclusion(command) is not None or runner(command) == "synopsis":
        return []
    return placeholders(substituted(command))


def unknown_options(synopsis: str) -> list[str]:
    """The options a synopsis names that its command does not take, or takes only as a deprecated spelling
    (ast-audio's own options before it count)."""
    name = next((w for w in synopsis.split()[1:] if w in SUBCOMMANDS), None)
    if name is None:
        return [f"no ast-audio command in {synopsis!r}"]
    actions = [*PARSERS[""]._actions, *PARSERS[name]._actions]
    known = {o for a in actions if type(a).__name__ != "DeprecatedAlias" for o in a.option_strings}
    named = re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", synopsis.split(" " + name, 1)[1])
    return [option for option in named if option not in known]


COMMANDS = doc_commands()

# ---------------------------------------------------------------------------------------------------------------
# The session's inputs and one working folder per doc file


@dataclass
class Assets:
    root: Path
    demo: Path  # `ast-audio demo`'s output folder (model/, data/, ...)
    folder: Path  # class sub-folders named as the demo's classes (3 short clips each)
    esc50: Path  # the ESC-50 release layout, 4 classes
    esc50_model: Path  # a tiny native model whose labels are those 4 ESC-50 classes
    frame_model: Path  # a tiny native model with a frame head (what `train --recipe sed` writes)
    labelled: Path  # class sub-folders named as AudioSet classes (the default checkpoint's)
    audioset: Path  # train.json, eval.json, class_labels_indices.csv
    audioset_pth: Path  # a small 527-output checkpoint in the reference's .pth format
    hub: Path  # HF_HUB_CACHE holding the default checkpoint's stand-in (see `_default_model_stand_in`)
    bin: Path  # `ast-audio`, `python`, `python3`: the interpreter running the tests


def _make_bin(folder: Path) -> Path:
    folder.mkdir()
    # scripts, not links: a link to a venv's python outside the venv does not see the venv's packages
    for name, run in (("ast-audio", f'"{sys.executable}" -m ast_audio'), ("python", f'"{sys.executable}"'),
                      ("python3", f'"{sys.executable}"')):
        (folder / name).write_text(f'#!/bin/sh\nexec {run} "$@"\n')
        (folder / name).chmod(0o755)
    return folder


def _default_model_stand_in(hub: Path) -> Path:
    """A Hub cache (HF_HUB_CACHE) whose MIT/ast-finetuned-audioset-10-10-0.4593 is a small AST in transformers'
    format with AudioSet's 527 names, 12 blocks and the 1024-frame input: commands that use the default checkpoint
    run as documented, offline, on a model of the same format, classes, depth and input length."""
    model = tiny_model(4, num_classes=527, depth=12, input_tdim=1024)
    model.labels = tuple(builtin_labels("audioset"))
    make_fake_hub_cache(hub, DEFAULT_MODEL, model)
    return hub


def make_assets(root: Path, demo: Path) -> Assets:
    """The inputs the docs' commands name, under `root`; `demo` is `ast-audio demo`'s output folder."""
    model = tiny_model(3, num_classes=4)
    model.labels = tuple(ESC50_CATEGORIES[:4])
    make_audioset(root / "audioset", classes=3, train_clips=6, eval_clips=3)
    save_reference(ref_model(5, num_classes=527), root / "audioset_10_10.pth")
    return Assets(root=root, demo=demo, folder=make_folder(root / "folder", classes=DEMO_CLASSES, clips_per_class=3),
                  esc50=make_esc50(root / "esc50", classes=4, clips_per_class_per_fold=1),
                  esc50_model=save_model(model, root / "esc50-model"), audioset=root / "audioset",
                  labelled=make_folder(root / "labelled", classes=("Speech", "Music"), clips_per_class=3),
                  frame_model=save_model(tiny_model(6, frame_head=FrameHeadConfig(hidden=16)), root / "frame-model"),
                  audioset_pth=root / "audioset_10_10.pth", hub=_default_model_stand_in(root / "hub"),
                  bin=_make_bin(root / "bin"))


@pytest.fixture(scope="module")
def assets(tmp_path_factory, demo_run) -> Assets:
    demo, proc = demo_run
    assert proc.returncode == 0, f"ast-audio demo failed:\n{proc.stderr[-2000:]}"
    return make_assets(tmp_path_factory.mktemp("doc-assets"), demo)


@dataclass
class Outcome:
    ok: bool
    report: str


class Walk:
    """Runs the docs' commands in document order, one working folder per doc file; remembers each outcome."""

    def __init__(self, assets: Assets, tmp_root: Path) -> None:
        self.assets, self.tmp_root = assets, tmp_root
        self.folders: dict[str, Path] = {}
        self.outcomes: dict[str, Outcome] = {}
        package_parent = str(Path(ast_audio.__file__).resolve().parents[1])
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                    "HF_HUB_CACHE": str(assets.hub),
                    "MPLBACKEND": "Agg", "PATH": f"{assets.bin}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)}

    def folder(self, file: str) -> Path:
        if file not in self.folders:
            folder = self.tmp_root / re.sub(r"\W", "_", file)
            folder.mkdir()
            for name, make in WORKSPACE.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                make(folder / name, self.assets)
            self.folders[file] = folder
        return self.folders[file]

    def outcome(self, command: DocCommand) -> Outcome:
        """Run `command` (after the runnable commands before it in its file, once each)."""
        for earlier in COMMANDS:
            if earlier.file == command.file and earlier.line < command.line and earlier.id not in self.outcomes \
                    and exclusion(earlier) is None and runner(earlier) != "synopsis" and not unclassified(earlier):
                self.outcomes[earlier.id] = self._run(earlier)
        if command.id not in self.outcomes:
            self.outcomes[command.id] = self._run(command)
        outcome = self.outcomes[command.id]
        failed_before = [c.id for c in COMMANDS if c.file == command.file and c.line < command.line
                         and c.id in self.outcomes and not self.outcomes[c.id].ok]
        if outcome.ok or not failed_before:
            return outcome
        return Outcome(False, f"{outcome.report}\n(earlier commands of this page failed too: {failed_before})")

    def _run(self, command: DocCommand) -> Outcome:
        text, cwd, kind = substituted(command), self.folder(command.file), runner(command)
        if kind == "synopsis":
            unknown = unknown_options(text)
            return Outcome(not unknown, f"the synopsis names options `{text.split()[0]}` does not take (or takes "
                           f"only as a deprecated spelling): {unknown}")
        if kind == "demo":
            return self._demo(text, cwd)
        if kind == "server":
            return self._server(text, cwd)
        started = time.monotonic()
        try:
            proc = subprocess.run(["bash", "-c", text], cwd=cwd, env=self.env, capture_output=True, text=True,
                                  timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Outcome(False, f"`{text}` did not finish within {TIMEOUT_S} s")
        report = (f"`{text}` in {cwd} exited {proc.returncode} after {time.monotonic() - started:.1f} s\n"
                  f"stdout (end):\n{proc.stdout[-1500:]}\nstderr (end):\n{proc.stderr[-3000:]}")
        if DEPRECATED in proc.stderr:
            return Outcome(False, f"the docs use a deprecated spelling (write the new one)\n{report}")
        if command.expect_error is None:
            return Outcome(proc.returncode == 0, report)
        documented = command.expect_error[:40]
        return Outcome(proc.returncode != 0 and f"ast-audio: error: {documented}" in proc.stderr,
                       f"expected the documented error 'ast-audio: error: {documented}...'\n{report}")

    def _demo(self, text: str, cwd: Path) -> Outcome:
        """`ast-audio demo [-o DIR]` is the session's demo_run (the same command, run once for the suite)."""
        out = re.fullmatch(r"ast-audio demo(?: (?:-o|--output) (\S+))?(?: --seed 0)?(?: --seconds-budget \S+)?", text)
        if out is None:
            return Outcome(False, f"`{text}`: only `ast-audio demo [-o DIR] [--seed 0] [--seconds-budget S]` (the "
                           "budget only warns) is the session's demo run; run other options as a command of their "
                           "own or exclude them")
        target = cwd / (out.group(1) or "demo-output")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(self.assets.demo, target_is_directory=True)
        return Outcome(target.resolve() == self.assets.demo.resolve(), f"`{text}`: the session's demo run, "
                       f"{self.assets.demo}; {target} is not it")

    def _server(self, text: str, cwd: Path) -> Outcome:
        """A server command passes when it says it is listening (then it is stopped)."""
        proc = subprocess.Popen(["bash", "-c", f"exec {text}"], cwd=cwd, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        reader.start()
        seen: list[str] = []
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while (left := deadline - time.monotonic()) > 0:
                try:
                    line = lines.get(timeout=left)
                except queue.Empty:
                    break
                if line is None:
                    break
                seen.append(line)
                if DEPRECATED in line:
                    return Outcome(False, f"`{text}`: the docs use a deprecated spelling: {line}")
                if "listening on" in line:
                    return Outcome(True, "".join(seen))
            return Outcome(False, f"`{text}` exited {proc.poll()} without listening:\n{''.join(seen)[-3000:]}")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(timeout=10)
            proc.stdout.close()


def _pump(stream, lines: queue.Queue[str | None]) -> None:
    """Copy a server's output lines into `lines`, then None at its end."""
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.fixture(scope="module")
def walk(assets, tmp_path_factory) -> Iterator[Walk]:
    walk = Walk(assets, tmp_path_factory.mktemp("doc-walk"))
    yield walk
    shutil.rmtree(walk.tmp_root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# The tests


def test_the_walk_finds_the_docs_commands():
    """The parser itself: known commands of README.md and docs/*.md are found, as documented, and nothing else."""
    texts = {c.id: c.text for c in COMMANDS}
    assert texts["README.md:6"] == ".venv/bin/ast-audio demo"  # `bash setup.sh && ...`: the part that is ours
    joined = next(c for c in COMMANDS if c.file == "docs/events.md" and c.text.startswith("ast-audio events test/"))
    assert joined.text.endswith("--scores-dir scores --no-progress")  # `\` continuation joined, no comment
    assert not any(c.text.startswith("ast-audio fp32") for c in COMMANDS)  # bench output tables are not commands
    assert not any(c.text.startswith("ast-audio serve:") for c in COMMANDS)  # nor a server's log line
    assert len(COMMANDS) > 60


def test_synopses_name_no_deprecated_spelling():
    """A synopsis that names an old spelling (a hidden alias such as train's --out) fails like an unknown option."""
    assert unknown_options("ast-audio train --recipe sed --data FOLDER [--out OUT]") == ["--out"]
    assert unknown_options("ast-audio train --recipe sed --data FOLDER [-o OUT] [--labels CSV]") == []


def test_every_command_is_classified():
    """A documented command either runs here (no placeholder left after SUBSTITUTIONS) or is EXCLUDED with why."""
    left = [f"{c.id}: {substituted(c)!r} still holds {unclassified(c)}" for c in COMMANDS if unclassified(c)]
    assert not left, ("commands that neither run here nor are excluded (add a SUBSTITUTIONS/WORKSPACE entry or an "
                      "EXCLUDED reason in tests/test_docs_commands.py):\n" + "\n".join(left))


def test_no_stale_table_entries():
    """Every EXCLUDED pattern, SUBSTITUTIONS pattern and RUNNERS pattern still matches a documented command."""
    stale = [f"EXCLUDED {p!r}" for p in EXCLUDED if not any(re.search(p, c.text) for c in COMMANDS)]
    stale += [f"SUBSTITUTIONS {p!r}" for p, _ in SUBSTITUTIONS
              if not any(re.search(p, c.text) for c in COMMANDS if exclusion(c) is None)]
    stale += [f"RUNNERS {p!r}" for p in RUNNERS if not any(re.search(p, c.text) for c in COMMANDS)]
    assert not stale, "table entries that match no documented command:\n" + "\n".join(stale)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.id)
def test_documented_command_runs(command: DocCommand, walk: Walk):
    why = exclusion(command)
    if why is not None:
        pytest.skip(f"not run here: {why}")
    if unclassified(command):
        pytest.fail(f"unclassified: {unclassified(command)} (see test_every_command_is_classified)")
    outcome = walk.outcome(command)
    assert outcome.ok, f"{command.id}: {command.text}\n{outcome.report}"
