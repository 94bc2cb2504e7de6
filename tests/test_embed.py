"""Embeddings (ast_audio.infer.embed, `ast-audio embed`) and the HEAR module API (ast_audio.hear).

Expected vectors come from the model's own blocks run by hand on features computed from the soundfile-read samples,
not from the embedding code under test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ast_audio.audio.features import FeatureExtractor
from ast_audio.infer.embed import Embedder, write_embeddings
from ast_audio.weights.checkpoint import save_model
from conftest import tiny_model, write_tone

CLI = str(Path(sys.executable).with_name("ast-audio"))
RATE = 16000
# float32 model outputs of the same arithmetic in another batch composition: rounding differences only
ATOL = 1e-5


def by_hand(model, samples: np.ndarray, layer: int | None, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(vector (D,), patch tokens (N, D)) of one window, computed by running the blocks directly."""
    x = FeatureExtractor(model.frontend)(torch.from_numpy(samples)[None])  # (1, T, F)
    with torch.no_grad():
        tokens = model.embed(x)
        for block in model.blocks[:layer or model.config.depth]:
            tokens, _ = block(tokens)
        if layer is None:
            tokens = model.norm(tokens)
    vector = (tokens[0, 0] + tokens[0, 1]) / 2 if rule == "tokens" else tokens[0, 2:].mean(0)
    return vector, tokens[0, 2:]


@pytest.fixture
def clip(tmp_path) -> tuple[Path, np.ndarray]:
    path = write_tone(tmp_path / "tone.wav", seconds=3.0, freq=600.0)
    samples, rate = sf.read(str(path), dtype="float32")
    assert rate == RATE
    return path, samples


