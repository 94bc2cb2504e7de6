"""`ast-audio bench`: runs end to end on a tiny checkpoint with and without transformers installed, writes JSON
with every variant, ratio and the real-time factor, and refuses bad options in one line. Timings are never
asserted (the machine is shared); only that they were measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ast_audio import save_model

from .conftest import tiny_model

CLI = str(Path(sys.executable).with_name("ast-audio"))
# Runs the CLI with `import transformers` failing, as if it were not installed.
WITHOUT_TRANSFORMERS = ("import sys; sys.modules['transformers'] = None; from ast_audio.cli import main; "
                        "sys.exit(main(sys.argv[1:]))")
FAST = ["--repeats", "1", "--batch", "2", "--seconds", "3", "--no-peak"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_model(tiny_model(), tmp_path_factory.mktemp("bench") / "tiny")


def test_bench_with_transformers_and_onnx(checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([CLI, "bench", "--checkpoint", str(checkpoint), *FAST, "--onnx", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    names = [v["name"] for v in data["variants"]]
    assert names[:3] == ["ast-audio fp32", "ast-audio bf16", "ast-audio int8"]
    assert {"transformers fp32", "transformers bf16"} <= set(names)
    for v in data["variants"]:
        assert v["latency_s"] > 0 and v["batch_s_per_clip"] > 0 and v["throughput_clips_per_s"] > 0
    by_name = {v["name"]: v for v in data["variants"]}
    assert by_name["ast-audio fp32"]["max_abs_logit_diff"] == 0.0
    # the same weights in transformers: its fp32 logits match (one LayerNorm eps there, see save_hf)
    assert by_name["transformers fp32"]["max_abs_logit_diff"] < 1e-4
    assert by_name["ast-audio bf16"]["max_abs_logit_diff"] < 0.05
    if any(n.startswith("onnxruntime") for n in names):  # the export module is there: its graph is faithful
        assert by_name["onnxruntime fp32"]["max_abs_logit_diff"] < 1e-4
    else:
        assert "onnx" in run.stderr and "not available" in run.stderr
    ratio = data["ratios"]["ast-audio bf16 / transformers bf16"]
    expected = by_name["transformers bf16"]["batch_s_per_clip"] / by_name["ast-audio bf16"]["batch_s_per_clip"]
    assert ratio == pytest.approx(expected)
    assert set(data["realtime"]) == {"fp32", "bf16", "int8"}
    rt = data["realtime"]["bf16"]
    # 3 s of audio in 1.295 s windows (128 frames), no overlap: ceil(3 / 1.295) = 3 windows
    assert rt["windows"] == 3 and rt["realtime_factor"] == pytest.approx(3.0 / rt["wall_s"])
    assert {"bf16_vs_hf_bf16", "fp32_vs_hf_fp32", "int8_vs_hf_fp32", "realtime_factor"} <= set(data["targets"])
    assert "ast-audio bf16 / transformers bf16" in run.stdout and "real time" in run.stdout


def test_bench_without_transformers(checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-c", WITHOUT_TRANSFORMERS, "bench", "--checkpoint", str(checkpoint),
                          *FAST, "--precisions", "fp32,bf16", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "transformers: not installed" in run.stderr and "skipping the comparison" in run.stdout
    data = json.loads(out.read_text())
    assert [v["name"] for v in data["variants"]] == ["ast-audio fp32", "ast-audio bf16"]
    assert data["ratios"] == {} and "bf16_vs_hf_bf16" not in data["targets"]


def test_bench_peak_and_fraction(checkpoint, tmp_path):
    """With the peaks measured, each variant's fraction of peak is FLOPs / time / peak (checked from the JSON)."""
    out = tmp_path / "bench.json"
    run = subprocess.run([CLI, "bench", "--checkpoint", str(checkpoint), "--repeats", "1", "--batch", "2",
                          "--seconds", "0", "--compare", "none", "--precisions", "bf16", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    assert set(data["peaks_gflops"]) == {"fp32", "bf16", "int8"} and data["peaks_gflops"]["bf16"] > 0
    (variant,) = data["variants"]
    expected = data["flops_per_clip"] / variant["batch_s_per_clip"] / (data["peaks_gflops"]["bf16"] * 1e9)
    assert variant["fraction_of_peak"] == pytest.approx(expected)
    assert data["realtime"] == {}


@pytest.mark.parametrize("option, message", [
    (["--precisions", "fp32,fp16"], "ast-audio: error: precision must be one of fp32, bf16, int8, got 'fp16'"),
    (["--checkpoint", "/nonexistent/model"], "ast-audio: error: /nonexistent/model: no such file or folder"),
])
def test_bench_bad_options_one_line(option, message):
    run = subprocess.run([CLI, "bench", *option, *FAST], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)


def test_bench_accuracy_cli(tmp_path):
    """--accuracy end to end (1 training epoch, so only the report's consistency is checked, not the model)."""
    out = tmp_path / "accuracy.json"
    run = subprocess.run([CLI, "bench", "--accuracy", "--onnx", "--train-epochs", "1", "--test-per-class", "3",
                          "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    assert data["num_test"] == 12 and data["epochs"] == 1 and len(data["classes"]) == 4
    rows = {r["name"]: r for r in data["rows"]}
    assert {"ast-audio fp32", "ast-audio bf16", "ast-audio int8"} <= set(rows)
    assert rows["ast-audio fp32"]["top1_agreement"] == 1.0 and rows["ast-audio fp32"]["max_abs_logit_diff"] == 0.0
    for row in rows.values():
        assert 0.0 <= row["top1_agreement"] <= 1.0 and row["mean_abs_logit_diff"] <= row["max_abs_logit_diff"]
        assert abs(row["accuracy"] * 12 - round(row["accuracy"] * 12)) < 1e-5  # a count out of 12 clips
    if "onnxruntime fp32" in rows:
        assert rows["onnxruntime fp32"]["max_abs_logit_diff"] < 1e-4
    assert "top-1 agreement" in run.stdout
