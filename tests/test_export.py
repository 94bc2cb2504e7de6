"""ONNX export: onnxruntime vs the eager model (with and without the in-graph front end), int8, dynamic batch,
metadata, refusals, and the `ast-audio export` / `ast-audio tag --onnx` commands in subprocesses.

References: the eager torch model and FeatureExtractor (an independent computation path: FFT vs DFT-as-conv,
torch kernels vs onnxruntime kernels), torchaudio's Kaldi fbank through the golden file, and the numpy float64
Kaldi definition of tests/test_fbank_batch.py.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

from ast_audio.audio.features import FeatureExtractor
from ast_audio.cli import main
from ast_audio.config import FrontendConfig
from ast_audio.errors import AstAudioError, AudioInputError, ConfigError, ExportError
from ast_audio.export.graph import KaldiFrontend
from ast_audio.export.onnx import export_onnx
from ast_audio.export.runtime import OnnxModel
from ast_audio.infer.tagger import Tagger, load_onnx_tagger
from ast_audio.weights.checkpoint import save_model
from conftest import run_cli, tiny_model, write_tone
from helpers import kaldi_numpy

GOLDEN = Path(__file__).parent / "assets" / "golden_fbank.safetensors"
FP32_ATOL = 1e-4  # onnxruntime fp32 logits vs eager logits (measured ~5e-8 without, ~5e-7 with the front end)
INT8_ATOL = 0.15  # int8 graph vs fp32 eager logits of O(5) (measured 0.04-0.05 on three seeds)
# The in-graph fbank vs exact float64 Kaldi maths (measured <= 1.8e-4 on the golden clips: the DFT as one matrix
# avoids rounding the pre-emphasised frame) and vs torchaudio, whose own float32 rounding on the quietest bins
# is up to 8e-4 from the exact values on the same clips (measured max 1.14e-3 between the two).
GRAPH_FBANK_VS_EXACT = 5e-4
GRAPH_FBANK_VS_TORCHAUDIO = 2e-3


def _waves(n: int, count: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / 16000
    rows = [0.3 * torch.sin(2 * math.pi * (250 * (i + 1)) * t) + 0.05 * torch.randn(n, generator=gen,
                                                                                      dtype=torch.float64)
            for i in range(count)]
    return torch.stack(rows).float()


def _separated_model(seed: int = 0):
    """A tiny model whose head is scaled so its logits are far apart (top-1 is then a meaningful check)."""
    model = tiny_model(seed=seed)
    with torch.no_grad():
        model.mlp_head[1].weight.mul_(20.0)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """fp32 graphs of one tiny model, without and with the front end, exported once for several tests."""
    folder = tmp_path_factory.mktemp("onnx")
    model = _separated_model()
    plain = export_onnx(model, folder / "plain.onnx")
    front = export_onnx(model, folder / "front.onnx", with_frontend=True)
    return model, plain, front


def test_fp32_graph_matches_eager_at_another_batch(exported):
    model, report, _ = exported
    assert report.max_abs_diff <= FP32_ATOL and report.top1_agreement == 1.0  # the export's own check
    onnx_model = OnnxModel(report.path)
    features = FeatureExtractor(model.frontend)(_waves(model.frontend.input_samples, count=3))  # exported at B=1
    with torch.inference_mode():
        expected = model(features).numpy()
    got = onnx_model(features)
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, expected, atol=FP32_ATOL, rtol=0)
    np.testing.assert_allclose(onnx_model(features[:1].numpy()), expected[:1], atol=FP32_ATOL, rtol=0)


def test_frontend_graph_matches_eager_pipeline(exported):
    """Waveforms of the window length, shorter (padded in the graph) and longer (cropped), at batch 3 and 1."""
    model, _, report = exported
    assert report.max_abs_diff <= FP32_ATOL and report.input_name == "waveform"
    onnx_model = OnnxModel(report.path)
    assert onnx_model.with_frontend
    extractor = FeatureExtractor(model.frontend)
    n = model.frontend.input_samples
    for length in (n, n // 2, 401, 2 * n + 17):
        waves = _waves(length, count=3, seed=length)
        with torch.inference_mode():
            expected = model(extractor(waves)).numpy()
        np.testing.assert_allclose(onnx_model(waves), expected, atol=FP32_ATOL, rtol=0, err_msg=f"{length}")
        np.testing.assert_allclose(onnx_model(waves[1]), expected[1:2], atol=FP32_ATOL, rtol=0)


def test_graph_fbank_matches_torchaudio_and_exact_maths(tmp_path):
    """The front end exported alone (mean 0, std 0.5: output = log-mel) on torchaudio's golden clips."""
    golden = load_file(str(GOLDEN))
    names = sorted(k[: -len(".wave")] for k in golden if k.endswith(".wave"))
    assert len(names) >= 4
    for name in names:
        wave, expected = golden[f"{name}.wave"], golden[f"{name}.fbank"]
        frontend = KaldiFrontend(FrontendConfig(target_length=expected.shape[0], mean=0.0, std=0.5)).eval()
        path = tmp_path / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(frontend, (wave.unsqueeze(0),), str(path), input_names=["waveform"],
                              output_names=["logmel"], opset_version=18, dynamo=False)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ours = session.run(None, {"waveform": wave.unsqueeze(0).numpy()})[0][0]
        exact = kaldi_numpy(wave.double().numpy())
        assert np.abs(ours - exact).max() <= GRAPH_FBANK_VS_EXACT, name
        assert np.abs(ours - expected.numpy()).max() <= GRAPH_FBANK_VS_TORCHAUDIO, name