@pytest.mark.parametrize("layer,pool", [(None, "tokens"), (1, "mean"), (-1, "tokens")])
def test_window_vectors_and_times(clip, layer, pool):
    model = tiny_model()
    path, samples = clip
    embedder = Embedder(model, layer=layer, pool=pool)
    (result,) = embedder.embed([str(path)], window_s=1.0, hop_s=0.5)
    # 3 s at window 1 s, hop 0.5 s: starts 0, 0.5, ..., 2.0 (the last one reaches the end exactly)
    np.testing.assert_allclose(result.starts_s, [0.0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(result.ends_s, [1.0, 1.5, 2.0, 2.5, 3.0])
    assert result.duration_s == pytest.approx(3.0)
    hand_layer = None if layer == -1 else layer  # -1 = the last block, which ends with the final norm
    for w, start in enumerate(result.starts_s):
        lo = round(start * RATE)
        vector, _ = by_hand(model, samples[lo:lo + RATE], hand_layer, pool)
        np.testing.assert_allclose(result.windows[w], vector.numpy(), atol=ATOL)
    if layer == 1:  # an intermediate layer is not the final one
        assert not np.allclose(result.windows[0], by_hand(model, samples[:RATE], None, pool)[0].numpy(), atol=1e-3)
    np.testing.assert_allclose(result.clip, result.windows.mean(0), atol=1e-6)


def test_npz_and_parquet_round_trip(clip, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    model = tiny_model()
    path, samples = clip
    short = write_tone(tmp_path / "short.wav", seconds=0.6, freq=300.0)
    embedder = Embedder(model, pool="none")
    results = list(embedder.embed([str(path), str(short)], window_s=1.0, hop_s=0.5))
    write_embeddings(results, tmp_path / "out.npz", embedder)
    write_embeddings(iter(results), tmp_path / "out.parquet", embedder)

    z = np.load(tmp_path / "out.npz", allow_pickle=False)
    assert list(z["files"]) == [str(path), str(short)]
    np.testing.assert_array_equal(z["window_file"], [0, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(z["window_start_s"], [0, 0.5, 1.0, 1.5, 2.0, 0.0])
    np.testing.assert_allclose(z["window_end_s"], [1.0, 1.5, 2.0, 2.5, 3.0, 0.6])
    np.testing.assert_allclose(z["durations_s"], [3.0, 0.6])
    assert z["window_embeddings"].shape == (6, 32) and z["clip_embeddings"].shape == (2, 32)
    np.testing.assert_allclose(z["clip_embeddings"][0], z["window_embeddings"][:5].mean(0), atol=1e-6)
    # patch tokens: 128 mel bins x 100 frames of the 1 s window -> grid 12 x 11 at stride 10, kernel 16
    tokens = z["token_embeddings"]
    assert tokens.shape == (6, 12 * 12, 32)  # the model input is 128 frames: 12 time columns (padded past 1 s)
    _, hand_tokens = by_hand(model, samples[RATE // 2: RATE // 2 + RATE], None, "tokens")  # window 1 (0.5-1.5 s)
    np.testing.assert_allclose(tokens[1], hand_tokens.numpy(), atol=ATOL)
    # token n = f_idx * 12 + t_idx spans frames [10 t_idx, 10 t_idx + 16) = [0.1 t_idx, 0.1 t_idx + 0.16) s
    n = 3 * 12 + 5
    assert z["token_start_s"][1, n] == pytest.approx(0.5 + 0.5) and z["token_end_s"][1, n] == pytest.approx(1.16)
    assert (z["token_mel_start"][n], z["token_mel_end"][n]) == (30, 46)

    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 6
    assert table.column("file").to_pylist() == [str(path)] * 5 + [str(short)]
    np.testing.assert_allclose(table.column("start_s").to_numpy(), z["window_start_s"])
    np.testing.assert_allclose(table.column("end_s").to_numpy(), z["window_end_s"])
    np.testing.assert_array_equal(np.array(table.column("vector").to_pylist(), dtype=np.float32),
                                  z["window_embeddings"])
    np.testing.assert_array_equal(np.array(table.column("tokens")[1].as_py(), dtype=np.float32), tokens[1])
    np.testing.assert_allclose(table.column("token_start_s")[1].as_py(), z["token_start_s"][1])


def test_ort_model_embeds_with_its_torch_source(clip):
    model = tiny_model()

    class GraphOnly:  # what an ONNX Runtime module offers: no layers, its fp32 source as `torch_model`
        torch_model = model

    path, samples = clip
    (result,) = Embedder(GraphOnly()).embed([str(path)], window_s=1.0, hop_s=1.0)
    np.testing.assert_allclose(result.windows[0], by_hand(model, samples[:RATE], None, "tokens")[0].numpy(),
                               atol=ATOL)
    from ast_audio.errors import ConfigError

    with pytest.raises(ConfigError, match="ONNX"):
        Embedder(object())


def test_embed_cli(clip, tmp_path):
    model = tiny_model()
    save_model(model, tmp_path / "model")
    path, _ = clip
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    out = tmp_path / "e.npz"
    cmd = [CLI, "embed", str(path), str(bad), "--checkpoint", str(tmp_path / "model"), "--precision", "fp32",
           "--window", "1", "--hop", "0.5", "--layer", "1", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # one bad file: reported, the good one written
    assert "bad.wav" in done.stderr and "Traceback" not in done.stderr
    z = np.load(out, allow_pickle=False)
    assert list(z["files"]) == [str(path)] and int(z["layer"]) == 1 and z["window_embeddings"].shape == (5, 32)
    again = subprocess.run(cmd[:3] + cmd[4:], capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "already exists" in again.stderr
    wrong = subprocess.run([CLI, "embed", str(path), "--checkpoint", str(tmp_path / "model"), "--layer", "7",
                            "-o", str(tmp_path / "x.npz")], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 1 and "layer must be a block number in 1..2" in wrong.stderr
    suffix = subprocess.run([CLI, "embed", str(path), "-o", str(tmp_path / "x.csv")], capture_output=True, text=True,
                            timeout=120)
    assert suffix.returncode == 1 and ".npz or .parquet" in suffix.stderr


# ---------------------------------------------------------------------------------------------------------------- HEAR


def test_hear_api(tmp_path):
    import ast_audio.hear as hear

    model = tiny_model()
    save_model(model, tmp_path / "model")
    module = hear.load_model(str(tmp_path / "model"), timestamp_hop_s=0.25, timestamp_window_s=1.0)
    assert isinstance(module, torch.nn.Module)
    assert (module.sample_rate, module.scene_embedding_size, module.timestamp_embedding_size) == (16000, 32, 32)
    torch.manual_seed(0)
    audio = 0.1 * torch.randn(3, 32000)  # a batch of three 2 s sounds of one length
    emb, ts = hear.get_timestamp_embeddings(audio, module)
    # windows of 1 s every 0.25 s over 2 s: starts 0, 0.25, ..., 1.0 -> centres 500, 750, ..., 1500 ms
    assert emb.shape == (3, 5, 32) and ts.shape == (3, 5)
    assert isinstance(emb, torch.Tensor) and emb.dtype == torch.float32
    torch.testing.assert_close(ts, torch.tensor([[500.0, 750.0, 1000.0, 1250.0, 1500.0]] * 3))
    for i in range(3):  # each sound's embeddings are its own (batch == per item)
        one = audio[i].numpy()
        hand = torch.stack([by_hand(model, one[s:s + 16000], None, "tokens")[0] for s in range(0, 16001, 4000)])
        torch.testing.assert_close(emb[i], hand, atol=ATOL, rtol=0)
    scene = hear.get_scene_embeddings(audio, module)
    assert scene.shape == (3, 32)
    # scene: windows of the model input (128 frames = 1.285 s) at half-window hops, averaged
    single = list(Embedder(model).embed([audio[1]], sample_rate=16000))[0]
    torch.testing.assert_close(scene[1], torch.from_numpy(single.clip))
    from ast_audio.errors import AudioInputError, ConfigError

    with pytest.raises(AudioInputError, match="n_sounds, n_samples"):
        hear.get_scene_embeddings(audio[0], module)
    with pytest.raises(ConfigError, match="unknown HEAR model option"):
        hear.load_model(str(tmp_path / "model"), hop=1)
