"""Front-end speed: ast-audio's Kaldi fbank against torchaudio's and transformers', plus decoding and resampling.

    .venv/bin/python bench/bench_fbank.py [--repeats 15] [--threads N] [--decode-minutes 10]
    /tmp/ta-venv/bin/python bench/bench_fbank.py      # where torchaudio is installed (torch only is required)

Times, in one run and on the same 10 s, 16 kHz clips:
- ast-audio's `fbank` on one clip and on a batch of 8 clips (per clip);
- torchaudio.compliance.kaldi.fbank with the AST settings (spec §2.1), one clip per call (it takes one channel),
  when torchaudio is importable, and the max |difference| of the two outputs;
- transformers' ASTFeatureExtractor (numpy path: unnormalised fbank only, do_normalize=False) when importable;
- decoding a long 44.1 kHz stereo FLAC and WAV with soundfile and resampling it to 16 kHz mono with soxr (what
  `ast_audio.audio.io.load_audio` does), as ms per second of audio, when soundfile and soxr are importable.

Timings are medians over `--repeats` rounds in which every contender runs once (interleaved, so load from other
processes on a shared machine hits all of them alike), after one warm-up, as wall time and as CPU time of this
process (all threads); ratios are to ast-audio's batched fbank, per clip. On a busy machine the CPU times are the
steadier measure of each one's own cost.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import statistics
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path

if "--threads" in sys.argv[:-1]:
    # Before numpy/torch load their BLAS and OpenMP runtimes: transformers' numpy extractor otherwise leaves
    # OpenBLAS threads spinning that steal the core from whichever contender runs next.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, sys.argv[sys.argv.index("--threads") + 1])

import torch  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


def import_fbank() -> Callable[..., torch.Tensor]:
    """`ast_audio.audio.fbank.fbank`, from the installed package or, failing that (e.g. in a torchaudio-only venv
    without soundfile), from src/ by path with empty parent packages, so only torch is needed."""
    try:
        from ast_audio.audio.fbank import fbank

        return fbank
    except ImportError:
        pass
    for name, folder in (("ast_audio", SRC / "ast_audio"), ("ast_audio.audio", SRC / "ast_audio" / "audio")):
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    return importlib.import_module("ast_audio.audio.fbank").fbank


def clips(count: int, seconds: float = 10.0, rate: int = 16000) -> torch.Tensor:
    """(count, seconds * rate) float32 test clips: tones, a chirp and noise at several levels."""
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    rows = []
    for i in range(count):
        tone = 0.3 * torch.sin(2 * math.pi * (220 * (i + 1)) * t) + 0.1 * torch.sin(2 * math.pi * (300 + 200 * t) * t)
        rows.append(tone + 10 ** (-i / 4) * 0.05 * torch.randn(t.shape, generator=gen, dtype=torch.float64))
    return torch.stack(rows).float()


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """(median wall seconds, median CPU seconds of this process) per call of each contender, running all of them
    once per round. CPU time (all threads) is the steadier measure of work on a machine shared with other jobs."""
    for fn in contenders.values():
        fn()  # warm-up (caches, allocator, lazy imports)
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in contenders}


def bench_fbank(repeats: int, batch: int) -> None:
    fbank = import_fbank()
    waves = clips(batch)
    kaldi_args = dict(htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
                      num_mel_bins=128, dither=0.0, frame_shift=10)
    contenders: dict[str, Callable[[], object]] = {
        "ast-audio fbank, 1 clip": lambda: fbank(waves[0]),
        f"ast-audio fbank, batch of {batch}": lambda: fbank(waves),
    }
    per_call = {"ast-audio fbank, 1 clip": 1, f"ast-audio fbank, batch of {batch}": batch}
    try:
        import torchaudio

        def ta_clip(i: int) -> torch.Tensor:
            x = waves[i:i + 1]
            return torchaudio.compliance.kaldi.fbank(x - x.mean(), **kaldi_args)  # the reference loader's DC removal

        contenders["torchaudio kaldi.fbank, 1 clip"] = lambda: ta_clip(0)
        contenders[f"torchaudio kaldi.fbank, {batch} clips (loop)"] = lambda: [ta_clip(i) for i in range(batch)]
        per_call["torchaudio kaldi.fbank, 1 clip"] = 1
        per_call[f"torchaudio kaldi.fbank, {batch} clips (loop)"] = batch
        diff = max((fbank(waves)[i] - ta_clip(i)).abs().max().item() for i in range(batch))
        print(f"torchaudio {torchaudio.__version__}: max |ast-audio - torchaudio| over {batch} clips = {diff:.2e}")
    except ImportError:
        print("torchaudio not importable: run this script with /tmp/ta-venv/bin/python for that comparison")
    try:
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        from transformers import ASTFeatureExtractor

        extractor = ASTFeatureExtractor(do_normalize=False, max_length=998)
        numpy_waves = waves.numpy()
        contenders["transformers ASTFeatureExtractor, 1 clip"] = lambda: extractor(
            numpy_waves[0], sampling_rate=16000, return_tensors="np")
        per_call["transformers ASTFeatureExtractor, 1 clip"] = 1
    except ImportError:
        print("transformers not importable: its extractor is skipped")

    seconds = interleaved(contenders, repeats)
    ms = {name: (1e3 * wall / per_call[name], 1e3 * cpu / per_call[name]) for name, (wall, cpu) in seconds.items()}
    base_wall, base_cpu = ms[f"ast-audio fbank, batch of {batch}"]
    print(f"\nKaldi fbank of 10 s at 16 kHz (998 frames x 128 bins), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, medians of {repeats} interleaved rounds; ratio = time / ast-audio batch")
    print(f"{'':48} {'wall ms/clip':>12} {'ratio':>7} {'CPU ms/clip':>12} {'ratio':>7}")
    for name, (wall, cpu) in ms.items():
        print(f"{name:48} {wall:12.3f} {wall / base_wall:6.2f}x {cpu:12.3f} {cpu / base_cpu:6.2f}x")


def bench_decode(minutes: float, repeats: int) -> None:
    try:
        import numpy as np
        import soundfile as sf
        import soxr
    except ImportError as exc:
        print(f"\ndecode/resample skipped: {exc.name} is not importable")
        return
    rate, seconds = 44100, minutes * 60
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    stereo = np.stack([mono, 0.8 * mono], axis=1).astype(np.float32)
    del t, mono
    with tempfile.TemporaryDirectory() as tmp:
        wav, flac = Path(tmp) / "long.wav", Path(tmp) / "long.flac"
        sf.write(str(wav), stereo, rate, subtype="PCM_16")
        sf.write(str(flac), stereo, rate, subtype="PCM_16")
        decoded = sf.read(str(wav), dtype="float32")[0].mean(axis=1)  # (N,) mono, as load_audio downmixes
        contenders = {
            "soundfile decode WAV 16-bit stereo": lambda: sf.read(str(wav), dtype="float32"),
            "soundfile decode FLAC 16-bit stereo": lambda: sf.read(str(flac), dtype="float32"),
            "soxr 44.1 -> 16 kHz mono (HQ)": lambda: soxr.resample(decoded, rate, 16000, quality="HQ"),
            "soxr 44.1 -> 16 kHz mono (VHQ)": lambda: soxr.resample(decoded, rate, 16000, quality="VHQ"),
        }
        timed = {name: wall for name, (wall, _) in interleaved(contenders, max(3, repeats // 5)).items()}
    print(f"\nDecoding and resampling a {minutes:g} min 44.1 kHz stereo file (soundfile {sf.__version__}, "
          f"soxr {soxr.__version__})")
    print(f"{'':40} {'s total':>8} {'ms per s of audio':>18} {'x real time':>12}")
    for name, value in timed.items():
        print(f"{name:40} {value:8.3f} {1e3 * value / seconds:18.3f} {seconds / value:12.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--batch", type=int, default=8, help="clips in the batched call (default 8)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--decode-minutes", type=float, default=10.0, help="length of the decode test file")
    parser.add_argument("--no-decode", action="store_true", help="skip the decode/resample measurement")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_fbank(args.repeats, args.batch)
    if not args.no_decode:
        bench_decode(args.decode_minutes, args.repeats)


if __name__ == "__main__":
    main()