@pytest.mark.parametrize("with_frontend", [False, True])
def test_int8_graph_agrees_on_top1(tmp_path, with_frontend):
    model = _separated_model(seed=1)
    report = export_onnx(model, tmp_path / "q.onnx", precision="int8", with_frontend=with_frontend)
    assert report.top1_agreement == 1.0 and report.max_abs_diff <= INT8_ATOL
    onnx_model = OnnxModel(report.path)
    assert onnx_model.precision == "int8"
    waves = _waves(model.frontend.input_samples, count=6, seed=7)
    features = FeatureExtractor(model.frontend)(waves)
    with torch.inference_mode():
        expected = model(features).numpy()
    got = onnx_model(waves if with_frontend else features)
    assert (got.argmax(1) == expected.argmax(1)).all()
    np.testing.assert_allclose(got, expected, atol=INT8_ATOL, rtol=0)
    assert np.abs(got - expected).max() > 0  # it really is another computation than fp32
    fp32_size = export_onnx(model, tmp_path / "f.onnx", with_frontend=with_frontend, check=False).size_bytes
    assert report.size_bytes < fp32_size


def test_metadata_round_trip(tmp_path):
    model = tiny_model(seed=2)
    model.labels = ("dog", "cat", "rain", "car horn", "speech, male")
    model.multi_label = False
    frontend = model.frontend.replace(mean=-6.5, std=5.25)
    model.frontend = frontend
    export_onnx(model, tmp_path / "m.onnx", with_frontend=True)
    loaded = OnnxModel(tmp_path / "m.onnx", threads=1)
    assert loaded.labels == model.labels
    assert loaded.frontend == frontend
    assert loaded.config == model.config
    assert loaded.multi_label is False and loaded.with_frontend is True and loaded.precision == "fp32"
    with torch.inference_mode():  # the stored normalisation statistics are the ones the graph uses
        expected = model(FeatureExtractor(frontend)(_waves(frontend.input_samples, 2))).numpy()
    np.testing.assert_allclose(loaded(_waves(frontend.input_samples, 2)), expected, atol=FP32_ATOL, rtol=0)


