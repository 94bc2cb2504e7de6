"""Helpers shared by several test modules (no tests here): generated scenes and tones, reference models, a
WebSocket client for /v1/stream, the browser's location. Test modules import these, never each other."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ast_audio import AST
from ast_audio.audio.fbank import KALDI_EPSILON
from ast_audio.infer.stream import Timeline
from ast_audio.weights.checkpoint import save_hf
from ast_audio.weights.convert import native_to_reference
from conftest import tiny_model

CHROMIUM = Path("/usr/bin/chromium")


WAIT_MS = 90_000  # the tiny model answers in well under a second; this only bounds a hung page


DIM = 32


def make_imagenet(side: int = 24, depth: int = 2, distilled: bool = True, kernel: int = 16, seed: int = 0,
                  dim: int = DIM) -> dict[str, torch.Tensor]:
    """A small random timm DeiT/ViT state dict with the real key names and an ImageNet head."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    prefix = 2 if distilled else 1
    state = {"cls_token": rand(1, 1, dim), "pos_embed": rand(1, prefix + side * side, dim),
             "patch_embed.proj.weight": rand(dim, 3, kernel, kernel), "patch_embed.proj.bias": rand(dim),
             "norm.weight": rand(dim), "norm.bias": rand(dim), "head.weight": rand(1000, dim), "head.bias": rand(1000)}
    if distilled:
        state.update({"dist_token": rand(1, 1, dim), "head_dist.weight": rand(1000, dim), "head_dist.bias": rand(1000)})
    for i in range(depth):
        for name, shape in (("norm1", (dim,)), ("attn.qkv", (3 * dim, dim)), ("attn.proj", (dim, dim)),
                            ("norm2", (dim,)), ("mlp.fc1", (4 * dim, dim)), ("mlp.fc2", (dim, 4 * dim))):
            state[f"blocks.{i}.{name}.weight"] = rand(*shape)
            state[f"blocks.{i}.{name}.bias"] = rand(shape[0])
    return state


def write_scene(path: Path, seconds: float, tones: list[tuple[float, float]], sample_rate: int,
                channels: int = 1, seed: int = 0) -> Path:
    """Noise (std 0.05) with 1 kHz tones (amplitude 0.3) at the given [a, b] seconds, written block by block."""
    rng = np.random.default_rng(seed)
    block = sample_rate * 10
    with sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=channels, subtype="PCM_16") as f:
        for lo in range(0, int(seconds * sample_rate), block):
            n = min(block, int(seconds * sample_rate) - lo)
            t = (lo + np.arange(n)) / sample_rate
            x = 0.05 * rng.standard_normal(n)
            for a, b in tones:
                x += np.where((t >= a) & (t < b), 0.3 * np.sin(2 * np.pi * 1000.0 * t), 0.0)
            f.write(np.repeat(x[:, None], channels, axis=1).astype(np.float32))
    return path


def make_timeline(scores: np.ndarray, window_s: float, hop_s: float, labels=None) -> Timeline:
    n = scores.shape[0]
    starts = np.arange(n) * hop_s
    duration = starts[-1] + window_s
    labels = labels or tuple(f"c{i}" for i in range(scores.shape[1]))
    return Timeline(starts_s=torch.tensor(starts), ends_s=torch.tensor(starts + window_s),
                    scores=torch.tensor(scores, dtype=torch.float32), labels=labels, duration_s=float(duration),
                    hop_s=hop_s, window_s=window_s)


