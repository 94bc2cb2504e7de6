"""Hostile and broken checkpoints and front-end settings (issue 10): each is refused with a one-line typed error
that names the field or tensor, before anything large is allocated; nothing reports a NaN score."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ast_audio import AST, ASTConfig, FrontendConfig
from ast_audio.audio.fbank import fbank
from ast_audio.audio.features import FeatureExtractor
from ast_audio.audio.io import checked_mono
from ast_audio.config import MAX_PARAMETERS
from ast_audio.errors import AudioInputError, CheckpointError, ConfigError
from ast_audio.infer.tagger import Tagger
from ast_audio.weights.checkpoint import load_model, save_hf, save_model
from ast_audio.weights.convert import native_to_reference
from conftest import run_cli, tiny_model
from limits import allocation_limit

Edit = Callable[[dict[str, Any]], None]


def native_folder(root: Path, name: str = "native", edit: Edit | None = None,
                  edit_state: Callable[[dict[str, torch.Tensor]], None] | None = None) -> Path:
    """A tiny model saved natively, with config.json and/or the weights edited afterwards."""
    save_model(tiny_model(0), root / name)
    return edited(root / name, edit, edit_state)


def hf_folder(root: Path, edit: Edit | None = None,
              edit_state: Callable[[dict[str, torch.Tensor]], None] | None = None) -> Path:
    """A tiny model saved in the transformers format, with config.json and/or the weights edited afterwards."""
    save_hf(tiny_model(0), root / "hf")
    return edited(root / "hf", edit, edit_state)


def edited(folder: Path, edit: Edit | None, edit_state: Callable[[dict[str, torch.Tensor]], None] | None) -> Path:
    """Apply `edit` to the folder's config.json and `edit_state` to its model.safetensors, in place."""
    if edit is not None:
        meta = json.loads((folder / "config.json").read_text())
        edit(meta)
        (folder / "config.json").write_text(json.dumps(meta))
    if edit_state is not None:
        state = load_file(str(folder / "model.safetensors"))
        edit_state(state)
        save_file(state, str(folder / "model.safetensors"))
    return folder


def one_line_error(error: type[Exception], call: Callable[[], Any]) -> str:
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------------------------------------------
# Item 1: sizes that would allocate gigabytes are refused from config.json and the weights' header


@pytest.mark.parametrize("model,frontend,message", [
    ({"embed_dim": 65536}, {}, "embed_dim must be an integer in 1..8192, got 65536"),  # 51 GB before the fix
    ({"embed_dim": 10**9}, {}, "embed_dim must be an integer in 1..8192, got 1000000000"),
    ({"input_tdim": 10**8}, {"target_length": 10**8}, "input_tdim must be an integer in 1..65536 frames"),
    ({"mlp_ratio": 1e6}, {}, "mlp_ratio must be a finite number in (0, 16], got 1000000.0"),
    ({"depth": 10**7}, {}, "depth must be an integer in 1..128 blocks, got 10000000"),  # grew for 77 s
])
def test_crafted_sizes_are_refused_before_anything_is_allocated(tmp_path, model, frontend, message):
    def edit(meta):
        meta["model"].update(model)
        meta["frontend"].update(frontend)

    folder = native_folder(tmp_path, edit=edit)
    with allocation_limit():  # any allocation over 256 MB fails (RuntimeError/MemoryError, not CheckpointError)
        text = one_line_error(CheckpointError, lambda: load_model(folder))
    assert message in text and "config.json" in text


@pytest.mark.parametrize("kind", ["native", "hf"])
def test_a_config_the_weights_do_not_hold_is_refused_from_the_header(tmp_path, kind):
    """4096 wide is within bounds but asks for 1.6 GB; the 32-wide weights' header says otherwise."""
    if kind == "native":
        folder = native_folder(tmp_path, edit=lambda meta: meta["model"].update(embed_dim=4096))
    else:
        folder = hf_folder(tmp_path, edit=lambda config: config.update(hidden_size=4096, intermediate_size=16384))
    with allocation_limit():
        text = one_line_error(CheckpointError, lambda: load_model(folder))
    assert "has shape" in text and "4096" in text


def test_transformers_config_fields_are_checked_under_their_own_names(tmp_path):
    folder = hf_folder(tmp_path, edit=lambda config: config.update(hidden_size=65536))
    with allocation_limit():
        text = one_line_error(CheckpointError, lambda: load_model(folder))
    assert "hidden_size must be an integer in 1..8192, got 65536" in text
    folder = hf_folder(tmp_path / "eps", edit=lambda config: config.update(layer_norm_eps="small"))
    assert "layer_norm_eps must be a finite number in (0, 1], got str 'small'" in one_line_error(
        CheckpointError, lambda: load_model(folder))


