"""Training data for sound event detection (issue 20): a FOLDER of audio with DCASE tables -> crops with frame targets.

Layout (docs/training-data.md): audio files anywhere below FOLDER; `FOLDER/strong.tsv` (`filename onset offset
event_label`, names relative to FOLDER; a file listed with no events is background); optional `durations.tsv`
(a file listed there and in no other table is background too); optional `weak.tsv` (`filename event_labels`,
comma-separated: weakly labelled clips); optional `validation/` with its own `strong.tsv` (and `durations.tsv`),
names relative to `validation/`; without it, a share (`holdout`) of the strongly labelled files, drawn by seed,
validates. All tables are read by `ast_audio.infer.tsv` (one line naming file and row for a bad row).

Items (`SedDataset`): a random crop of the model's input length (`frontend.input_samples`) from a strongly
labelled file (in training, a file gives one item per input length of its audio, `epoch_items`: an epoch sees
about as much of a long recording as of short clips, not one crop of it), its start on the column grid (a multiple
of `column_hop_samples`, 0.1 s for AST); a file shorter than the input is taken whole and padded (the front end
pads in the log-mel domain, and the targets of the padded columns are 0). Weakly labelled clips are read from
their start (their labels are the whole clip's). Each item
holds the features (T, F), the frame targets (t_dim, C) on the columns of `ast_audio.config.column_span`, the
clip target (C,), whether the frame targets are known (`strong`: False for weak clips, whose frame targets are
zeros to be ignored), and the key (the file's name in its table).

The frame-target rule is `frame_targets`: column j of a crop is positive for class c when events of c cover at
least half of the column's span. The clip target of a strong crop is 1 for every class with a positive column;
of a weak clip, 1 for its labels; a background file's targets are all zero.

Augmentation (the recipe's `AugmentConfig`, with the clip datasets' helpers): mixup mixes the waveforms
(`mix_waveforms`) and the targets with the same λ: frames λ·y1 + (1-λ)·y2 column by column, clip targets by
`mix_targets`; a mix with a weak clip has no frame targets (strong = False). SpecAugment's frequency mask and time
mask are applied to the features as for clips, and the targets are left as they are: a time mask hides at most
`timem` frames inside a sound, which still sounds there, so the columns under it keep their targets (the masks do
not erase targets); keep `timem` below the shortest events (the sed recipe's 20 frames = 0.2 s).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio.io import load_audio_info, read_window
from ..config import ASTConfig, FrameHeadConfig, FrontendConfig, column_hop_samples, column_span
from ..errors import AstAudioError, ConfigError
from ..infer.tsv import read_durations, read_strong, read_weak
from ..utils import one_line
from .augment import mix_targets, mix_waveforms, remove_dc
from .data import BadClip, ClipDataset, item_seed, mixup_draw
from .layouts import AUDIO_EXTENSIONS, Example, Manifest
from .recipes import AugmentConfig
from .sampler import balanced_weights

STRONG, WEAK, DURATIONS, VALIDATION = "strong.tsv", "weak.tsv", "durations.tsv", "validation"
POSITIVE_SHARE = 0.5  # a column is positive when events of a class cover at least this share of its span


# ----------------------------------------------------------------------------------------------------------------
# The frame-target rule


def column_spans(config: ASTConfig, frontend: FrontendConfig) -> np.ndarray:
    """(t_dim, 2) float64: [start, end) seconds of every time column of one model input (`column_span`)."""
    return np.array([column_span(config, frontend, j) for j in range(config.grid[1])], dtype=np.float64)


def frame_targets(events: Sequence[tuple[float, float, int]], spans: np.ndarray, num_classes: int) -> torch.Tensor:
    """THE frame-target rule: (t_dim, C) float32, 1 where events of class c cover >= `POSITIVE_SHARE` of column j.

    events: (onset, offset, class index) in seconds on the crop's timeline (0 = the crop's first sample), cut to
    the part of the crop that holds audio; spans: (t_dim, 2) column [start, end) seconds (`column_spans`).
    Overlapping events of one class count once (their union).
    """
    start, end = spans[:, 0], spans[:, 1]  # (t_dim,)
    covered = np.zeros((spans.shape[0], num_classes))  # (t_dim, C) seconds of each column covered per class
    by_class: dict[int, list[tuple[float, float]]] = {}
    for onset, offset, c in events:
        by_class.setdefault(c, []).append((onset, offset))
    for c, spans_c in by_class.items():
        for onset, offset in _union(spans_c):
            covered[:, c] += np.clip(np.minimum(end, offset) - np.maximum(start, onset), 0.0, None)
    need = POSITIVE_SHARE * (end - start)[:, None] - 1e-9  # (t_dim, 1); tolerance for seconds from sample counts
    return torch.from_numpy(covered >= need).float()


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, merged intervals."""
    merged: list[list[float]] = []
    for onset, offset in sorted(spans):
        if merged and onset <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], offset)
        else:
            merged.append([onset, offset])
    return [(a, b) for a, b in merged]


