"""Shared fixtures: tiny AST configs and generated audio files. Nothing here downloads anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ast_audio import AST, ASTConfig, FrontendConfig
from ast_audio.labels import builtin_label_csv

# The label files shipped with the package (copied from the reference repo; see src/ast_audio/data/labels/README.md).
LABELS_DIR = builtin_label_csv("audioset").parent


def tiny_config(**changes) -> ASTConfig:
    """A 2-layer, 32-wide AST on 128 frames x 128 mel bins (fast on CPU)."""
    base = dict(model_size="tiny224", input_tdim=128, embed_dim=32, depth=2, num_heads=4, num_classes=5)
    base.update(changes)
    return ASTConfig(**base)


def tiny_model(seed: int = 0, **changes) -> AST:
    torch.manual_seed(seed)
    config = tiny_config(**changes)
    frontend = FrontendConfig(num_mel_bins=config.input_fdim, target_length=config.input_tdim)
    return AST(config, frontend=frontend).eval()


def write_tone(path: Path, seconds: float = 2.0, freq: float = 440.0, sample_rate: int = 16000,
               channels: int = 1, subtype: str = "PCM_16", amplitude: float = 0.5) -> Path:
    """Write a sine tone (plus a little noise) with soundfile; returns the path."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    mono = amplitude * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)
    data = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    sf.write(str(path), data.astype(np.float32), sample_rate, subtype=subtype)
    return path


@pytest.fixture
def tiny() -> AST:
    return tiny_model()


def pytest_report_header(config):
    """The CPU the suite runs on, as torch reports it, and what --precision auto picks there (paths differ per CPU)."""
    from ast_audio.model.precision import choose_precision, cpu_info

    return [f"cpu: {cpu_info().describe()}", choose_precision("auto").describe()]


@pytest.fixture(autouse=True, scope="session")
def _graph_cache(tmp_path_factory):
    """ONNX Runtime graphs built by the tests (precision ort-*/auto) go to a per-run folder, never ~/.cache; the
    variable is inherited by the CLI subprocesses the tests start."""
    old = os.environ.get("AST_AUDIO_CACHE")
    os.environ["AST_AUDIO_CACHE"] = str(tmp_path_factory.mktemp("ast-audio-cache"))
    yield
    if old is None:
        os.environ.pop("AST_AUDIO_CACHE", None)
    else:
        os.environ["AST_AUDIO_CACHE"] = old


def run_cli(*args: object, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path | None = None,
            umask: int | None = None, input: bytes | str | None = None,
            text: bool = True) -> subprocess.CompletedProcess:
    """A real `python -m ast_audio ARGS` run, offline (HF_HUB_OFFLINE=1), its output captured.

    env: extra variables over os.environ; umask: the child's umask; input: its stdin (bytes with text=False)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    preexec = None if umask is None else (lambda: os.umask(umask))
    return subprocess.run([sys.executable, "-m", "ast_audio", *map(str, args)], capture_output=True, text=text,
                          env=full_env, timeout=timeout, cwd=cwd, preexec_fn=preexec, input=input)


def run_demo_cli(out: Path, timeout: float = 1800) -> subprocess.CompletedProcess:
    """A real `python -m ast_audio demo --out OUT` run (offline), with its output."""
    return run_cli("demo", "--out", out, timeout=timeout)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One real `ast-audio demo` run for the whole session (about 30 s of training on 2 idle cores): its output
    folder and the finished process. The demo tests check the run itself; the precision test compares every fast
    path on the model it trained (one training instead of two). The demo always trains its fixed epochs on its
    fixed thread count (its time budget only warns), so the run is the same however loaded the machine is."""
    out = tmp_path_factory.mktemp("demo-run") / "demo"
    return out, run_demo_cli(out)


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """`ast_audio.cli.main` in this process (for the error paths: no interpreter start-up per call)."""
    from ast_audio.cli import main

    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        rc = int(exc.code)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err