@pytest.mark.parametrize("changes", [
    {},
    dict(model_size="tiny224", embed_dim=32, depth=2, num_heads=4, input_tdim=128, num_classes=5),
    dict(model_size="small224", fshape=128, tshape=2, fstride=128, tstride=1, pooling="mean", input_tdim=100),
    dict(model_size="tiny224", embed_dim=24, num_heads=3, depth=1, mlp_ratio=2.5, input_fdim=64, fstride=7),
])
def test_num_parameters_counts_the_real_model(changes):
    config = ASTConfig(**changes)
    with torch.device("meta"):  # shapes only, no memory
        model = AST(config)
    assert config.num_parameters == sum(p.numel() for p in model.parameters())


def test_a_parameter_budget_bounds_the_whole_model():
    # Every field is within its own bounds, but 8192 wide x 128 deep is ~103 billion parameters.
    text = one_line_error(ConfigError, lambda: ASTConfig(embed_dim=8192, depth=128, num_heads=64))
    assert "parameters" in text and f"{MAX_PARAMETERS:.0e}" in text and "412 GB" in text


# ---------------------------------------------------------------------------------------------------------------
# Item 5: every config field is type- and range-checked, in one line naming the field, value and range

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("field,value,expected", [
    ("model_size", None, "model_size must be one of"),
    ("model_size", {"a": 1}, "model_size must be one of"),  # unhashable: was a TypeError
    ("input_fdim", 0, "input_fdim must be an integer in 1..1024 mel bins, got 0"),
    ("input_fdim", "128", "input_fdim must be an integer in 1..1024 mel bins, got str '128'"),
    ("input_fdim", 128.0, "got float 128.0"),
    ("input_tdim", 65537, "input_tdim must be an integer in 1..65536 frames, got 65537"),
    ("input_tdim", True, "got bool True"),
    ("fstride", 129, "fstride must be an integer in 1..128 (at most input_fdim), got 129"),
    ("tstride", 0, "tstride must be an integer in 1..1024"),
    ("fshape", -16, "fshape must be an integer in 1..1024, got -16"),
    ("num_classes", 100001, "num_classes must be an integer in 1..100000, got 100001"),
    ("num_classes", [527], "got list [527]"),
    ("pooling", None, "pooling must be one of ['tokens', 'mean'], got None"),
    ("embed_dim", 8193, "embed_dim must be an integer in 1..8192, got 8193"),
    ("depth", 0, "depth must be an integer in 1..128 blocks, got 0"),
    ("num_heads", 769, "num_heads must be an integer in 1..768 (at most embed_dim), got 769"),
    ("mlp_ratio", 0, "mlp_ratio must be a finite number in (0, 16], got 0"),
    ("mlp_ratio", NAN, "mlp_ratio must be a finite number in (0, 16], got nan"),
    ("mlp_ratio", "4", "got str '4'"),
    ("mlp_ratio", 10**400, "mlp_ratio must be a finite number in (0, 16], got 1000000000000"),  # float() overflows
    ("layer_norm_eps", 0.0, "layer_norm_eps must be a finite number in (0, 1], got 0.0"),
    ("layer_norm_eps", -1e-6, "got -1e-06"),
    ("head_norm_eps", INF, "head_norm_eps must be a finite number in (0, 1], got inf"),
])
def test_every_model_field_is_checked(field, value, expected):
    assert expected in one_line_error(ConfigError, lambda: ASTConfig(**{field: value}))


@pytest.mark.parametrize("field,value,expected", [
    ("sample_rate", 10**9, "sample_rate must be an integer in 1000..384000 Hz, got 1000000000"),
    ("sample_rate", 16000.0, "got float 16000.0"),
    ("sample_rate", True, "got bool True"),
    ("num_mel_bins", 0, "num_mel_bins must be an integer in 1..1024, got 0"),
    ("target_length", 65537, "target_length must be an integer in 1..65536 frames, got 65537"),
    ("mean", INF, "mean must be a finite number in [-1000, 1000], got inf"),
    ("mean", None, "got NoneType None"),
    ("std", 0.0, "std must be a finite number in [0.001, 1000], got 0.0"),
    ("std", NAN, "std must be a finite number in [0.001, 1000], got nan"),
    ("frame_length_ms", 1e9, "frame_length_ms must be a finite number in (0, 1000] ms, got 1000000000.0"),
    ("frame_length_ms", 0.5, "gives a 8-sample window at 16000 Hz; allowed 16..16384 samples"),
    ("frame_shift_ms", 1e-9, "frame_shift_ms 1e-09 gives a hop of 0 samples at 16000 Hz"),  # ZeroDivisionError
    ("frame_shift_ms", 30.0, "frame_shift_ms must be a finite number in (0, 25] ms (at most frame_length_ms)"),
])
def test_every_frontend_field_is_checked(field, value, expected):
    assert expected in one_line_error(ConfigError, lambda: FrontendConfig(**{field: value}))


