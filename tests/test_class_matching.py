"""Data classes meet model outputs by name, never silently by position (issue 19 item 1).

`ast_audio.labels.match_classes` is the one matcher; `ast-audio eval` and `train --init checkpoint:PATH` use it. The
expected values are computed here from the clip counts and from the source model's own tensors, never by the code
under test.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from ast_audio import AST
from ast_audio.errors import AstAudioWarning, ConfigError
from ast_audio.labels import has_names, match_classes, unnamed_labels
from ast_audio.weights.adapt import HEAD_KEYS, remap_head
from ast_audio.weights.checkpoint import load_model, save_model
from conftest import run_main, tiny_model
from fake_datasets import make_folder

MODEL_ORDER = ("tone", "chirp", "noise")  # the model's outputs; the folder layout sorts: chirp, noise, tone


# ----------------------------------------------------------------------------------------------------------------
# The matcher


def test_match_by_name_in_any_order():
    assert match_classes(["chirp", "noise", "tone"], MODEL_ORDER) == [1, 2, 0]
    assert match_classes(MODEL_ORDER, MODEL_ORDER) == [0, 1, 2]
    data = ["noise", "tone", "chirp"]
    order = match_classes(data, MODEL_ORDER)
    assert [MODEL_ORDER[i] for i in order] == data


def test_mismatch_is_one_line_naming_both_sides():
    with pytest.raises(ConfigError) as info:
        match_classes(["chirp", "noise", "tone", "am"], ["tone", "chirp", "bird", "owl"], data_where="the data",
                      model_where="m")
    text = str(info.value)
    assert "\n" not in text
    assert "not in m: 'noise', 'am'" in text and "not in the data: 'bird', 'owl'" in text


def test_mismatch_quotes_only_the_first_few():
    with pytest.raises(ConfigError, match=r"\(and 7 more\)"):
        match_classes([f"d{i}" for i in range(10)], [f"m{i}" for i in range(10)])


def test_duplicate_names_are_refused():
    with pytest.raises(ConfigError, match="more than once"):
        match_classes(["a", "b", "b"], ["b", "a", "a"])


def test_unnamed_model_matches_by_count_with_a_warning():
    assert unnamed_labels(3) == ("class_0", "class_1", "class_2") and not has_names(unnamed_labels(3))
    assert tiny_model(num_classes=3).labels == unnamed_labels(3)
    with pytest.warns(AstAudioWarning, match="by position, not by name"):
        assert match_classes(["a", "b", "c"], unnamed_labels(3), model_where="m") == [0, 1, 2]
    with pytest.raises(ConfigError, match="has 4 classes but the data has 3"):
        match_classes(["a", "b", "c"], unnamed_labels(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a new head for other classes is not a position match: no warning
        assert match_classes(["a", "b", "c"], unnamed_labels(4), allow_new=True) == [None, None, None]


def test_allow_new_keeps_shared_classes():
    assert match_classes(["am", "chirp", "tone"], MODEL_ORDER, allow_new=True) == [None, 1, 0]
    assert match_classes(["x", "y"], MODEL_ORDER, allow_new=True) == [None, None]


# ----------------------------------------------------------------------------------------------------------------
# The head surgery


def _named(labels: tuple[str, ...], seed: int = 0, **changes) -> AST:
    """A tiny single-label model with `labels` and a head whose every tensor is random (rows far apart, so a row in
    the wrong place, or a LayerNorm reset to its init, cannot pass for the right one)."""
    base = tiny_model(seed=seed, num_classes=len(labels), **changes)
    model = AST(base.config, frontend=base.frontend, labels=list(labels), multi_label=False)
    model.load_state_dict(base.state_dict())
    torch.manual_seed(seed + 100)
    with torch.no_grad():
        for key in HEAD_KEYS:
            model.get_parameter(key).normal_()
    return model.eval()


def test_remap_head_moves_rows_by_name_and_draws_new_ones():
    source = _named(MODEL_ORDER, seed=1)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    data = ("am", "chirp", "noise", "tone")
    new = remap_head(source, data, match_classes(data, MODEL_ORDER, allow_new=True))
    assert new.labels == data and new.config.num_classes == 4
    weight, bias = new.state_dict()["mlp_head.1.weight"], new.state_dict()["mlp_head.1.bias"]
    for i, name in enumerate(data[1:], start=1):
        j = MODEL_ORDER.index(name)
        assert torch.equal(weight[i], state["mlp_head.1.weight"][j])
        assert torch.equal(bias[i], state["mlp_head.1.bias"][j])
    assert not any(torch.equal(weight[0], row) for row in state["mlp_head.1.weight"])  # "am": a new row
    for key in ("mlp_head.0.weight", "mlp_head.0.bias"):
        assert torch.equal(new.state_dict()[key], state[key])  # the head LayerNorm is kept with the rows
    for key, value in state.items():  # the backbone is untouched, and so is the source model
        if key not in HEAD_KEYS:
            assert torch.equal(new.state_dict()[key], value), key
        assert torch.equal(source.state_dict()[key], value), key


def test_remap_head_without_shared_classes_is_a_new_head():
    source = _named(MODEL_ORDER, seed=2)
    new = remap_head(source, ("x", "y"), [None, None])
    assert new.labels == ("x", "y") and new.state_dict()["mlp_head.1.weight"].shape == (2, 32)
    assert torch.equal(new.state_dict()["mlp_head.0.weight"], torch.ones(32))  # a fresh LayerNorm: nothing kept


def test_remap_head_moves_a_frame_models_classifier_rows_too():
    """A frame model's per-column classifier rows follow their class like the clip head's; the weak-label
    attention (C x C) is new."""
    from ast_audio.config import FrameHeadConfig

    source = _named(MODEL_ORDER, seed=3, frame_head=FrameHeadConfig(temporal="none", weak_pool="attention", hidden=16))
    state = {k: v.clone() for k, v in source.state_dict().items()}
    with torch.no_grad():  # a non-zero attention, so "fresh" is visible
        source.frame_head.weak_attention.weight.fill_(0.5)
    data = ("am", "chirp", "noise", "tone")
    new = remap_head(source, data, match_classes(data, MODEL_ORDER, allow_new=True))
    got = new.state_dict()
    for i, name in enumerate(data[1:], start=1):
        j = MODEL_ORDER.index(name)
        assert torch.equal(got["frame_head.classifier.weight"][i], state["frame_head.classifier.weight"][j])
        assert torch.equal(got["frame_head.classifier.bias"][i], state["frame_head.classifier.bias"][j])
    assert got["frame_head.weak_attention.weight"].shape == (4, 4)
    assert torch.count_nonzero(got["frame_head.weak_attention.weight"]) == 0
    x = torch.randn(1, new.config.input_tdim, new.config.input_fdim)
    assert new.forward_frames(x).shape[-1] == 4


# ----------------------------------------------------------------------------------------------------------------
# ast-audio eval


@pytest.fixture(scope="module")
def unbalanced(tmp_path_factory) -> Path:
    """4 tone clips, 2 chirps, 2 noises: a model that always says "tone" is right on exactly 4 / 8."""
    root = tmp_path_factory.mktemp("unbalanced") / "data"
    make_folder(root, classes=("tone",), clips_per_class=4, seconds=0.5)
    make_folder(root, classes=("chirp", "noise"), clips_per_class=2, seconds=0.5, seed=1)
    return root


def _always(label: str, labels: tuple[str, ...], folder: Path) -> Path:
    """A tiny model whose logits are its head bias alone: +20 for `label`, 0 for the others (always `label`)."""
    model = _named(labels)
    with torch.no_grad():
        model.mlp_head[1].weight.zero_()
        model.mlp_head[1].bias.copy_(torch.tensor([20.0 if n == label else 0.0 for n in labels]))
    return save_model(model, folder)


def _label_csv(path: Path, names: tuple[str, ...]) -> Path:
    path.write_text("index,mid,display_name\n" + "".join(f"{i},/x/{i},{n}\n" for i, n in enumerate(names)))
    return path


def _eval(capsys, checkpoint: Path, data: Path, *extra: str) -> tuple[int, str, str]:
    return run_main(capsys, "eval", "--checkpoint", checkpoint, "--layout", "folder", "--data", data,
                    "--split", "train", *extra)


def test_eval_matches_classes_by_name_with_or_without_label_csv(unbalanced, tmp_path, capsys):
    model = _always("tone", MODEL_ORDER, tmp_path / "model")
    expected = 4 / 8  # the tone clips (independent of any class order)
    results = []
    for extra in ([], ["--labels", str(_label_csv(tmp_path / "same.csv", MODEL_ORDER))],
                  ["--labels", str(_label_csv(tmp_path / "other.csv", ("noise", "tone", "chirp")))]):
        rc, out, err = _eval(capsys, model, unbalanced, *extra)
        assert rc == 0, err
        assert "by position" not in err
        results.append(json.loads(out))
    assert [r["acc"] for r in results] == [pytest.approx(expected, abs=1e-12)] * 3
    assert results[0]["mAP"] == pytest.approx(results[1]["mAP"], abs=1e-12) == results[2]["mAP"]


def test_eval_refuses_other_classes_in_one_line(unbalanced, tmp_path, capsys):
    model = _always("tone", ("tone", "chirp", "bird"), tmp_path / "model")
    rc, out, err = _eval(capsys, model, unbalanced)
    assert rc != 0 and out == ""
    line = err.strip()
    assert line.startswith("ast-audio: error:") and "\n" not in line and "Traceback" not in err
    assert "'noise'" in line and "'bird'" in line


def test_eval_of_an_unnamed_model_says_it_matches_by_position(unbalanced, tmp_path, capsys):
    model = save_model(tiny_model(num_classes=3), tmp_path / "unnamed")  # stores class_0..class_2
    rc, out, err = _eval(capsys, model, unbalanced)
    assert rc == 0 and "acc" in json.loads(out)
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "by position, not by name" in warning[0]


# ----------------------------------------------------------------------------------------------------------------
# ast-audio train --init checkpoint:PATH


def test_train_init_checkpoint_reorders_the_head_by_name(unbalanced, tmp_path, capsys):
    source = _named(MODEL_ORDER, seed=5)
    save_model(source, tmp_path / "src")
    rows = {name: (source.mlp_head[1].weight[i].clone(), source.mlp_head[1].bias[i].clone())
            for i, name in enumerate(MODEL_ORDER)}
    out = tmp_path / "run"
    # lr 1e-10: one epoch moves no weight by more than ~1e-8, so the saved model is the model training started from
    rc, _, err = run_main(capsys, "train", "--recipe", "folder", "--data", unbalanced, "--init",
                          f"checkpoint:{tmp_path / 'src'}", "--epochs", "1", "--lr", "1e-10", "--batch-size", "4",
                          "--target-length", "128", "--num-workers", "0", "--no-progress", "-o", out)
    assert rc == 0, err
    trained = load_model(out / "model")
    assert trained.labels == ("chirp", "noise", "tone")  # the data's order (sorted folder names)
    for i, name in enumerate(trained.labels):
        weight, bias = rows[name]
        torch.testing.assert_close(trained.mlp_head[1].weight[i].detach(), weight, atol=1e-6, rtol=0)
        torch.testing.assert_close(trained.mlp_head[1].bias[i].detach(), bias, atol=1e-6, rtol=0)
    torch.testing.assert_close(trained.pos_embed.detach(), source.pos_embed.detach(), atol=1e-6, rtol=0)
