"""load_model over every checkpoint format: native, reference .pth, hub cache; overrides; labels; bad inputs."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from ast_audio import AST, CheckpointError, ConfigError, FrontendConfig
from ast_audio.config import SPEECHCOMMANDS_MEAN
from ast_audio.labels import read_label_csv
from ast_audio.model import adapt_pos_embed
from ast_audio.weights.adapt import adapt_model
from ast_audio.weights.checkpoint import load_model, save_hf, save_model
from ast_audio.weights.convert import native_to_reference
from ast_audio.weights.formats import stride_from_filename
from conftest import LABELS_DIR, tiny_model
from helpers import make_fake_hub_cache, ref_model, save_reference


def logits(model: AST, seed: int = 0) -> torch.Tensor:
    x = torch.randn(2, model.config.input_tdim, model.config.input_fdim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


# ---------------------------------------------------------------------------------------------------------------
# native


def test_native_round_trip_is_identical(tmp_path):
    model = AST(tiny_model(1).config, labels=[f"n{i}" for i in range(5)], multi_label=False,
                frontend=FrontendConfig(target_length=128, mean=-3.0, std=2.0)).eval()
    save_model(model, tmp_path / "native")
    loaded = load_model(tmp_path / "native")
    assert loaded.config == model.config and loaded.frontend == model.frontend
    assert loaded.labels == model.labels and loaded.multi_label is False and not loaded.training
    assert torch.equal(logits(loaded), logits(model))


def test_native_labels_and_frontend_overrides_need_no_surgery(tmp_path):
    model = tiny_model(2)
    save_model(model, tmp_path / "native")
    loaded = load_model(tmp_path / "native", labels=[f"x{i}" for i in range(5)], multi_label=False,
                        frontend={"mean": 1.0})
    assert loaded.labels[4] == "x4" and loaded.multi_label is False and loaded.frontend.mean == 1.0
    assert torch.equal(logits(loaded), logits(model))


# ---------------------------------------------------------------------------------------------------------------
# reference .pth


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_reference_pth_round_trip(tmp_path, prefix):
    model = ref_model(3)
    path = tmp_path / "model.pth"
    save_reference(model, path, prefix)
    loaded = load_model(path)
    c = loaded.config
    assert (c.embed_dim, c.num_heads, c.depth, c.input_tdim, c.input_fdim, c.fstride, c.tstride, c.num_classes) == (
        128, 2, 2, 128, 128, 10, 10, 5)
    assert loaded.labels == tuple(f"class_{i}" for i in range(5)) and loaded.multi_label is True
    assert loaded.frontend.mean == SPEECHCOMMANDS_MEAN  # 128 frames: the Speech Commands statistics
    assert torch.equal(logits(loaded), logits(model))


def test_reference_pth_head_count_must_be_given_when_not_64_dim(tmp_path):
    model = tiny_model(4)  # 32 wide, 4 heads of 8
    save_reference(model, tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match="num_heads="):
        load_model(tmp_path / "tiny.pth")
    assert torch.equal(logits(load_model(tmp_path / "tiny.pth", num_heads=4)), logits(model))


def test_reference_labels_csv(tmp_path):
    model = ref_model(5, num_classes=35)
    save_reference(model, tmp_path / "speechcommands_10_10_0.9812.pth")
    loaded = load_model(tmp_path / "speechcommands_10_10_0.9812.pth",
                        labels=LABELS_DIR / "speechcommands_class_labels_indices.csv")
    assert len(loaded.labels) == 35 and loaded.labels[:2] == ("backward", "follow")
    with pytest.raises(ConfigError, match="50 label names given for 35 classes"):
        load_model(tmp_path / "speechcommands_10_10_0.9812.pth", labels=LABELS_DIR / "esc50_class_labels_indices.csv")


def test_stride_from_filename():
    assert stride_from_filename("audioset_12_12_0.4467.pth") == (12, 12)
    assert stride_from_filename("/x/audioset_bal_10_10_0.3499.pth") == (10, 10)
    assert stride_from_filename("speechcommands_10_10_0.9812.pth") == (10, 10)
    assert stride_from_filename("audioset_16_14_0.4.pth") == (16, 14)
    assert stride_from_filename("audioset_0.4593.pth") is None
    assert stride_from_filename("model.pth") is None


def test_reference_stride_from_file_name_or_keywords(tmp_path):
    model = ref_model(6, fstride=16, tstride=16)  # 8 x 8 grid
    save_reference(model, tmp_path / "tiny_16_16_0.5.pth")
    loaded = load_model(tmp_path / "tiny_16_16_0.5.pth")
    assert (loaded.config.fstride, loaded.config.tstride, loaded.config.grid) == (16, 16, (8, 8))
    assert torch.equal(logits(loaded), logits(model))

    save_reference(model, tmp_path / "plain.pth")  # no stride in the name: 64 patches do not fit stride 10
    with pytest.raises(CheckpointError, match="fstride"):
        load_model(tmp_path / "plain.pth")
    assert torch.equal(logits(load_model(tmp_path / "plain.pth", fstride=16, tstride=16)), logits(model))


def test_reference_stride_in_name_then_keywords_adapt(tmp_path):
    model = ref_model(7, input_tdim=1024, depth=1)
    save_reference(model, tmp_path / "audioset_10_10_0.4593.pth")
    loaded = load_model(tmp_path / "audioset_10_10_0.4593.pth", fstride=16, tstride=16)
    assert loaded.config.grid == (8, 64) and loaded.patch_embed.proj.stride == (16, 16)
    assert torch.equal(loaded.patch_embed.proj.weight, model.patch_embed.proj.weight)


# ---------------------------------------------------------------------------------------------------------------
# overrides -> adapt_model


@pytest.fixture(scope="module")
def audioset_like(tmp_path_factory):
    """A 1024-frame, 527-class, stride-10 model (grid 12 x 101), saved natively."""
    model = tiny_model(8, input_tdim=1024, num_classes=527, depth=1)
    folder = tmp_path_factory.mktemp("as") / "native"
    save_model(model, folder)
    return model, folder


def test_override_input_tdim_cuts_time_axis(audioset_like):
    source, folder = audioset_like
    model = load_model(folder, input_tdim=512)
    assert model.config.grid == (12, 50) and model.frontend.target_length == 512
    assert model.frontend.mean == source.frontend.mean and model.labels == source.labels
    src = source.pos_embed[0, 2:].reshape(12, 101, -1)  # (N, D) -> (f, t, D)
    new = model.pos_embed[0, 2:].reshape(12, 50, -1)
    assert torch.equal(new, src[:, 25:75])  # spec §1.5: ESC-50 keeps columns 25..74
    assert torch.equal(model.pos_embed[0, :2], source.pos_embed[0, :2])
    assert torch.equal(model.mlp_head[1].weight, source.mlp_head[1].weight)  # same classes: head kept
    assert logits(model).shape == (2, 527)


def test_override_num_classes_gives_new_head(audioset_like):
    source, folder = audioset_like
    model = load_model(folder, num_classes=50)
    assert model.mlp_head[1].weight.shape == (50, 32)
    assert model.labels == tuple(f"class_{i}" for i in range(50))
    assert torch.equal(model.blocks[0].mlp.fc1.weight, source.blocks[0].mlp.fc1.weight)
    assert torch.equal(model.pos_embed, source.pos_embed)
    esc = load_model(folder, num_classes=50, labels=str(LABELS_DIR / "esc50_class_labels_indices.csv"))
    assert esc.labels[:2] == ("dog", "rooster")


def test_override_stride_rebuilds_the_conv(audioset_like):
    source, folder = audioset_like
    model = load_model(folder, fstride=16, tstride=16)
    conv = model.patch_embed.proj
    assert conv.stride == (16, 16) and conv.kernel_size == (16, 16)
    assert torch.equal(conv.weight, source.patch_embed.proj.weight)
    assert torch.equal(conv.bias, source.patch_embed.proj.bias)
    expected = adapt_pos_embed(source.pos_embed.detach(), (12, 101), (8, 64))
    assert torch.equal(model.pos_embed.detach(), expected)
    assert torch.equal(model.pos_embed[0, 2:].reshape(8, 64, -1)[:, 0], expected[0, 2:].reshape(8, 64, -1)[:, 0])
    assert logits(model).shape == (2, 527)


def test_adapt_model_leaves_the_source_alone_and_refuses_the_impossible(audioset_like):
    source, _ = audioset_like
    before = source.pos_embed.detach().clone()
    adapted = adapt_model(source, input_tdim=128, multi_label=False)
    assert adapted is not source and adapted.multi_label is False and torch.equal(source.pos_embed, before)
    with pytest.raises(ConfigError, match="fshape"):
        adapt_model(source, fshape=8)
    with pytest.raises(ConfigError, match="embed_dim"):
        adapt_model(source, embed_dim=64)
    with pytest.raises(ConfigError, match="depth"):
        adapt_model(source, depth=2)
    with pytest.raises(ConfigError, match="unknown override"):
        adapt_model(source, tdim=3)


# ---------------------------------------------------------------------------------------------------------------
# labels CSV


def test_read_label_csv_real_files():
    audioset = read_label_csv(LABELS_DIR / "audioset_class_labels_indices.csv")
    assert len(audioset) == 527 and audioset[:2] == ["Speech", "Male speech, man speaking"]
    assert len(read_label_csv(LABELS_DIR / "esc50_class_labels_indices.csv")) == 50
    assert len(read_label_csv(LABELS_DIR / "speechcommands_class_labels_indices.csv")) == 35


def test_read_label_csv_sorts_by_index(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text('index,mid,display_name\n1,/m/b,"b, quoted"\n0,/m/a,a\n')
    assert read_label_csv(path) == ["a", "b, quoted"]


@pytest.mark.parametrize("text,message", [
    ("idx,mid,name\n0,/m/a,a\n", "header"),
    ("index,mid,display_name\n0,/m/a,a,b\n", "expected 3 fields"),
    ("index,mid,display_name\nzero,/m/a,a\n", "not an integer"),
    ("index,mid,display_name\n0,/m/a,a\n2,/m/c,c\n", "missing \\[1\\]"),
    ("index,mid,display_name\n0,/m/a,a\n0,/m/b,b\n", "twice"),
    ("index,mid,display_name\n0,/m/a,\n", "empty display_name"),
    ("index,mid,display_name\n", "no classes"),
])
def test_read_label_csv_rejects_malformed(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(CheckpointError, match=message):
        read_label_csv(path)


# ---------------------------------------------------------------------------------------------------------------
# hub id through a fake Hugging Face cache


def test_hub_id_loads_from_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_model(9)
    make_fake_hub_cache(tmp_path / "hub", "MIT/ast-tiny-test", model)
    monkeypatch.chdir(tmp_path)  # "MIT/ast-tiny-test" must not resolve to a local folder
    loaded = load_model("MIT/ast-tiny-test")
    torch.testing.assert_close(logits(loaded), logits(model), atol=1e-4, rtol=0)  # HF single eps: tiny deviation


def test_hub_id_missing_offline_gives_one_line_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_model("MIT/ast-finetuned-audioset-10-10-0.4593")
    message = str(info.value)
    assert "\n" not in message
    assert "cannot download MIT/ast-finetuned-audioset-10-10-0.4593: no network" in message
    assert f"not in the cache at {tmp_path / 'hub'}" in message and "pass a local folder" in message


def test_hub_without_huggingface_hub_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="pip install huggingface_hub"):
        load_model("MIT/ast-finetuned-audioset-10-10-0.4593")


# ---------------------------------------------------------------------------------------------------------------
# bad inputs


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file if unpickled unsafely


def test_bad_sources_give_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        load_model(tmp_path / "nothing.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="neither an ast-audio config"):
        load_model(tmp_path / "other")
    (tmp_path / "random.pth").write_bytes(os.urandom(2048))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(tmp_path / "random.pth")
    (tmp_path / "random.safetensors").write_bytes(os.urandom(2048))
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        load_model(tmp_path / "random.safetensors")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="unknown file type"):
        load_model(tmp_path / "notes.txt")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a state dict"):
        load_model(tmp_path / "list.pth")
    torch.save({"encoder.weight": torch.zeros(1)}, tmp_path / "unknown.pth")
    with pytest.raises(CheckpointError, match="unrecognised keys"):
        load_model(tmp_path / "unknown.pth")


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "was_run"
    torch.save({"cls_token": _RunsCode(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"refused to load: the file contains code \(io\.open\) that will not"):
        load_model(tmp_path / "evil.pth")
    assert not marker.exists()


def test_wrong_shapes_and_keys_are_named(tmp_path):
    model = tiny_model(10)
    save_model(model, tmp_path / "native")
    meta = json.loads((tmp_path / "native" / "config.json").read_text())
    meta["model"]["input_tdim"] = 256  # the weights hold a 12 x 12 grid
    (tmp_path / "native" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match the model input"):
        load_model(tmp_path / "native")
    meta["frontend"]["target_length"] = 256
    (tmp_path / "native" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="pos_embed has shape"):
        load_model(tmp_path / "native")

    state = native_to_reference(ref_model(11).state_dict())
    state["module.mlp_head.0.weight"] = torch.ones(7)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="mlp_head.0.weight has shape"):
        load_model(tmp_path / "shape.pth")

    state = native_to_reference(ref_model(11).state_dict())
    state["module.v.extra.weight"] = torch.ones(7)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="module.v.extra.weight"):
        load_model(tmp_path / "extra.pth")


def test_transformers_weights_without_their_folder(tmp_path):
    save_hf(tiny_model(12), tmp_path / "hf")
    with pytest.raises(CheckpointError, match="need their folder"):
        load_model(tmp_path / "hf" / "model.safetensors")
    (tmp_path / "hf" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        load_model(tmp_path / "hf")


def test_in_chans_reduce_only_for_imagenet(tmp_path):
    save_model(tiny_model(13), tmp_path / "native")
    with pytest.raises(ConfigError, match="in_chans_reduce"):
        load_model(tmp_path / "native", in_chans_reduce="mean")