def crop_events(events: Sequence[tuple[float, float, int]], start_s: float, length_s: float
                ) -> list[tuple[float, float, int]]:
    """The events of a file on the timeline of the crop [start_s, start_s + length_s): shifted and cut to it."""
    out = []
    for onset, offset, c in events:
        a, b = max(onset - start_s, 0.0), min(offset - start_s, length_s)
        if b > a:
            out.append((a, b, c))
    return out


# ----------------------------------------------------------------------------------------------------------------
# The folder


@dataclass(frozen=True)
class SedClip:
    """One file: absolute path, key (its name in the table), length in seconds, events (onset, offset, class) for
    a strongly labelled file, or `weak` class indices for a weakly labelled one (then `events` is empty)."""

    source: str
    key: str
    duration_s: float
    events: tuple[tuple[float, float, int], ...] = ()
    weak: tuple[int, ...] | None = None

    @property
    def strong(self) -> bool:
        return self.weak is None

    @property
    def classes(self) -> tuple[int, ...]:
        """The classes the file holds (for balanced sampling)."""
        return self.weak if self.weak is not None else tuple(sorted({c for _, _, c in self.events}))


@dataclass(frozen=True)
class SedData:
    """The training and validation files of a folder, the class names, and whether validation is the training
    set (too few files to hold any out)."""

    train: tuple[SedClip, ...]
    valid: tuple[SedClip, ...]
    labels: tuple[str, ...]
    valid_is_train: bool = False
    notes: list[str] = field(default_factory=list)


def audio_files(folder: Path, skip: Path | None = None) -> list[str]:
    """Audio files below `folder` (any depth, not below `skip`) as POSIX paths relative to it."""
    out = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file() and not path.name.startswith("."):
            if skip is None or skip not in path.parents:
                out.append(path.relative_to(folder).as_posix())
    return out


def _durations(folder: Path, names: Collection[str], given: dict[str, float]) -> dict[str, float]:
    """Seconds of every file: from durations.tsv where listed, else from the file's header."""
    out = {}
    for name in names:
        if name in given:
            out[name] = given[name]
        else:
            try:
                out[name] = load_audio_info(folder / name).duration_s
            except (AstAudioError, OSError) as exc:
                raise ConfigError(f"{folder / name}: cannot read its length ({one_line(exc)}); repair or remove it, "
                                  f"or list its duration in {folder / DURATIONS}") from None
    return out


def _strong_clips(folder: Path, labels: Sequence[str] | None, skip: Path | None = None,
                  extra: Collection[str] = ()) -> tuple[list[SedClip], list[str]]:
    """The strongly labelled (and background) files of `folder` (strong.tsv, durations.tsv) and the class names:
    `labels` if given (an event of another class is refused), else the table's labels and `extra`, sorted."""
    files = set(audio_files(folder, skip))
    if not (folder / STRONG).is_file():
        raise ConfigError(f"{folder}: no {STRONG}; expected a DCASE event table (filename onset offset "
                          "event_label, names relative to the folder) beside the audio (docs/training-data.md)")
    given = read_durations(folder / DURATIONS, files=files) if (folder / DURATIONS).is_file() else {}
    table = read_strong(folder / STRONG, files=files, labels=labels, durations=given, what="strong-label table")
    names = list(dict.fromkeys([*table.files, *given]))
    if labels is None:
        labels = sorted({*table.labels(), *extra})
    index = {label: i for i, label in enumerate(labels)}
    lengths = _durations(folder, names, given)
    rows = table.by_file()
    clips = [SedClip(str(folder / name), name, lengths[name],
                     tuple((on, off, index[label]) for on, off, label in rows.get(name, ())))
             for name in names]
    return clips, list(labels)