def brute_force_timeline(model: AST, waveform: torch.Tensor, window_s: float | None = None,
                         hop_s: float | None = None) -> Timeline:
    """Window scores the slow, obvious way, as an expectation independent of `ast_audio.infer.stream`: the whole
    (N,) waveform at the model rate in memory; W = round(window_s x rate) samples (default: the model's input) and
    H = round(hop_s x rate) (default W // 2); windows at 0, H, 2H, ... while start + W < N, then the last one
    [N - W, N) (one window [0, N) when N <= W); each window featurised and run through the model on its own,
    sigmoid (multi-label) or softmax."""
    from ast_audio.audio.features import FeatureExtractor

    rate = model.frontend.sample_rate
    n = waveform.shape[0]
    window = model.frontend.input_samples if window_s is None else round(window_s * rate)
    hop = window // 2 if hop_s is None else round(hop_s * rate)
    starts = []
    start = 0
    while start + window < n:
        starts.append(start)
        start += hop
    starts.append(max(0, n - window))
    extractor = FeatureExtractor(model.frontend)
    rows = []
    model = model.eval()
    with torch.inference_mode():
        for start in starts:
            logits = model(extractor(waveform[start:start + window].float()[None]))[0].float()  # (1, T, F) -> (C,)
            rows.append(torch.sigmoid(logits) if model.multi_label else torch.softmax(logits, dim=0))
    starts_t = torch.tensor(starts, dtype=torch.float64)
    return Timeline(starts_s=starts_t / rate, ends_s=(starts_t + min(window, n)) / rate, scores=torch.stack(rows),
                    labels=tuple(model.labels), duration_s=n / rate, hop_s=hop / rate, window_s=window / rate)