def test_valid_values_are_normalised_for_json():
    assert ASTConfig(mlp_ratio=4).mlp_ratio == 4.0 and isinstance(ASTConfig(mlp_ratio=4).mlp_ratio, float)
    assert type(FrontendConfig(sample_rate=np.int64(8000)).sample_rate) is int


# Item 5 and 7: checkpoint fields of the wrong kind


@pytest.mark.parametrize("edit,expected", [
    (lambda m: m.update(model=None), "invalid 'model' config (ASTConfig must be a JSON object of its fields, got "
                                     "NoneType None)"),
    (lambda m: m.update(frontend=[1, 2]), "invalid 'frontend' config (FrontendConfig must be a JSON object"),
    (lambda m: m["frontend"].update(sample_rate=10**9), "sample_rate must be an integer in 1000..384000 Hz"),
    (lambda m: m["frontend"].update(frame_shift_ms=1e-9), "frame_shift_ms 1e-09 gives a hop of 0 samples"),
    (lambda m: m["frontend"].update(mean=INF), "mean must be a finite number in [-1000, 1000], got inf"),
    (lambda m: m["model"].update(layer_norm_eps=0), "layer_norm_eps must be a finite number in (0, 1], got 0"),
    (lambda m: m.update(labels="tone"), "labels must be a list of 5 strings (one per class), got str 'tone'"),
    (lambda m: m.update(labels=[0, 1, 2, 3, 4]), "labels must be a list of 5 strings (one per class), got a list "
                                                 "holding non-strings"),
    (lambda m: m.update(labels=["a", "b"]), "labels must be a list of 5 strings (one per class), got 2 names"),
    (lambda m: m.update(multi_label="yes"), "multi_label must be true or false, got str 'yes'"),
    (lambda m: m.update(multi_label=1), "multi_label must be true or false, got int 1"),
    (lambda m: m.update(version=True), "version True is not supported"),
    (lambda m: m.pop("labels"), "missing field(s) ['labels']"),
])
def test_native_config_fields_of_the_wrong_kind_are_refused(tmp_path, edit, expected):
    folder = native_folder(tmp_path, edit=edit)
    text = one_line_error(CheckpointError, lambda: load_model(folder))
    assert expected in text and str(folder) in text


def test_unparseable_json_values_are_refused(tmp_path):
    folder = native_folder(tmp_path)
    config = folder / "config.json"
    text = config.read_text()
    config.write_text(text.replace('"embed_dim": 32', '"embed_dim": ' + "9" * 5000))  # over Python's int limit
    assert "not a readable JSON config" in one_line_error(CheckpointError, lambda: load_model(folder))
    config.write_text(text.replace('"embed_dim": 32', '"embed_dim": ' + "[" * 100_000 + "]" * 100_000))
    assert "not a readable JSON config" in one_line_error(CheckpointError, lambda: load_model(folder))


def test_transformers_labels_must_be_strings(tmp_path):
    folder = hf_folder(tmp_path, edit=lambda config: config.update(id2label={str(i): i for i in range(5)}))
    assert "id2label must be an object of index -> class name strings" in one_line_error(
        CheckpointError, lambda: load_model(folder))


@pytest.mark.parametrize("edit,field", [
    (lambda m: m.update(model=None), "ASTConfig must be a JSON object"),
    (lambda m: m["frontend"].update(sample_rate=10**9), "sample_rate must be an integer in 1000..384000 Hz"),
    (lambda m: m["frontend"].update(frame_shift_ms=1e-9), "frame_shift_ms 1e-09 gives a hop of 0 samples"),
])
def test_convert_refuses_a_broken_checkpoint_in_one_line(tmp_path, edit, field):
    folder = native_folder(tmp_path, edit=edit)
    proc = run_cli("convert", folder, tmp_path / "out", "--format", "native")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ast-audio: error: ") and field in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------
# Item 6: non-finite weights, statistics and samples; no NaN score is ever reported


def _poison(key: str, value: float, dtype: torch.dtype = torch.float32):
    def edit(state: dict[str, torch.Tensor]) -> None:
        tensor = state[key].to(dtype)  # copy
        tensor.view(-1)[0] = value
        state[key] = tensor
    return edit


