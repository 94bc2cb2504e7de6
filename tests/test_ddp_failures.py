"""DDP never hangs: real torchrun runs on CPU (gloo) where one rank fails at a chosen step.

The failure is injected by the test hook AST_AUDIO_TEST_FAIL_AT="RANK:STEP[:kill]" (`ast_audio.train.dist`): that
rank raises, or kills itself with SIGKILL, at that global step on the first attempt only. 24 clips at batch 8 are 3
steps per epoch, so step 4 is in epoch 2, after the epoch-1 checkpoint. The subprocess timeouts only guard against a
hang (the property under test); no test measures time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ast_audio.train.dist import FAIL_HOOK, TIMEOUT_ENV
from fake_datasets import make_audioset

pytestmark = pytest.mark.torchrun

BIN = Path(sys.executable).parent
TOL = 1e-5  # as tests/test_torchrun.py: DDP's averaged gradients equal one process's up to float32 summation order
HANG_GUARD_S = 400
ARGS = ["train", "--recipe", "audioset-full", "--epochs", "2", "--batch-size", "8", "--target-length", "100",
        "--init", "none", "--device", "cpu", "--num-workers", "0", "--no-progress", "--model-config",
        '{"embed_dim": 32, "depth": 2, "num_heads": 4}', "--set", "warmup=false", "--set", "lr=1e-3", "--set",
        "selection=last"]


def _env(**extra: str) -> dict[str, str]:
    return {"OMP_NUM_THREADS": "1", "PATH": str(BIN) + ":/usr/bin:/bin", TIMEOUT_ENV: "120",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **extra}


def _args(data, out: Path) -> list[str]:
    train_json, eval_json, label_csv = data
    return [*ARGS, "--data", str(train_json), "--eval-data", str(eval_json), "--labels", str(label_csv), "-o",
            str(out)]


def _torchrun(*options: str) -> list[str]:
    return [str(BIN / "torchrun"), *options, "-m", "ast_audio"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The data and an uninterrupted one-process run's final weights."""
    root = tmp_path_factory.mktemp("ddp")
    data = make_audioset(root / "as", classes=4, train_clips=24, eval_clips=7)
    run = subprocess.run([str(BIN / "ast-audio"), *_args(data, root / "one")], capture_output=True, text=True,
                         timeout=HANG_GUARD_S, env=_env())
    assert run.returncode == 0, run.stderr
    return data, load_file(str(root / "one" / "model" / "model.safetensors"))


def _close(weights: dict, reference: dict) -> float:
    assert weights.keys() == reference.keys()
    return max(float((weights[k] - reference[k]).abs().max()) for k in weights)


@pytest.mark.slow
def test_a_failing_rank_ends_every_rank_with_one_line(reference, tmp_path):
    data, _ = reference
    run = subprocess.run([*_torchrun("--standalone", "--nproc_per_node", "2"), *_args(data, tmp_path / "out")],
                         capture_output=True, text=True, timeout=HANG_GUARD_S, env=_env(**{FAIL_HOOK: "1:4"}))
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.startswith("ast-audio: error:")]
    assert lines == ["ast-audio: error: rank 1 of 2: test failure injected at step 4 (AST_AUDIO_TEST_FAIL_AT=1:4)"]
    assert "rank      : 1" in run.stderr or "rank: 1" in run.stderr  # torchrun's summary names the root cause
    assert "test failure injected" in run.stderr.split("Root Cause")[-1]  # from the error file we wrote


@pytest.mark.slow
def test_killed_rank_restarts_from_the_checkpoint_to_the_same_weights(reference, tmp_path):
    data, expected = reference
    out = tmp_path / "out"
    run = subprocess.run([*_torchrun("--standalone", "--nproc_per_node", "2", "--max-restarts", "1"),
                          *_args(data, out)], capture_output=True, text=True, timeout=HANG_GUARD_S,
                         env=_env(**{FAIL_HOOK: "1:4:kill"}))
    assert run.returncode == 0, run.stderr
    assert f"resuming {out} after epoch 1" in run.stderr  # no --resume given: the restart found the checkpoint
    assert _close(load_file(str(out / "model" / "model.safetensors")), expected) < TOL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_agent_rendezvous_restarts_both_nodes(reference, tmp_path):
    """Two torchrun agents (--nnodes 2, c10d rendezvous on localhost), one process each: the multi-node path. Rank 1
    raises in epoch 2; its agent restarts, the other node's agent joins the new rendezvous, and the run resumes from
    the checkpoint to the uninterrupted weights."""
    data, expected = reference
    out = tmp_path / "out"
    port = _free_port()
    agents = [subprocess.Popen([*_torchrun("--nnodes", "2", "--nproc_per_node", "1", "--node-rank", str(node),
                                           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                                           "--rdzv-id", "ast-test", "--max-restarts", "1"), *_args(data, out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env=_env(**{FAIL_HOOK: "1:4"}))
              for node in (0, 1)]
    try:
        results = [agent.communicate(timeout=HANG_GUARD_S) for agent in agents]
    finally:  # a hang fails the test without leaving the agents and their workers behind
        for agent in agents:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGKILL)
    for agent, (_, err) in zip(agents, results, strict=True):
        assert agent.returncode == 0, err
    stderr = "".join(err for _, err in results)
    assert "rank 1 of 2: test failure injected at step 4" in stderr
    assert f"resuming {out} after epoch 1" in stderr
    assert _close(load_file(str(out / "model" / "model.safetensors")), expected) < TOL