def kaldi_numpy(wave: np.ndarray, remove_clip_dc: bool = True) -> np.ndarray:
    """Kaldi fbank (AST settings) in numpy float64, written from the definition."""
    x = np.asarray(wave, dtype=np.float64)
    if remove_clip_dc:
        x = x - x.mean()
    window, hop, nfft, rate, bins = 400, 160, 512, 16000, 128
    count = 1 + (len(x) - window) // hop
    frames = np.stack([x[t * hop:t * hop + window] for t in range(count)])
    frames = frames - frames.mean(axis=1, keepdims=True)
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - 0.97 * previous
    n = np.arange(window)
    frames = frames * (0.5 - 0.5 * np.cos(2 * np.pi * n / (window - 1)))
    power = np.abs(np.fft.rfft(frames, n=nfft)) ** 2  # (T, 257)
    mel = lambda f: 1127.0 * np.log(1 + f / 700.0)  # noqa: E731
    lo, hi = mel(20.0), mel(rate / 2)
    delta = (hi - lo) / (bins + 1)
    fft_mel = mel(np.arange(nfft // 2) * rate / nfft)
    banks = np.zeros((nfft // 2 + 1, bins))
    for j in range(bins):
        left, centre, right = lo + j * delta, lo + (j + 1) * delta, lo + (j + 2) * delta
        up = (fft_mel - left) / (centre - left)
        down = (right - fft_mel) / (right - centre)
        banks[: nfft // 2, j] = np.maximum(0.0, np.minimum(up, down))
    return np.log(np.maximum(power @ banks, KALDI_EPSILON))


def write_noise_file(path: Path, minutes: float, sample_rate: int = 16000) -> Path:
    """Minutes of quiet noise, written 10 s at a time (the test never holds the file either)."""
    rng = np.random.default_rng(0)
    block = sample_rate * 10
    with sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as f:
        for _ in range(int(minutes * 60 * sample_rate) // block):
            f.write((0.05 * rng.standard_normal(block)).astype(np.float32))
    return path


MEASURE = """
import resource, sys, time
from ast_audio.cli import main
start = time.perf_counter()
rc = main(sys.argv[1:])
elapsed = time.perf_counter() - start
# VmHWM is this process's own peak RSS; ru_maxrss also counts the memory of the parent it was forked from (the
# test runner, gigabytes late in a full run), which survives exec.
try:
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"RSS_KB {peak_kb} SECONDS {elapsed:.2f} RC {rc}", file=sys.stderr)
"""


def peak_rss(*args: str) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of `ast-audio events ...` in a fresh process."""
    run = subprocess.run([sys.executable, "-c", MEASURE, *map(str, args)], capture_output=True, text=True,
                         timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    match = re.search(r"RSS_KB (\d+) SECONDS ([\d.]+) RC (\d+)", run.stderr)
    assert match and match.group(3) == "0", run.stderr[-2000:]
    return int(match.group(1)) / 1024, float(match.group(2))


def train_tone_detector(seed: int = 0) -> AST:
    """A tiny AST trained (about 20 s of CPU) to say whether a 1 kHz tone fills at least half of a 1 s window
    of noise, so its score crosses 0.5 where the events' definition expects it."""
    from ast_audio import ASTConfig, FrontendConfig
    from ast_audio.audio.features import FeatureExtractor

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    frontend = FrontendConfig(target_length=100)
    n = frontend.input_samples
    t = np.arange(n) / 16000

    def window(fraction: float) -> np.ndarray:
        x = 0.05 * rng.standard_normal(n)
        k = int(fraction * n)
        tone = 0.3 * np.sin(2 * np.pi * 1000 * t + rng.uniform(0, 2 * np.pi))
        part = slice(0, k) if rng.random() < 0.5 else slice(n - k, n)  # the tone enters or leaves the window
        x[part] += tone[part]
        return x.astype(np.float32)

    fractions = np.r_[rng.uniform(0, 1, 300), np.zeros(50), np.ones(50)]
    x = FeatureExtractor(frontend)(torch.from_numpy(np.stack([window(f) for f in fractions])))
    y = torch.from_numpy((fractions >= 0.5).astype(np.float32))[:, None]
    config = ASTConfig(model_size="tiny224", input_tdim=100, embed_dim=32, depth=2, num_heads=4, num_classes=1)
    model = AST(config, frontend=frontend, labels=("tone",), multi_label=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(40):
        order = torch.randperm(len(x))
        for lo in range(0, len(x), 32):
            index = order[lo:lo + 32]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


START = {"rate": 22050, "format": "s16le", "channels": 2, "window_s": 1.0, "hop_s": 0.5, "threshold": 0.5,
         "median": 3, "top_k": 3}


def pcm(seconds: float, seed: int) -> np.ndarray:
    """(N, 2) int16 at 22.05 kHz: a tone in the first half, noise throughout (different windows score differently)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(22050 * seconds)) / 22050
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (t < seconds / 2) + 0.05 * rng.standard_normal(t.shape)
    return (np.stack([x, 0.5 * x], axis=1) * 32767).astype("<i2")


def stream(url: str, data: np.ndarray, start: dict = START, chunk_s: float = 0.1, pace: float = 0.5,
           ready: threading.Event | None = None) -> list[dict]:
    """Send the declaration, the PCM in chunks (each `pace` x its duration apart), then {"end": true}; return every
    message the server sent, in order. `ready` is set once the server has accepted the declaration."""
    messages: list[dict] = []
    with connect(url, open_timeout=30) as ws:
        ws.send(json.dumps(start))
        messages.append(json.loads(ws.recv(timeout=30)))
        if ready is not None:
            ready.set()
        step = int(22050 * chunk_s)
        for i in range(0, data.shape[0], step):
            ws.send(data[i:i + step].tobytes())
            time.sleep(chunk_s * pace)
        ws.send(json.dumps({"end": True}))
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=60)))
        except ConnectionClosed:
            pass
        assert ws.close_code == 1000
    return messages


def refused(url: str, first: str | bytes, then: bytes | None = None) -> tuple[dict, int]:
    """Send `first` (and `then`), return the server's error message and its close code."""
    with connect(url, open_timeout=30) as ws:
        ws.send(first)
        if then is not None:
            ready = json.loads(ws.recv(timeout=30))
            assert ready.get("ready") is True, ready
            ws.send(then)
        message = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
        return message, ws.close_code


def known_sound(path: Path, seconds: float = 4.0, rate: int = 48000) -> np.ndarray:
    """A steady 440 Hz tone with a little noise (every window of it scores alike), 16-bit; returns the samples."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.shape)
    sf.write(str(path), x.astype(np.float32), rate, subtype="PCM_16")
    return x.astype(np.float32)


def save_reference(model: AST, path, prefix: str = "module.") -> None:
    """Write `model` the way the reference code saves it: DataParallel prefix plus the unused ImageNet heads."""
    state = native_to_reference(model.state_dict(), prefix=prefix)
    dim = model.config.embed_dim
    for head in ("head", "head_dist"):
        state[f"{prefix}v.{head}.weight"] = torch.randn(1000, dim)
        state[f"{prefix}v.{head}.bias"] = torch.randn(1000)
    torch.save(state, path)


def ref_model(seed: int = 0, **changes) -> AST:
    """A reference-shaped model with 64-dim heads, so the head count can be inferred from the file."""
    return tiny_model(seed, **{"embed_dim": 128, "num_heads": 2, **changes})


def make_fake_hub_cache(root, repo_id: str, model: AST) -> None:
    """The layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/<commit>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    save_hf(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
