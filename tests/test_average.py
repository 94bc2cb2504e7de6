"""`ast-audio average` compares what defines a model, not how it was written down (issue 19 items 10 and 11).

Two runs of one model store normalisation statistics that differ in the last digits; a custom-width model used to be
stored as `model_size: base384` (or tiny224), so two identical architectures looked different. The expected means
are computed here from the saved tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ast_audio import ASTConfig
from ast_audio.train.recipes import make_recipe
from ast_audio.weights.checkpoint import load_model, save_model
from conftest import run_main, tiny_model


def _edit_config(folder: Path, **changes) -> None:
    """Rewrite parts of a saved model's config.json (as an older version or another machine wrote it)."""
    path = folder / "config.json"
    meta = json.loads(path.read_text())
    for part, fields in changes.items():
        meta[part].update(fields)
    path.write_text(json.dumps(meta))


def test_statistics_that_differ_in_the_13th_digit_average(tmp_path, capsys):
    a = save_model(tiny_model(seed=0), tmp_path / "a")
    b = save_model(tiny_model(seed=1), tmp_path / "b")
    _edit_config(a, frontend={"std": 3.70016349172211})  # the two values of issue 19 item 10
    _edit_config(b, frontend={"std": 3.7001634917212})
    rc, out, err = run_main(capsys, "average", a, b, "-o", tmp_path / "wa")
    assert rc == 0, err
    got, wa, wb = (load_file(str(p / "model.safetensors")) for p in (tmp_path / "wa", a, b))
    for key, value in got.items():
        torch.testing.assert_close(value.double(), (wa[key].double() + wb[key].double()) / 2, atol=1e-7, rtol=0)
    assert load_model(tmp_path / "wa").frontend.std == 3.70016349172211  # the first checkpoint's front end


def test_statistics_beyond_the_tolerance_are_refused(tmp_path, capsys):
    a = save_model(tiny_model(seed=0), tmp_path / "a")
    b = save_model(tiny_model(seed=1), tmp_path / "b")
    _edit_config(a, frontend={"std": 3.7})
    _edit_config(b, frontend={"std": 3.70004})  # 1.1e-5 relative: beyond the stated 1e-6
    rc, _, err = run_main(capsys, "average", a, b, "-o", tmp_path / "wa")
    assert rc == 1 and "\n" not in err.strip()
    assert "front end (std: 3.7 vs 3.70004" in err and not (tmp_path / "wa").exists()


def test_custom_model_is_stored_as_custom():
    spec = make_recipe("folder", model_size="tiny224", model_config={"embed_dim": 64, "depth": 2, "num_heads": 4})
    assert spec.model.ast_config(spec.frontend, 4).model_size == "custom"  # what `train --model-config` builds
    assert ASTConfig(model_size="tiny224").model_size == "tiny224"  # a real tiny224 keeps its name
    assert ASTConfig(embed_dim=768, num_heads=12, depth=12).model_size == "base384"
    with pytest.raises(Exception, match="needs embed_dim"):
        ASTConfig(model_size="custom")


def test_saved_custom_model_says_custom_and_old_names_still_load(tmp_path):
    folder = save_model(tiny_model(), tmp_path / "m")
    assert json.loads((folder / "config.json").read_text())["model"]["model_size"] == "custom"
    _edit_config(folder, model={"model_size": "base384"})  # as checkpoints saved before this fix say
    model = load_model(folder)
    assert model.config.model_size == "custom" and model.config.embed_dim == 32


def test_identical_architectures_stored_under_two_size_names_average(tmp_path, capsys):
    a = save_model(tiny_model(seed=0), tmp_path / "a")
    b = save_model(tiny_model(seed=1), tmp_path / "b")
    _edit_config(a, model={"model_size": "tiny224"})  # issue 19 item 11: "tiny224 vs base384", same model
    _edit_config(b, model={"model_size": "base384"})
    rc, _, err = run_main(capsys, "average", a, b, "-o", tmp_path / "wa")
    assert rc == 0, err


def test_a_different_architecture_names_its_fields(tmp_path, capsys):
    a = save_model(tiny_model(seed=0), tmp_path / "a")
    b = save_model(tiny_model(seed=1, depth=1), tmp_path / "b")
    rc, _, err = run_main(capsys, "average", a, b, "-o", tmp_path / "wa")
    assert rc == 1 and "\n" not in err.strip()
    assert "architecture (depth: 2 vs 1)" in err and "model_size" not in err