def test_tagger_on_onnx_graphs_matches_eager(exported, tmp_path):
    """Sliding windows (clips longer than a window), short clips and mixed lengths in one batch."""
    model, plain, front = exported
    rate = model.frontend.sample_rate
    waves = [_waves(n, count=1, seed=n)[0] for n in (3 * rate, rate // 2, model.frontend.input_samples, 5000)]
    eager = Tagger(model).tag(waves, top_k=3, batch_size=3, sample_rate=rate)
    for path in (plain.path, front.path):
        results = load_onnx_tagger(path).tag(waves, top_k=3, batch_size=3, sample_rate=rate)
        assert [len(r.windows) for r in results] == [len(r.windows) for r in eager]
        assert len(results[0].windows) > 1
        for ours, ref in zip(results, eager, strict=True):
            torch.testing.assert_close(ours.scores, ref.scores, atol=FP32_ATOL, rtol=0)
            assert [label for label, _ in ours.top] == [label for label, _ in ref.top]


def test_refusals(tmp_path, exported):
    model = tiny_model()
    with pytest.raises(ExportError, match="precision must be one of fp32, int8"):
        export_onnx(model, tmp_path / "a.onnx", precision="bf16")
    with pytest.raises(ExportError, match="opset 13 is too old"):
        export_onnx(model, tmp_path / "a.onnx", opset=13)
    with pytest.raises(ExportError, match="opset 99 is newer than"):
        export_onnx(model, tmp_path / "a.onnx", opset=99)
    bf16 = tiny_model().to(torch.bfloat16)
    with pytest.raises(ExportError, match="float32 weights"):
        export_onnx(bf16, tmp_path / "a.onnx")
    marked = tiny_model()
    marked.precision = "int8"
    with pytest.raises(ExportError, match="runs in int8"):
        export_onnx(marked, tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="expected an ast_audio AST"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "a.onnx")
    existing = tmp_path / "exists.onnx"
    existing.write_bytes(b"keep me")
    with pytest.raises(ExportError, match="already exists.*--force"):
        export_onnx(model, existing)
    assert existing.read_bytes() == b"keep me"
    export_onnx(model, existing, force=True)
    assert OnnxModel(existing).labels == model.labels
    with pytest.raises(ExportError, match="cannot write"):
        export_onnx(model, "/proc/no/such/model.onnx")
    with pytest.raises(ExportError, match="is a folder"):
        export_onnx(model, tmp_path)
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind
    # every message is one line
    for call in (lambda: export_onnx(model, tmp_path / "b.onnx", opset=9),
                 lambda: export_onnx(bf16, tmp_path / "b.onnx")):
        with pytest.raises(AstAudioError) as info:
            call()
        assert "\n" not in str(info.value)


def test_onnx_model_refusals(tmp_path, exported):
    _, plain, front = exported
    with pytest.raises(ConfigError, match="no such ONNX file"):
        OnnxModel(tmp_path / "missing.onnx")
    foreign = tmp_path / "foreign.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(foreign), dynamo=False)
    with pytest.raises(ConfigError, match="not an ast-audio ONNX export"):
        OnnxModel(foreign)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a graph")
    with pytest.raises(ConfigError, match="onnxruntime cannot load"):
        OnnxModel(garbage)
    with pytest.raises(AudioInputError, match="no front end"):
        OnnxModel(plain.path)(np.zeros((1, 16000), np.float32))
    with pytest.raises(AudioInputError, match="S >= 400"):
        OnnxModel(front.path)(np.zeros((1, 300), np.float32))


@pytest.mark.slow
def test_dynamo_exporter_also_works(tmp_path):
    model = tiny_model()
    report = export_onnx(model, tmp_path / "d.onnx", dynamo=True)
    assert report.exporter == "dynamo" and report.max_abs_diff <= FP32_ATOL
    features = torch.randn(3, 128, 128) * 0.5
    with torch.inference_mode():
        expected = model(features).numpy()
    np.testing.assert_allclose(OnnxModel(report.path)(features), expected, atol=FP32_ATOL, rtol=0)


def test_cli_export_and_tag_onnx(tmp_path, capsys):
    save_model(_separated_model(seed=3), tmp_path / "ck")
    write_tone(tmp_path / "long.wav", seconds=3.0, freq=700)
    write_tone(tmp_path / "short.wav", seconds=0.6, freq=3000)
    done = run_cli("export", "ck", "m.onnx", "--with-frontend", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "max |logit diff| vs eager" in done.stdout and "top-1 agreement 100%" in done.stdout
    diff = float(done.stdout.split("max |logit diff| vs eager ")[1].split(",")[0])
    assert diff <= FP32_ATOL

    again = run_cli("export", "ck", "m.onnx", cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [again.stderr.strip()]  # one line, no traceback
    assert again.stderr.startswith("ast-audio: error: m.onnx already exists")
    assert main(["export", str(tmp_path / "ck"), str(tmp_path / "x.onnx"), "--opset", "11"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ast-audio: error: opset 11 is too old") and err.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()

    files = ["long.wav", "short.wav", "missing.wav"]
    onnx_run = run_cli("tag", "--onnx", "m.onnx", *files, "--format", "json", "--all-scores", cwd=tmp_path)
    eager_run = run_cli("tag", "--checkpoint", "ck", *files, "--format", "json", "--all-scores", cwd=tmp_path)
    assert onnx_run.returncode == eager_run.returncode == 1  # the missing file is reported, the rest tagged
    assert "missing.wav" in onnx_run.stderr
    ours, ref = json.loads(onnx_run.stdout), json.loads(eager_run.stdout)
    assert [r["file"] for r in ours] == ["long.wav", "short.wav"]
    assert len(ours[0]["windows"]) > 1  # 3 s is several windows of this 1.3 s model
    for a, b in zip(ours, ref, strict=True):
        assert [x["label"] for x in a["labels"]] == [x["label"] for x in b["labels"]]
        np.testing.assert_allclose(list(a["scores"].values()), list(b["scores"].values()), atol=FP32_ATOL, rtol=0)
