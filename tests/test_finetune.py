"""Fine-tuning modes (ast_audio.train.finetune), their engine runs, and the few-shot folder recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from ast_audio.audio.features import FeatureExtractor
from ast_audio.errors import ConfigError
from ast_audio.train import engine as E
from ast_audio.train import finetune as FT
from ast_audio.train.data import ClipDataset
from ast_audio.train.dist import DistInfo
from ast_audio.train.layouts import load_splits
from ast_audio.train.recipes import make_recipe
from ast_audio.weights.checkpoint import load_model, save_model
from conftest import tiny_model
from fake_datasets import make_folder

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 4}
D, C = 32, 5  # tiny_model: 32 wide, 5 classes, 2 blocks, mlp_ratio 4


def config(finetune: str, **changes):
    return make_recipe("folder", finetune=finetune, **changes)


def numel(model, prefixes: tuple[str, ...]) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))


def backward(model) -> None:
    model.train()
    x = torch.randn(2, model.config.input_tdim, model.config.input_fdim)
    model(x).square().sum().backward()


INFO = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
HEAD = 2 * D + D * C + C  # mlp_head: LayerNorm (weight, bias) + Linear


@pytest.mark.parametrize("mode", ["full", "linear", "last:1", "lora"])
def test_each_mode_trains_only_what_it_should(mode):
    model = tiny_model()
    total = sum(p.numel() for p in model.parameters())
    plan = FT.prepare(model, config(mode, lora_rank=4, lora_targets=("qkv", "fc2")))
    expected = {
        "full": total,
        "linear": HEAD,
        "last:1": numel(model, ("blocks.1.", "norm.", "mlp_head.")),
        # per block: qkv A (4 x D) + B (3D x 4), fc2 A (4 x 4D) + B (D x 4); the head trains too
        "lora": 2 * (4 * D + 3 * D * 4 + 4 * 4 * D + D * 4) + HEAD,
    }[mode]
    if mode == "last:1":
        assert expected == 12 * D * D + 13 * D + 2 * D + HEAD  # one block (qkv, proj, fc1, fc2, 2 norms) by hand
    assert plan.trainable == expected and plan.total == total
    backward(model)
    for name, p in model.named_parameters():
        trained = (mode == "full" or name.startswith("mlp_head.")
                   or (mode == "last:1" and name.startswith(("blocks.1.", "norm.")))
                   or (mode == "lora" and "lora_" in name))
        assert p.requires_grad == trained, name
        assert (p.grad is not None) == trained, name
    if mode == "lora":  # the patch conv is called `proj` too; only block layers get adapters
        assert not any("patch_embed" in n and "lora" in n for n, _ in model.named_parameters())
        assert sum("lora_A" in n for n, _ in model.named_parameters()) == 4


def test_bad_modes_are_refused():
    for bad in ("half", "last:0", "last:x", "lora:4"):
        with pytest.raises(ConfigError, match="finetune must be"):
            config(bad)
    with pytest.raises(ConfigError, match="lora_targets"):
        config("lora", lora_targets="qkv,attn")
    with pytest.raises(ConfigError, match="more blocks than"):
        FT.prepare(tiny_model(), config("last:3"))


def test_merged_lora_equals_adapter_model(tmp_path):
    model = tiny_model()
    FT.prepare(model, config("lora", lora_rank=4, lora_targets=("qkv", "proj", "fc1", "fc2")))
    torch.manual_seed(1)
    with torch.no_grad():  # B starts at zero (the adapters are a no-op); make them do something
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    x = torch.randn(3, 128, 128)
    model.eval()
    with torch.no_grad():
        adapted = model(x)
        merged = FT.merged_copy(model)
        assert not FT.has_adapters(merged) and FT.has_adapters(model)  # a copy: training goes on with adapters
        assert set(merged.state_dict()) == set(tiny_model().state_dict())
        # float32: W + BA summed once vs x W + (x A) B; differences of a few ulps of logits of size ~1
        torch.testing.assert_close(merged(x), adapted, atol=1e-5, rtol=0)
        assert not torch.allclose(adapted, tiny_model()(x), atol=1e-3)  # the adapters changed the outputs
    save_model(merged, tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "m")(x), adapted, atol=1e-5, rtol=0)


def test_linear_probe_cache_equals_fresh_forward(tmp_path):
    data = make_folder(tmp_path / "data", classes=("tone", "noise"), clips_per_class=3, seconds=0.5)
    splits = load_splits("folder", data)
    model = tiny_model(num_classes=2)
    cached = FT.cache_features(model, ClipDataset(splits.train, model.frontend, None), INFO, 4, 0, None)
    assert cached.logits.shape == (6, D)
    extract = FeatureExtractor(model.frontend)
    for row, i in zip(cached.logits, cached.index, strict=True):
        samples, _ = sf.read(splits.train.examples[int(i)].source, dtype="float32")
        with torch.no_grad():
            fresh = model.pool(model.forward_features(extract(torch.from_numpy(samples)[None])))[0]
        torch.testing.assert_close(row, fresh, atol=1e-5, rtol=0)  # float32, other batch composition


def run_mode(tmp_path, mode: str, **changes):
    data = make_folder(tmp_path / "data", classes=("tone", "noise"), clips_per_class=6, seconds=0.5)
    cfg = make_recipe("folder", data=str(data), epochs=2, batch_size=4, target_length=50, model_config=TINY,
                      num_workers=0, progress=False, tensorboard=False, finetune=mode, lr=1e-3, **changes)
    messages: list[str] = []
    result = E.run(cfg, tmp_path / mode.replace(":", "_"), printer=messages.append)
    torch.manual_seed(cfg.seed)
    start = E.build_model(cfg.resolve(False), ("noise", "tone"), False)
    return result, messages, start


def changed(a, b, prefix: str) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return any(not torch.equal(sa[k], sb[k]) for k in sa if k.startswith(prefix))


def test_linear_and_last_runs_leave_the_frozen_parts_alone(tmp_path):
    result, messages, start = run_mode(tmp_path, "linear")
    assert any(m.startswith("linear probe: cached 10 features of width 32") for m in messages)
    trained = load_model(result.model_dir)
    assert changed(trained, start, "mlp_head.")
    for prefix in ("patch_embed.", "pos_embed", "cls_token", "blocks.", "norm."):
        assert not changed(trained, start, prefix), prefix
    finetune = json.loads((result.out / "result.json").read_text())["finetune"]
    assert finetune["trainable_parameters"] == 2 * 32 + 32 * 2 + 2 and finetune["peak_memory_mb"] > 0
    assert any("ms per step, peak memory" in m for m in messages)

    result, _, start = run_mode(tmp_path, "last:1")
    trained = load_model(result.model_dir)
    assert changed(trained, start, "blocks.1.") and changed(trained, start, "mlp_head.")
    assert not changed(trained, start, "blocks.0.") and not changed(trained, start, "patch_embed.")


def test_lora_run_saves_a_plain_checkpoint_and_adapters(tmp_path):
    result, messages, start = run_mode(tmp_path, "lora", lora_rank=2, save_adapters=True)
    trained = load_model(result.model_dir)  # a normal checkpoint: plain AST keys
    assert set(trained.state_dict()) == set(start.state_dict())
    assert changed(trained, start, "blocks.0.attn.qkv.weight") and not changed(trained, start, "blocks.0.mlp.")
    assert not changed(trained, start, "patch_embed.")
    from safetensors.torch import load_file

    adapters = load_file(result.out / "adapters" / FT.ADAPTER_FILE)
    assert {k for k in adapters if "lora_A" in k} == {f"blocks.{i}.attn.{n}.lora_A.default.weight"
                                                      for i in (0, 1) for n in ("qkv", "proj")}
    assert adapters["blocks.0.attn.qkv.lora_A.default.weight"].shape == (2, 32)
    assert json.loads((result.out / "adapters" / FT.ADAPTER_CONFIG).read_text())["r"] == 2
    with pytest.raises(ConfigError, match="--resume does not continue a --finetune lora"):
        E.run(make_recipe("folder", **{**json.loads((result.out / "config.json").read_text()), "model": None}),
              result.out, resume=True, printer=lambda m: None)


# ------------------------------------------------------------------------------------------------------ few-shot


def test_few_shot_folder(tmp_path):
    data = make_folder(tmp_path / "data", classes=("tone", "noise", "chirp"), clips_per_class=10, seconds=0.5)
    for extra in sorted((data / "chirp").iterdir())[3:]:  # chirp keeps 3 clips: under FEW_CLIPS
        extra.unlink()
    splits = load_splits("folder", data)
    assert splits.valid_is_train and len(splits.train) == 23
    for extra in sorted((data / "chirp").iterdir()):
        extra.unlink()
    (data / "chirp").rmdir()
    split = load_splits("folder", data)  # 10 per class: a stratified 20 % (2 per class) held out
    assert not split.valid_is_train and split.valid.class_counts() == [2, 2] and split.train.class_counts() == [8, 8]

    cfg = make_recipe("folder", data=str(data), epochs=1, batch_size=4, target_length=50, model_config=TINY,
                      num_workers=0, progress=False, tensorboard=False)
    fitted, notes = E._fit_to_data(*E._load_data(cfg, INFO))
    assert notes[0] == "class balance (train clips per class): min 8, median 8, max 8 over 2 classes"
    # median 8 clips: masks x 0.25 (the floor) of the recipe's freqm 48 and timem 10 (20 % of 50 frames)
    assert (cfg.augment.freqm, cfg.augment.timem) == (48, 10)
    assert (fitted.augment.freqm, fitted.augment.timem) == (12, 2) and "masks scaled by 0.25" in notes[-1]


def test_tiny_classes_warn_and_validate_on_train(tmp_path):
    data = make_folder(tmp_path / "data", classes=("tone", "noise"), clips_per_class=3, seconds=0.5)
    cfg = make_recipe("folder", data=str(data), epochs=1, batch_size=4, target_length=50, model_config=TINY,
                      num_workers=0, progress=False, tensorboard=False, patience=3)
    messages: list[str] = []
    result = E.run(cfg, tmp_path / "out", printer=messages.append)
    warning = [m for m in messages if m.startswith("warning:")]
    assert warning == ["warning: 2 class(es) have fewer than 5 training clips (noise, tone); expect unreliable "
                       "scores for them"]
    assert any(m.startswith("too few clips to hold out") for m in messages)
    assert result.selection["selection"] == "last"


def test_early_stopping(tmp_path):
    rows = [{"acc": a} for a in (0.5, 0.7, 0.7, 0.6)]
    cfg = make_recipe("folder", patience=2).resolve(False)
    assert E._stale(rows, cfg) and not E._stale(rows[:3], cfg)  # best at epoch 2; ties do not count as better
    data = make_folder(tmp_path / "data", classes=("tone", "noise"), clips_per_class=6, seconds=0.5)
    cfg = make_recipe("folder", data=str(data), epochs=6, batch_size=4, target_length=50, model_config=TINY,
                      num_workers=0, progress=False, tensorboard=False, patience=1, lr=1e-12)
    messages: list[str] = []
    result = E.run(cfg, tmp_path / "out", printer=messages.append)
    # lr 1e-12: the weights do not move, so the validation accuracy never improves after epoch 1
    assert len(result.rows) == 2 and any(m.startswith("early stopping") for m in messages)


# ------------------------------------------------------------------------------------------------- command line


def test_train_lora_cli_then_tag_and_export(tmp_path, capsys):
    from ast_audio.cli import main

    data = make_folder(tmp_path / "data", classes=("tone", "noise"), clips_per_class=5, seconds=0.5)
    out = tmp_path / "run"
    args = ["train", "--recipe", "folder", "--data", str(data), "-o", str(out), "--epochs", "1", "--batch-size",
            "4", "--target-length", "60", "--model-config", '{"embed_dim": 32, "depth": 2, "num_heads": 4}',
            "--num-workers", "0", "--no-progress", "--finetune", "lora", "--lora-rank", "2", "--lora-targets",
            "qkv,fc1", "--save-adapters"]
    assert main(args) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["finetune"], saved["lora_rank"], saved["lora_targets"]) == ("lora", 2, ["qkv", "fc1"])
    assert (out / "adapters" / FT.ADAPTER_FILE).is_file()
    capsys.readouterr()
    wav = next((data / "tone").glob("*.wav"))
    assert main(["tag", str(wav), "--checkpoint", str(out / "model"), "--format", "json"]) == 0  # read unchanged
    assert json.loads(capsys.readouterr().out)[0]["labels"][0]["label"] in ("noise", "tone")
    # export with its parity check against the eager model
    assert main(["export", str(out / "model"), str(tmp_path / "m.onnx")]) == 0 and (tmp_path / "m.onnx").is_file()
    assert main(["train", "--recipe", "folder", "--data", str(data), "-o", str(tmp_path / "x"),
                 "--finetune", "half"]) == 1
    assert "finetune must be full, linear, lora or last:N" in capsys.readouterr().err


def test_transfer_bench_tasks():
    """The bench's generated tasks: distinct label sets, every class a 1 s clip in [-1, 1] that differs per draw."""
    from ast_audio.bench import transfer

    assert not set(transfer.SOURCE_CLASSES) & set(transfer.TARGET_CLASSES) and len(transfer.TARGET_CLASSES) == 10
    rng = np.random.default_rng(0)
    for kind in transfer.SOURCE_CLASSES + transfer.TARGET_CLASSES:
        a, b = transfer.synth(kind, rng), transfer.synth(kind, rng)
        assert a.shape == (16000,) and a.dtype == np.float32 and np.abs(a).max() < 1 and not np.allclose(a, b)
    assert set(transfer.LR) == set(transfer.MODES)