@pytest.mark.parametrize("kind", ["native", "native float64 1e300", "reference", "hf", "imagenet"])
def test_non_finite_weights_are_refused_at_load_in_every_format(tmp_path, kind):
    if kind == "native":
        source, name = native_folder(tmp_path, edit_state=_poison("blocks.0.mlp.fc1.weight", NAN)), \
            "blocks.0.mlp.fc1.weight"
    elif kind == "native float64 1e300":  # finite in the file, infinite once cast to the model's float32
        source, name = native_folder(tmp_path, edit_state=_poison("norm.weight", 1e300, torch.float64)), "norm.weight"
    elif kind == "reference":
        state = native_to_reference(tiny_model(0, embed_dim=128, num_heads=2).state_dict())
        _poison("module.v.pos_embed", INF)(state)
        source, name = tmp_path / "ref.pth", "module.v.pos_embed"
        torch.save(state, source)
    elif kind == "hf":
        source, name = hf_folder(tmp_path, edit_state=_poison("classifier.dense.bias", -INF)), "classifier.dense.bias"
    else:
        state = {k: v for k, v in tiny_model(0).state_dict().items() if not k.startswith("mlp_head")}
        state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"].repeat(1, 3, 1, 1)  # RGB kernels
        _poison("blocks.1.attn.qkv.weight", NAN)(state)
        source, name = tmp_path / "deit.pth", "blocks.1.attn.qkv.weight"
        torch.save(state, source)
    overrides = dict(model_size="tiny224", num_heads=4, input_tdim=128) if kind == "imagenet" else {}  # width: weights
    text = one_line_error(CheckpointError, lambda: load_model(source, **overrides))
    assert f"tensor {name} holds 1 NaN or infinite value(s)" in text


@pytest.mark.parametrize("kind", ["native", "pickle"])
def test_integer_weight_tensors_are_refused_by_name(tmp_path, kind):
    if kind == "native":
        source = native_folder(tmp_path, edit_state=lambda s: s.update(
            {"blocks.0.attn.qkv.weight": s["blocks.0.attn.qkv.weight"].to(torch.int8)}))
        dtype = "I8"
    else:
        state = native_to_reference(tiny_model(0, embed_dim=128, num_heads=2).state_dict())
        state["module.v.blocks.0.attn.qkv.weight"] = state["module.v.blocks.0.attn.qkv.weight"].to(torch.int8)
        source, dtype = tmp_path / "int8.pth", "torch.int8"
        torch.save(state, source)
    text = one_line_error(CheckpointError, lambda: load_model(source))
    assert f"blocks.0.attn.qkv.weight has dtype {dtype}; expected floating-point weights" in text


def test_fbank_refuses_non_finite_and_overflowing_samples():
    wave = torch.sin(torch.arange(1600.0))
    nan = wave.clone()
    nan[7] = NAN
    assert "1 NaN or infinite sample(s)" in one_line_error(AudioInputError, lambda: fbank(nan))
    # finite float32 samples whose power spectrum overflows: was an inf log-mel output
    assert "overflows torch.float32" in one_line_error(AudioInputError, lambda: fbank(wave * 1e30))
    assert torch.isfinite(fbank(wave * 32767)).all()  # int-scaled but representable: computed, as Kaldi does


def test_float64_samples_are_checked_after_the_float32_cast():
    wave = torch.sin(torch.arange(1600, dtype=torch.float64)) * 1e300  # finite float64, inf as float32
    extractor = FeatureExtractor(FrontendConfig(target_length=8))
    assert "NaN or infinite sample(s) (in torch.float32)" in one_line_error(AudioInputError, lambda: extractor(wave))
    data = np.full((1600, 2), 1e300)  # (N, C) float64 decoded samples
    assert "NaN or infinite" in one_line_error(AudioInputError, lambda: checked_mono("clip.wav", data, "DOUBLE"))


def test_a_model_that_produces_nan_scores_raises_instead_of_reporting_them():
    model = tiny_model(0)
    with torch.no_grad():
        model.blocks[1].mlp.fc2.weight[0, 0] = NAN  # in memory: loading would refuse it
    tagger = Tagger(model)
    text = one_line_error(CheckpointError,
                          lambda: tagger.tag(torch.sin(torch.arange(16000.0)) * 0.1, sample_rate=16000))
    assert "the model produced non-finite scores" in text


# ---------------------------------------------------------------------------------------------------------------
# Item 10: a malicious pickle is refused as code, without running it and without torch warnings


class _RunsShell:
    """Pickles as a call to os.system: unpickling it unsafely would run `command`."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 4"])
def test_malicious_pickle_is_refused_as_code_and_not_run(tmp_path, writer):
    marker = tmp_path / "was_run"
    evil = tmp_path / "evil.pth"
    payload = {"cls_token": _RunsShell(f"touch {marker}")}
    if writer == "torch.save":
        torch.save(payload, evil)
    else:  # a raw pickle: torch warns about the protocol before refusing it
        evil.write_bytes(pickle.dumps(payload, protocol=4))
    text = one_line_error(CheckpointError, lambda: load_model(evil))
    assert "the file contains code (posix.system) that will not be run" in text and ".safetensors" in text

    proc = run_cli("convert", evil, tmp_path / "out", "--format", "native")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ast-audio: error: ") and "code" in lines[0], proc.stderr
    assert "Warning" not in proc.stderr and "not a readable" not in proc.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()