def load_sed_folder(folder: str | Path, *, holdout: float = 0.2, seed: int = 0) -> SedData:
    """The SED data of `folder` (module docstring): training clips (strong, background, weak), validation clips,
    class names (sorted; the strong and weak tables' labels)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder; --data for the sed recipe is a folder with {STRONG} and audio")
    valid_dir = folder / VALIDATION
    has_valid = (valid_dir / STRONG).is_file()
    skip = valid_dir if has_valid else None
    weak_table = read_weak(folder / WEAK, files=set(audio_files(folder, skip))) if (folder / WEAK).is_file() else {}
    strong, labels = _strong_clips(folder, None, skip, extra={n for names in weak_table.values() for n in names})
    twice = sorted(set(weak_table) & {c.key for c in strong})
    if twice:
        raise ConfigError(f"{folder / WEAK}: {twice[0]!r} is also in {STRONG} or {DURATIONS}; list a file in one")
    index = {label: i for i, label in enumerate(labels)}
    lengths = _durations(folder, list(weak_table), {})
    weak = [SedClip(str(folder / name), name, lengths[name], weak=tuple(index[n] for n in names))
            for name, names in weak_table.items()]
    if not labels:
        raise ConfigError(f"{folder / STRONG}: no events of any class; a frame model needs labelled events")
    if has_valid:
        valid, _ = _strong_clips(valid_dir, labels)
        return SedData(tuple(strong + weak), tuple(valid), tuple(labels),
                       notes=[f"validation: {len(valid)} files of {valid_dir}"])
    order = np.random.default_rng(seed).permutation(len(strong))
    count = min(max(round(holdout * len(strong)), 1), len(strong) - 1) if len(strong) >= 2 else 0
    if count == 0:
        return SedData(tuple(strong + weak), tuple(strong), tuple(labels), valid_is_train=True,
                       notes=["one strongly labelled file: validation scores the training file"])
    held = set(order[:count].tolist())
    train = [c for i, c in enumerate(strong) if i not in held]
    valid = [c for i, c in enumerate(strong) if i in held]
    return SedData(tuple(train + weak), tuple(valid), tuple(labels),
                   notes=[f"no {VALIDATION}/{STRONG}: {len(valid)} of {len(strong)} strongly labelled files "
                          f"validate (seed {seed})"])


# ----------------------------------------------------------------------------------------------------------------
# Items

# One SED item: features (T, F), frame targets (t_dim, C), clip target (C,), frame targets known, key.
SedItem = tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool, str]


def sed_manifest(clips: Sequence[SedClip], labels: Sequence[str]) -> Manifest:
    """The clips as a multi-label `Manifest` of their classes (for balanced sampling and the clip metrics)."""
    return Manifest(tuple(Example(c.source, c.classes, c.key) for c in clips), tuple(labels), tuple(labels),
                    multi_label=True)


def with_frame_head(model: torch.nn.Module, head: FrameHeadConfig) -> torch.nn.Module:
    """`model` (a clip model: a checkpoint, the AudioSet AST, ImageNet-adapted or new) as a frame model: the same
    encoder and clip head, a new frame head `head` (initialised from torch's current seed)."""
    from ..model import AST

    if model.config.frame_head == head:
        return model
    frame = AST(dataclasses.replace(model.config, frame_head=head), frontend=model.frontend, labels=model.labels,
                multi_label=model.multi_label)
    missing, unexpected = frame.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("frame_head.") for k in missing), (missing, unexpected)
    return frame


