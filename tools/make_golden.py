"""Regenerate tests/assets/golden_fbank.safetensors from torchaudio's Kaldi fbank (the reference's front end).

torchaudio cannot be installed beside this project's torch, so run this in a separate environment:

    python3 -m venv /tmp/ta-venv
    /tmp/ta-venv/bin/pip install torch==2.9.1 'torchaudio==2.9.*' numpy safetensors
    /tmp/ta-venv/bin/python tools/make_golden.py

It stores each input waveform beside torchaudio's output with the AST recipe's settings (spec §2.1),
so the test needs no random generator to agree across versions.
"""

from pathlib import Path

import numpy as np
import torch
import torchaudio
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "assets" / "golden_fbank.safetensors"
SR = 16000


def waveforms() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2021)
    t3 = np.arange(3 * SR) / SR
    t10 = np.arange(10 * SR) / SR
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * np.arange(2 * SR) / SR))
    return {
        "tones_noise_3s": 0.3 * np.sin(2 * np.pi * 440 * t3) + 0.1 * np.sin(2 * np.pi * 2500 * t3 * (1 + t3 / 3))
        + 0.05 * rng.standard_normal(t3.size),
        "am_noise_int16_2s": np.round(envelope * 0.4 * rng.standard_normal(2 * SR) * 32767).clip(-32768, 32767)
        / 32768,
        "quiet_1s": 1e-4 * rng.standard_normal(SR),
        "odd_length": 0.2 * rng.standard_normal(12345) + 0.1,
        "clipped_square_1_5s": np.clip(3 * np.sign(np.sin(2 * np.pi * 220 * np.arange(24000) / SR)), -1, 1),
        "mixture_10s": 0.2 * np.sin(2 * np.pi * 1000 * t10) * (t10 % 1 < 0.5) + 0.02 * rng.standard_normal(t10.size),
    }


def main() -> None:
    tensors = {}
    for name, wave in waveforms().items():
        wave_t = torch.from_numpy(wave.astype(np.float32))
        x = (wave_t - wave_t.mean()).unsqueeze(0)  # the reference loader's DC removal, then channel 0
        feats = torchaudio.compliance.kaldi.fbank(
            x, htk_compat=True, sample_frequency=SR, use_energy=False, window_type="hanning",
            num_mel_bins=128, dither=0.0, frame_shift=10)
        tensors[f"{name}.wave"] = wave_t.contiguous()
        tensors[f"{name}.fbank"] = feats.contiguous()
        print(name, tuple(wave_t.shape), tuple(feats.shape))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata={"torchaudio": torchaudio.__version__, "torch": torch.__version__})
    print("wrote", OUT)


if __name__ == "__main__":
    main()
