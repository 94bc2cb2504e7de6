"""`ast-audio bench`: runs end to end on a tiny checkpoint with and without transformers installed, writes JSON
with every variant, auto's pick, the ratios and the real-time factor, skips what this CPU would emulate, and
refuses bad options in one line. Timings are never asserted (the machine is shared); only that they were measured
and that the reported ratios are computed from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import binom

from ast_audio import save_model
from ast_audio.apps.demo import THREADS
from ast_audio.model.precision import choose_precision, cpu_info

from .conftest import tiny_model

CLI = str(Path(sys.executable).with_name("ast-audio"))
# Runs the CLI with `import transformers` failing, as if it were not installed.
WITHOUT_TRANSFORMERS = ("import sys; sys.modules['transformers'] = None; from ast_audio.cli import main; "
                        "sys.exit(main(sys.argv[1:]))")
FAST = ["--repeats", "1", "--batch-size", "2", "--seconds", "3", "--no-peak"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_model(tiny_model(), tmp_path_factory.mktemp("bench") / "tiny")


def test_bench_with_every_path(checkpoint, tmp_path):
    """The default run: every precision this CPU runs natively, auto's pick named and timed, the four peers (or the
    ones this CPU runs natively) with their logits checked, skipped variants listed with a reason, the headline
    ratio computed from the JSON's own timings."""
    out = tmp_path / "bench.json"
    run = subprocess.run([CLI, "bench", "--checkpoint", str(checkpoint), *FAST, "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    names = [v["name"] for v in data["variants"]]
    cpu = cpu_info()
    expected_ours = ["ast-audio fp32", "ast-audio bf16", "ast-audio int8", "ast-audio ort-fp32", "ast-audio ort-int8"]
    expected_peers = ["transformers fp32", "transformers bf16", "transformers onnxruntime fp32",
                      "transformers onnxruntime int8"]
    if not cpu.native_bf16:  # emulated: skipped with the reason, never timed
        expected_ours.remove("ast-audio bf16")
        expected_peers.remove("transformers bf16")
        assert "would be emulated" in data["skipped"]["ast-audio bf16"]
        assert "would be emulated" in data["skipped"]["transformers bf16"]
        assert "bf16" not in data["peaks_gflops"]
    assert names == expected_ours + expected_peers
    assert data["cpu_class"] == cpu.cpu_class and data["cpu"] == cpu.describe()
    auto = choose_precision("auto")
    assert data["auto"] == {"precision": auto.precision, "reason": auto.reason,
                            "variant": f"ast-audio {auto.precision}"}
    for v in data["variants"]:
        assert v["latency_s"] > 0 and v["batch_s_per_clip"] > 0 and v["throughput_clips_per_s"] > 0
        assert v["peer"] == v["name"].startswith("transformers")
    by_name = {v["name"]: v for v in data["variants"]}
    assert by_name["ast-audio fp32"]["max_abs_logit_diff"] == 0.0
    # the same weights in transformers and in ONNX Runtime: fp32 logits match (one LayerNorm eps there, see save_hf)
    for name in ("transformers fp32", "transformers onnxruntime fp32", "ast-audio ort-fp32"):
        assert by_name[name]["max_abs_logit_diff"] < 1e-4, name
    for name in ("ast-audio int8", "ast-audio ort-int8", "transformers onnxruntime int8"):
        assert by_name[name]["max_abs_logit_diff"] < 0.5, name
    peers = [v for v in data["variants"] if v["peer"]]
    fastest = min(peers, key=lambda v: v["batch_s_per_clip"])
    mine = by_name[data["auto"]["variant"]]
    headline = data["ratios"]["auto / fastest peer (batch 2)"]
    assert headline == pytest.approx(fastest["batch_s_per_clip"] / mine["batch_s_per_clip"])
    assert data["targets"]["auto_vs_fastest_peer"]["value"] == pytest.approx(headline)
    assert data["targets"]["auto_vs_fastest_peer"]["met"] == (headline >= 1.0)
    assert set(data["realtime"]) == {f"auto ({auto.precision})"}
    rt = data["realtime"][f"auto ({auto.precision})"]
    # 3 s of audio in 1.295 s windows (128 frames), no overlap: ceil(3 / 1.295) = 3 windows
    assert rt["windows"] == 3 and rt["realtime_factor"] == pytest.approx(3.0 / rt["wall_s"])
    assert f"auto picks {auto.precision}" in run.stdout and "auto / fastest peer (batch 2)" in run.stdout
    assert f"cpu: {cpu.describe()}" in run.stdout


def test_bench_without_transformers(checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-c", WITHOUT_TRANSFORMERS, "bench", "--checkpoint", str(checkpoint),
                          *FAST, "--precisions", "fp32,int8", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "transformers: not installed" in run.stderr and "skipping the comparison" in run.stdout
    data = json.loads(out.read_text())
    auto = f"ast-audio {choose_precision('auto').precision}"
    assert [v["name"] for v in data["variants"]] == list(dict.fromkeys(["ast-audio fp32", "ast-audio int8", auto]))
    assert data["ratios"] == {} and data["targets"] == {}


def test_bench_peak_and_fraction(checkpoint, tmp_path):
    """With the peaks measured (native dtypes only), each variant's fraction of peak is FLOPs / time / peak."""
    out = tmp_path / "bench.json"
    run = subprocess.run([CLI, "bench", "--checkpoint", str(checkpoint), "--repeats", "1", "--batch-size", "2",
                          "--seconds", "0", "--compare", "none", "--precisions", "fp32", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    expected = {"fp32", "int8", "bf16"} if cpu_info().native_bf16 else {"fp32", "int8"}
    assert set(data["peaks_gflops"]) == expected and all(v > 0 for v in data["peaks_gflops"].values())
    for variant in data["variants"]:
        dtype = variant["compute_dtype"]
        fraction = data["flops_per_clip"] / variant["batch_s_per_clip"] / (data["peaks_gflops"][dtype] * 1e9)
        assert variant["fraction_of_peak"] == pytest.approx(fraction)
    assert data["realtime"] == {}


def test_cli_defaults_mirror_the_library():
    """cli/bench.py keeps copies of the defaults so that `--help` needs no torch: they must agree."""
    from ast_audio.bench import speed as bench
    from ast_audio.cli import bench as command
    from ast_audio.model.precision import PRECISIONS

    assert command.PRECISIONS_DEFAULT == PRECISIONS
    assert (command.DEFAULT_BATCH, command.DEFAULT_REPEATS) == (bench.DEFAULT_BATCH, bench.DEFAULT_REPEATS)


@pytest.mark.parametrize("option, message", [
    (["--precisions", "fp32,fp16"], "ast-audio: error: precision must be one of auto, fp32, bf16, int8, ort-fp32, "
                                    "ort-int8, got 'fp16'"),
    (["--checkpoint", "/nonexistent/model"], "ast-audio: error: /nonexistent/model: no such file or folder"),
])
def test_bench_bad_options_one_line(option, message):
    run = subprocess.run([CLI, "bench", *option, *FAST], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)


def test_bench_accuracy_cli(tmp_path):
    """--accuracy end to end (1 training epoch, so only the report's consistency is checked, not the model). It
    trains on the demo's fixed thread count whatever --threads says (--threads is for timing), so its report does
    not depend on the machine's load; a model near chance gets a warning note."""
    out = tmp_path / "accuracy.json"
    run = subprocess.run([CLI, "bench", "--accuracy", "--train-epochs", "1", "--test-per-class", "3",
                          "--threads", "2", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    assert data["num_test"] == 12 and data["epochs"] == 1 and len(data["classes"]) == 4
    rows = {r["name"]: r for r in data["rows"]}
    assert set(rows) == {"ast-audio fp32", "ast-audio bf16", "ast-audio int8", "ast-audio ort-fp32",
                         "ast-audio ort-int8"}
    assert rows["ast-audio fp32"]["top1_agreement"] == 1.0 and rows["ast-audio fp32"]["max_abs_logit_diff"] == 0.0
    for row in rows.values():
        assert 0.0 <= row["top1_agreement"] <= 1.0 and row["mean_abs_logit_diff"] <= row["max_abs_logit_diff"]
        assert abs(row["accuracy"] * 12 - round(row["accuracy"] * 12)) < 1e-5  # a count out of 12 clips
    assert rows["ast-audio ort-fp32"]["max_abs_logit_diff"] < 1e-4
    assert f"auto picks {choose_precision('auto').precision}" in data["notes"][0]
    assert f"on 1 x cpu ({THREADS} torch thread" in run.stderr and f"on {THREADS} torch thread" in data["notes"][1]
    correct = round(rows["ast-audio fp32"]["accuracy"] * 12)  # is 1 epoch's model near chance (4 classes)?
    near = binom.sf(correct - 1, 12, 0.25) > 1e-3  # a guess does as well with probability above 1e-3
    assert any(n.startswith("warning: the trained model is near chance") for n in data["notes"]) == near
    assert "top-1 agreement" in run.stdout