def epoch_items(clips: Sequence[SedClip], input_s: float) -> tuple[SedClip, ...]:
    """The training items of one epoch: each strongly labelled file `round(duration / input_s)` times (at least
    once), each weakly labelled clip once (it is read from its start). Random crops are drawn per item, so a 120 s
    recording with a 2 s input gives 60 crops an epoch, as 60 clips of 2 s would, instead of one."""
    return tuple(c for c in clips for _ in range(max(1, round(c.duration_s / input_s)) if c.strong else 1))


class SedDataset(ClipDataset):
    """Crops of SED clips with frame and clip targets (module docstring), or a `BadClip` for an unreadable file.
    With `random_crops` (training) the items are `epoch_items` (a long file several times), else the clips.

    A `ClipDataset` over the clips' classes (so balanced sampling, `features`, the masks and the per-(seed, epoch,
    index) generators are the clip datasets'); `__getitem__` builds SED items instead of clip items.
    """

    def __init__(self, clips: Sequence[SedClip], labels: Sequence[str], model: ASTConfig, frontend: FrontendConfig,
                 augment: AugmentConfig | None = None, *, seed: int = 0, random_crops: bool = True) -> None:
        clips = epoch_items(clips, frontend.input_samples / frontend.sample_rate) if random_crops else tuple(clips)
        super().__init__(sed_manifest(clips, labels), frontend, augment, seed=seed)
        self.clips = clips
        self.spans = column_spans(model, frontend)  # (t_dim, 2)
        self.hop = column_hop_samples(model, frontend)
        self.random_crops = random_crops

    def _crop(self, clip: SedClip, generator: torch.Generator | None) -> tuple[torch.Tensor, float]:
        """(M,) DC-removed samples of the crop (M <= input_samples) and its start in seconds."""
        rate, length = self.frontend.sample_rate, self.frontend.input_samples
        total = int(round(clip.duration_s * rate))
        start = 0
        if clip.strong and self.random_crops and generator is not None and total > length:
            start = self.hop * int(torch.randint(0, (total - length) // self.hop + 1, (1,), generator=generator))
        return remove_dc(read_window(clip.source, rate, start / rate, length)), start / rate

    def _targets(self, clip: SedClip, start_s: float, length_s: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(t_dim, C) frame targets and (C,) clip target of the crop [start_s, start_s + length_s)."""
        if not clip.strong:
            clip_target = torch.zeros(self.num_classes)
            clip_target[list(clip.classes)] = 1.0
            return torch.zeros(self.spans.shape[0], self.num_classes), clip_target
        frames = frame_targets(crop_events(clip.events, start_s, length_s), self.spans, self.num_classes)
        return frames, frames.amax(dim=0)  # (t_dim, C), (C,)

    def __getitem__(self, index: int) -> SedItem | BadClip:
        clip = self.clips[index]
        generator = (torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))
                     if self.augment is not None or self.random_crops else None)
        try:
            waveform, start_s = self._crop(clip, generator)
        except (AstAudioError, OSError) as exc:
            return BadClip(clip.key, one_line(exc))
        rate = self.frontend.sample_rate
        frames, clip_target = self._targets(clip, start_s, waveform.shape[0] / rate)
        strong = clip.strong
        draw = mixup_draw(self.augment, len(self.clips), generator) if self.augment is not None else None
        if draw is not None:
            other = self.clips[draw[0]]
            lam = draw[1]
            try:
                partner, partner_start = self._crop(other, generator)
            except (AstAudioError, OSError):
                self.mixup_fallbacks += 1  # the partner is reported when it is loaded as an item itself
            else:
                kept = min(partner.shape[0], waveform.shape[0]) / rate  # mix_waveforms fits it to this item
                partner_frames, partner_clip = self._targets(other, partner_start, kept)
                waveform = mix_waveforms(waveform, partner, lam)
                frames = lam * frames + (1.0 - lam) * partner_frames
                clip_target = mix_targets(_indices(clip_target), _indices(partner_clip), lam, self.num_classes)
                strong = strong and other.strong
        x = self.features(waveform, generator if self.augment is not None else None)
        return x, frames, clip_target, strong, clip.key


def _indices(target: torch.Tensor) -> list[int]:
    return torch.nonzero(target > 0.5).flatten().tolist()


@dataclass
class SedBatch:
    """Collated SED items: x (B, T, F), frames (B, t_dim, C), clips (B, C), strong (B,) bool, keys, the files
    dropped as unreadable. `y` is the clip targets (what the clip engine's code reads)."""

    x: torch.Tensor
    frames: torch.Tensor
    y: torch.Tensor
    strong: torch.Tensor
    keys: list[str]
    bad: list[BadClip] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)


def sed_collate(items: Sequence[SedItem | BadClip]) -> SedBatch:
    """Stack the good items into a `SedBatch`, listing the `BadClip`s."""
    bad = [item for item in items if isinstance(item, BadClip)]
    good = [item for item in items if not isinstance(item, BadClip)]
    if not good:
        return SedBatch(torch.zeros(0, 0, 0), torch.zeros(0, 0, 0), torch.zeros(0, 0), torch.zeros(0, dtype=torch.bool),
                        [], bad)
    return SedBatch(torch.stack([i[0] for i in good]),  # (B, T, F)
                    torch.stack([i[1] for i in good]),  # (B, t_dim, C)
                    torch.stack([i[2] for i in good]),  # (B, C)
                    torch.tensor([i[3] for i in good], dtype=torch.bool),  # (B,)
                    [i[4] for i in good], bad)


def balanced_sed_weights(dataset: SedDataset) -> torch.Tensor:
    """(N,) balanced sampling weights of the clip datasets (`balanced_weights`), with background files (no class,
    weight 0 there) given the smallest weight of a labelled file so that they are still drawn."""
    weights = balanced_weights(dataset.manifest)
    positive = weights[weights > 0]
    floor = float(positive.min()) if positive.numel() else 1.0
    return torch.where(weights > 0, weights, torch.full_like(weights, floor))


def sed_windows(clip: SedClip, model: ASTConfig, frontend: FrontendConfig) -> list[float]:
    """Start seconds of the windows that score a whole file once: one every t_dim columns (hop = window on the
    column grid), so their columns tile the file's timeline without gap or overlap."""
    step = model.grid[1] * column_hop_samples(model, frontend) / frontend.sample_rate
    return [k * step for k in range(max(1, math.ceil(clip.duration_s / step - 1e-9)))]


# ----------------------------------------------------------------------------------------------------------------
# Loss and validation of a frame model


class SedForward(torch.nn.Module):
    """The training forward of a frame model: (B, T, F) -> clip logits (B, C), frame logits (B, t_dim, C) and the
    weakly pooled clip probabilities (B, C), all in one `forward` (so that DistributedDataParallel sees every
    parameter used, the weak pooling's included)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        clip_logits, frame_logits = self.model.forward_both(x)
        return clip_logits, frame_logits, self.model.weak_probabilities(frame_logits.float())


def sed_loss(outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], frames: torch.Tensor, clips: torch.Tensor,
             strong: torch.Tensor) -> torch.Tensor:
    """The sed recipe's loss on one batch, the sum of three means (a part without items adds 0):

    - BCE of the frame logits against the frame targets, over the items with frame targets (`strong`);
    - BCE of the weakly pooled frame scores against the clip targets, over the weakly labelled items (the DCASE
      baseline's weak loss, in the same batches);
    - BCE of the clip head's logits against the clip targets, over every item (so a frame model still tags).

    outputs: `SedForward`'s (clip logits (B, C), frame logits (B, t_dim, C), weak probabilities (B, C));
    frames (B, t_dim, C), clips (B, C) soft targets; strong (B,) bool.
    """
    clip_logits, frame_logits, weak = outputs
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    loss = bce(clip_logits.float(), clips)
    if bool(strong.any()):
        loss = loss + bce(frame_logits.float()[strong], frames[strong])
    if bool((~strong).any()):
        eps = 1e-7
        loss = loss + torch.nn.functional.binary_cross_entropy(weak.float()[~strong].clamp(eps, 1 - eps),
                                                               clips[~strong])
    return loss


@torch.no_grad()
def frame_scores(model: torch.nn.Module, dataset: SedDataset, clip: SedClip, device: torch.device,
                 batch_size: int = 8) -> np.ndarray:
    """(n_columns, C) frame probabilities of a whole file: windows on the column grid one input apart
    (`sed_windows`), each scored once, their columns laid end to end and cut to the file's length."""
    from ..model.scores import probabilities

    model_config = model.config
    starts = sed_windows(clip, model_config, dataset.frontend)
    rate, length = dataset.frontend.sample_rate, dataset.frontend.input_samples
    parts = []
    for i in range(0, len(starts), batch_size):
        x = torch.stack([dataset.features(remove_dc(read_window(clip.source, rate, s, length)))
                         for s in starts[i:i + batch_size]])  # (b, T, F)
        logits = model.forward_frames(x.to(device)).float().cpu()  # (b, t_dim, C)
        parts.append(probabilities(logits, True).reshape(-1, logits.shape[-1]))  # (b * t_dim, C)
    hop_s = column_hop_samples(model_config, dataset.frontend) / rate
    count = max(1, math.ceil(clip.duration_s / hop_s - 1e-9))
    return torch.cat(parts)[:count].numpy()


def _score_frame(bounds: np.ndarray, values: np.ndarray, classes: list[str]) -> Any:
    """sed_scores_eval's score DataFrame (columns onset, offset, classes) of (n + 1,) bounds and (n, C) scores.

    Under pandas 3 (copy-on-write), `frame[[one class]].to_numpy()` is a read-only view, which sed_scores_eval's
    Cython detection refuses ("buffer source array is read-only"); this frame's `to_numpy` returns a copy."""
    import pandas as pd  # the scorers' dependency

    class WritableFrame(pd.DataFrame):
        @property
        def _constructor(self) -> type:
            return WritableFrame

        def to_numpy(self, *args: Any, **kwargs: Any) -> np.ndarray:
            return super().to_numpy(*args, **{**kwargs, "copy": True})

    return WritableFrame(np.column_stack([bounds[:-1], bounds[1:], values]), columns=["onset", "offset", *classes])


def validation_psds1(model: torch.nn.Module, dataset: SedDataset, device: torch.device) -> float:
    """PSDS1 (DCASE task 4's, by sed_scores_eval: `ast_audio.infer.evaluate_events.psds`) of the frame scores of
    every validation file against its strong labels: the sed recipe's model-selection metric (threshold-free, so
    it needs no detection settings). Over the classes with events in the validation files (PSDS needs true events
    in every class it scores); NaN when there are none."""
    from ..infer.evaluate_events import PSDS1, _import_sed_scores_eval, psds
    from ..infer.tsv import audio_id

    _import_sed_scores_eval()  # the install hint when the scorers are missing
    was_training = model.training
    model.eval()
    labels = list(dataset.manifest.labels)
    present = sorted({c for clip in dataset.clips for _, _, c in clip.events})  # PSDS needs truth in every class
    if not present:
        return math.nan
    scores, truth, durations = {}, {}, {}
    hop_s = column_hop_samples(model.config, dataset.frontend) / dataset.frontend.sample_rate
    for clip in dataset.clips:
        key = audio_id(clip.key)
        values = frame_scores(model, dataset, clip, device)[:, present]  # (n, C') of the classes with truth
        bounds = np.minimum(np.arange(values.shape[0] + 1) * hop_s, clip.duration_s)
        bounds[-1] = clip.duration_s
        scores[key] = _score_frame(bounds, values, [labels[c] for c in present])
        truth[key] = [(on, off, labels[c]) for on, off, c in clip.events]
        durations[key] = clip.duration_s
    model.train(was_training)
    value, _ = psds(scores, truth, durations, PSDS1)
    return value
