"""Property-based fuzzing of the front end, of the checkpoint config loader (issue 10) and of the HEAR API (issue 21).

Whatever the input, the outcome is a valid, finite result or a typed one-line error (AudioInputError for audio,
ConfigError / CheckpointError for settings and checkpoints): never another exception, never a NaN or infinite
output, and, for the loader, never an allocation over 256 MB (`limits.allocation_limit`). Examples are
derandomized so that the suite is reproducible; together the properties take seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ast_audio import ASTConfig, FrontendConfig
from ast_audio.audio.fbank import fbank, num_frames
from ast_audio.audio.features import FeatureExtractor
from ast_audio.audio.io import load_audio
from ast_audio.errors import AudioInputError, CheckpointError, ConfigError
from ast_audio.weights.checkpoint import load_model, save_hf, save_model
from conftest import tiny_model
from limits import allocation_limit

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NAN, INF = float("nan"), float("inf")


def assert_one_line(exc: Exception) -> None:
    assert "\n" not in str(exc) and str(exc), repr(exc)


# ---------------------------------------------------------------------------------------------------------------
# Waveforms: lengths from 0 to a few frames, every dtype, huge / tiny / non-finite values, several channels

SCALES = [0.0, 1e-300, 1e-30, 1e-3, 0.5, 1.0, 2.0, 32767.0, 1e17, 1e30, 1e300]
SPECIALS = [NAN, INF, -INF, 1e308, -3.5e38, 70000.0]


@st.composite
def waveforms(draw: st.DrawFn) -> np.ndarray:
    """(N,) or (N, C) samples in float64, float32, float16 or int16."""
    n = draw(st.one_of(st.integers(0, 420), st.integers(400, 2400)))
    channels = draw(st.sampled_from([0, 1, 2, 3]))  # 0: a 1-D array
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["zeros", "sine", "noise", "constant"]))
    base = {"zeros": np.zeros(n), "sine": np.sin(np.arange(n) * 0.07), "noise": rng.standard_normal(n),
            "constant": np.full(n, 0.3)}[kind]
    data = np.stack([base * (1 + 0.1 * c) for c in range(max(channels, 1))], axis=1)  # (N, C)
    with np.errstate(over="ignore", invalid="ignore"):
        data = data * draw(st.sampled_from(SCALES))
        if n:
            for index, value in draw(st.lists(st.tuples(st.integers(0, n - 1), st.sampled_from(SPECIALS)),
                                              max_size=2)):
                data[index, 0] = value
        dtype = draw(st.sampled_from(["float64", "float32", "float16", "int16"]))
        if dtype == "int16":
            data = np.clip(np.nan_to_num(data), -32768, 32767).astype(np.int16)
        else:
            data = data.astype(dtype)
    return data if channels else data[:, 0]


def check_features(out: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert out.shape == shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@FUZZ
@given(waveforms())
def test_fbank_gives_finite_frames_or_an_audio_error(data):
    x = torch.from_numpy(np.ascontiguousarray(data.T))  # (N,) or (C, N): channels as a batch
    try:
        out = fbank(x)
    except AudioInputError as exc:
        assert_one_line(exc)
        return
    frames = num_frames(x.shape[-1])
    expected = (frames, 128) if x.dim() == 1 else (x.shape[0], frames, 128)
    assert out.shape == expected and torch.isfinite(out).all()


@FUZZ
@given(waveforms(), st.sampled_from(["tensor", "list"]))
def test_feature_extractor_gives_finite_input_or_an_audio_error(data, form):
    extractor = FeatureExtractor(FrontendConfig(target_length=12))
    x = torch.from_numpy(np.ascontiguousarray(data.T))  # (N,) or (C, N)
    items: Any = x if form == "tensor" else list(x) if x.dim() == 2 else [x]
    try:
        out = extractor(items)
    except AudioInputError as exc:
        assert_one_line(exc)
        return
    check_features(out, (1 if x.dim() == 1 else x.shape[0], 12, 128))


SUBTYPES = {"float64": "DOUBLE", "float32": "FLOAT", "float16": "FLOAT", "int16": "PCM_16"}


@FUZZ
@given(waveforms(), st.sampled_from([8000, 16000, 44100]))
def test_load_audio_gives_a_finite_mono_waveform_or_an_audio_error(tmp_path_factory, data, rate):
    path = tmp_path_factory.getbasetemp() / "fuzz_clip.wav"
    written = data.astype(np.float32) if data.dtype == np.float16 else data
    sf.write(str(path), written, rate, subtype=SUBTYPES[str(data.dtype)])
    try:
        waveform = load_audio(path, sample_rate=16000)
    except AudioInputError as exc:
        assert_one_line(exc)
        return
    assert waveform.dim() == 1 and waveform.dtype == torch.float32 and waveform.shape[0] >= 400
    assert torch.isfinite(waveform).all()


# ---------------------------------------------------------------------------------------------------------------
# Hostile config values: what a crafted or broken JSON file can hold

DELETE = object()  # mutation that removes the field
hostile_values = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 1, 2, 3, 4, 5, 10, 16, 32, 100, 128, 400, 1000, 1024, 4096, 8192, 16000, 65536, 10**9,
                     2**63, -(2**63), 10**30, 10**400]),
    st.integers(),
    st.sampled_from([0.0, -0.0, 1e-300, 1e-12, 1e-9, 0.5, 4.0, 25.0, 1e300, NAN, INF, -INF]),
    st.floats(),
    st.text(max_size=6),
    st.sampled_from(["tokens", "mean", "base384", "tiny224", "gelu", "ast-audio", "audio-spectrogram-transformer"]),
    st.lists(st.integers(-3, 3) | st.text(max_size=2), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-3, 3), max_size=2),
    st.recursive(st.none(), lambda inner: st.lists(inner, max_size=2), max_leaves=4),
)

# Valid values of some field (of the model, front end, transformers config or checkpoint), so that many examples
# get past the checks and reach the weights, the model and the features.
plausible_values = st.sampled_from([
    1e-6, 1e-12, 1.0, "mean", "tokens", "tiny224", "base384", "small224", 1000, 8000, 16000, 22050, 384000, 1, 40,
    128, 1024, 8, -4.2677393, 0.0, 999.0, 0.001, 4.5, 25.0, 20.0, 50.0, 10.0, 0.07, True, False,
    ["a", "b", "c", "d", "e"], {str(i): f"class {i}" for i in range(5)}, "single_label_classification",
])
field_values = st.booleans().flatmap(lambda valid: plausible_values if valid else hostile_values)


def mutate(config: dict[str, Any], mutations: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    """A copy of `config` with each (path, value) set (or deleted), skipping paths whose parent is gone."""
    config = json.loads(json.dumps(config))
    for path, value in mutations:
        parent = config
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if value is DELETE:
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = value
    return config


def paths(sections: dict[str, list[str]], top: list[str]) -> list[tuple[str, ...]]:
    return [(key,) for key in top] + [(section, name) for section, names in sections.items() for name in names]


NATIVE_PATHS = paths({"model": list(ASTConfig.__dataclass_fields__),
                      "frontend": list(FrontendConfig.__dataclass_fields__)},
                     ["format", "version", "model", "frontend", "labels", "multi_label"])
HF_PATHS = paths({}, ["model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                      "hidden_act", "layer_norm_eps", "patch_size", "qkv_bias", "frequency_stride", "time_stride",
                      "max_length", "num_mel_bins", "id2label", "problem_type"])
PREPROCESSOR_PATHS = [("sampling_rate",), ("mean",), ("std",)]


def mutations(candidates: list[tuple[str, ...]]):
    return st.lists(st.tuples(st.sampled_from(candidates), field_values | st.just(DELETE)), min_size=1, max_size=3)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz_checkpoints")
    model = tiny_model(0)
    save_model(model, root / "native")
    save_hf(model, root / "hf")
    return {"native": root / "native", "hf": root / "hf"}


def load_within_bounds(folder: Path) -> None:
    """load_model(folder) gives a model with finite logits, or a typed one-line error; never more than 256 MB."""
    with allocation_limit():
        try:
            model = load_model(folder)
        except (CheckpointError, ConfigError) as exc:
            assert_one_line(exc)
            return
        x = torch.randn(2, model.config.input_tdim, model.config.input_fdim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            logits = model(x)
    assert logits.shape == (2, model.config.num_classes) and torch.isfinite(logits).all()


def working_copy(source: Path, root: Path) -> Path:
    folder = root / "ckpt"
    if not folder.exists():
        shutil.copytree(source, folder)
    return folder


@FUZZ
@given(mutations(NATIVE_PATHS))
def test_native_config_loader_never_fails_untyped_or_allocates(checkpoints, tmp_path_factory, changes):
    folder = working_copy(checkpoints["native"], tmp_path_factory.getbasetemp() / "fuzz_native")
    meta = json.loads((checkpoints["native"] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(mutate(meta, changes)))
    load_within_bounds(folder)


@FUZZ
@given(mutations(HF_PATHS), st.lists(st.tuples(st.sampled_from(PREPROCESSOR_PATHS), field_values), max_size=2))
def test_transformers_config_loader_never_fails_untyped_or_allocates(checkpoints, tmp_path_factory, changes,
                                                                      preprocessor_changes):
    folder = working_copy(checkpoints["hf"], tmp_path_factory.getbasetemp() / "fuzz_hf")
    for name, edits in (("config.json", changes), ("preprocessor_config.json", preprocessor_changes)):
        original = json.loads((checkpoints["hf"] / name).read_text())
        (folder / name).write_text(json.dumps(mutate(original, edits)))
    load_within_bounds(folder)


# Valid values of each front-end field; combined they may still be refused (e.g. a 1 ms window at 1000 Hz).
FRONTEND_VALUES = dict(sample_rate=[1000, 8000, 16000, 48000], num_mel_bins=[1, 23, 128, 1024],
                       target_length=[1, 8, 100, 1024], mean=[-4.2677393, 0.0, 999.0], std=[0.001, 1.0, 1000.0],
                       frame_length_ms=[1.0, 25.0, 50.0], frame_shift_ms=[0.5, 10.0, 25.0])


@st.composite
def frontend_settings(draw: st.DrawFn) -> dict[str, Any]:
    """Each field left out, valid, or (one time in ten) hostile."""
    settings: dict[str, Any] = {}
    for name, valid in FRONTEND_VALUES.items():
        roll = draw(st.integers(0, 9))
        if roll == 0:
            settings[name] = draw(hostile_values)
        elif roll <= 5:
            settings[name] = draw(st.sampled_from(valid))
    return settings


@settings(FUZZ, max_examples=50)  # each valid example builds its own mel filterbank
@given(frontend_settings())
def test_frontend_settings_give_a_config_error_or_finite_features(changes):
    try:
        config = FrontendConfig(**changes)
    except ConfigError as exc:
        assert_one_line(exc)
        return
    if config.target_length * config.num_mel_bins > 1 << 22:  # keep the example's output small (16 MB)
        config = config.replace(target_length=8)
    t = np.arange(int(0.3 * config.sample_rate)) / config.sample_rate
    wave = torch.from_numpy(0.5 * np.sin(2 * np.pi * 440.0 * t)).float()
    try:
        out = FeatureExtractor(config)(wave, sample_rate=config.sample_rate)
    except AudioInputError as exc:  # 0.3 s shorter than a very long window
        assert_one_line(exc)
        return
    check_features(out, (1, config.target_length, config.num_mel_bins))


# ---------------------------------------------------------------------------------------------------------------
# The HEAR API: whatever tensor (or not-a-tensor) and hop hear-eval-kit or a user hands it


@pytest.fixture(scope="module")
def hear_model():
    return tiny_model(0, input_tdim=16)  # a 2800-sample (175 ms) window: every example is a few windows at most


@st.composite
def hear_audio(draw: st.DrawFn) -> Any:
    """(n_sounds, n_samples) tensors, mostly float in range, else of another dtype, int-scaled, non-finite, of the
    wrong shape, or not a tensor at all."""
    n = draw(st.sampled_from([1, 1, 2, 3, 0]))
    samples = draw(st.sampled_from([400, 2800, 4000, 4000, 0, 1, 399]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    data = rng.uniform(-1, 1, (n, samples)) * draw(st.sampled_from([0.1, 0.3, 0.5, 0.0, 1e-30, 1.0, 3.0, 1e4]))
    if n and samples and draw(st.integers(0, 4)) == 4:  # (hypothesis favours small draws: 0 is the common case)
        data[draw(st.integers(0, n - 1)), draw(st.integers(0, samples - 1))] = draw(st.sampled_from(SPECIALS))
    dtype = draw(st.sampled_from([torch.float32] * 6 + [torch.float64, torch.float16, torch.bfloat16, torch.int16,
                                                        torch.int64, torch.uint8, torch.bool, torch.complex64]))
    with np.errstate(invalid="ignore", over="ignore"):
        audio = torch.from_numpy(data).to(dtype)
    form = draw(st.sampled_from(["tensor"] * 6 + ["numpy", "list", "1-d", "3-d"]))
    if form == "numpy":
        return audio.float().numpy()
    if form == "list":
        return audio.tolist()
    if form == "1-d":
        return audio.reshape(-1)
    return audio[None] if form == "3-d" else audio


GOOD_HOPS = [None, 0.01, 0.05, 0.1, 0.175]
BAD_HOPS = [1e-6, 0.009, 0.0, -0.05, NAN, INF, 1e308, 10**400, True, "0.05", 5.0]


@FUZZ
@given(hear_audio(), st.sampled_from(GOOD_HOPS * 3 + BAD_HOPS))
def test_hear_api_gives_finite_embeddings_or_a_typed_error(hear_model, audio, hop):
    import ast_audio.hear as hear

    try:
        module = hear.HearModel(hear_model) if hop is None else hear.HearModel(hear_model, timestamp_hop_s=hop)
    except ConfigError as exc:
        assert_one_line(exc)
        event("hop refused")
        return
    assert module.timestamp_hop_s >= 0.01  # at least the 10 ms frame shift (1e-6 s: 16,000 windows a second)
    try:
        scene = hear.get_scene_embeddings(audio, module)
        emb, ts = hear.get_timestamp_embeddings(audio, module)
    except (AudioInputError, ConfigError) as exc:
        assert_one_line(exc)
        event("refused: " + type(exc).__name__)
        return
    event("embedded")
    n, dim = audio.shape[0], module.scene_embedding_size
    assert scene.shape == (n, dim) and scene.dtype == torch.float32 and torch.isfinite(scene).all()
    assert emb.shape[0] == n and emb.shape[2] == dim and ts.shape == emb.shape[:2]
    assert torch.isfinite(emb).all() and torch.isfinite(ts).all()
    assert audio.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # only float is accepted
    assert float(audio.abs().max()) <= 2.0  # and no int-scaled peak


# The WebSocket's first message (`ast_audio.serve.stream.start_session`): what a hostile client can send

STREAM_VALID = {"rate": [8000, 16000, 22050, 48000, 192000], "format": ["s16le", "f32le"], "channels": [1, 2, 32],
                "window_s": [0.5, 1.0, 1.3], "hop_s": [0.1, 0.5, 1.0], "threshold": [0.0, 0.5, 1.0],
                "hysteresis": [0.1, 0.5, 1.0], "median": [1, 3, 99], "min_duration": [0.0, 1.0],
                "merge_gap": [0.0, 0.5], "only": [["a", "b"], "c", ["class_0"]], "exclude": [[], ["d"]],
                "top_k": [1, 5, 100000]}


@st.composite
def first_messages(draw: st.DrawFn) -> str:
    """A first message's text: mostly a JSON object whose fields are left out, valid or hostile (numbers far out
    of range, wrong types, lists for strings); sometimes an unknown field, or text that is not a JSON object."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.sampled_from(["", "hello", "[" * 5000, "null", "[1, 2]", '"rate"', "1e400", '{"rate": NaN}',
                                     '{"rate": Infinity}', '{"rate": 1e400}', '{"rate": -Infinity}']))
    doc: dict[str, Any] = {}
    for name, valid in STREAM_VALID.items():
        roll = draw(st.integers(0, 9))
        if roll <= 2 or (name == "rate" and roll <= 7):
            doc[name] = draw(st.sampled_from(valid))
        elif roll <= 4:
            doc[name] = draw(hostile_values | st.sampled_from([20000001, 2000000001, 1, 384001, ["s16le"], {}]))
    if kind == 1:
        doc[draw(st.text(max_size=4))] = draw(hostile_values)
    return json.dumps(doc)


@pytest.fixture(scope="module")
def stream_service():
    from ast_audio.serve.app import Service
    from ast_audio.serve.limits import ServeSettings

    return Service(tiny_model(0), ServeSettings())


@FUZZ
@given(first_messages())
def test_stream_first_message_gives_a_session_or_a_one_line_refusal(stream_service, text):
    """`start_session` gives a session, or StreamRefused (1008 / 1009) with one line; never another exception
    (a traceback and an abnormal close), never more than 256 MB of allocation (a 1 Hz rate or a median of 2e9
    windows asked for gigabytes once audio arrived)."""
    from ast_audio.serve.stream import StreamRefused, start_session

    with allocation_limit():
        try:
            streamer, decoder, top_k, keep = start_session(stream_service, text)
        except StreamRefused as exc:
            assert exc.code in (1008, 1009) and exc.message and "\n" not in exc.message, exc.message
            return
        # Accepted: one second of audio at the declared rate is fed without growing past the limit.
        block = decoder.decode(b"\x00" * decoder.frame_bytes * streamer.input_rate)
        streamer.feed(block)
    assert 8000 <= streamer.input_rate <= 192000 and top_k >= 1 and streamer.events.config.median_windows <= 99
