"""Distillation (issue 22): a teacher's outputs on K augmented views of every clip, stored once; a small student
trained on them, seeing exactly the views the teacher saw.

The recipe is CED's ("Consistent Ensemble Distillation", RicherMans/CED; docs/training.md): each view is a
waveform shift (+-`shift_s`, circular), one frequency mask and one time mask, all drawn from one generator seeded by
the view's stored seed (`make_view`), so the student regenerates the teacher's input bit for bit (checked per item
with the stored CRC-32 of the teacher's features). View 0 is the clip as it is (no shift, no masks): the teacher's
plain answer, which the label-free validation split scores against. Views never mix clips (CED uses no mixup).

- `extract_logits`: teacher (one checkpoint or an ensemble: the mean of the members' probabilities) over a folder,
  a file list or tar shards, decoded and augmented in DataLoader workers, into the chunked folder of
  `ast_audio.train.logits`; resumable after a kill, splittable with `shard=(k, n)` as the archives are.
- `DistillDataset`: the training items: the view of epoch e of clip i, its filled teacher targets
  (`logits.fill_targets`), mixed with the clip's labels by `label_weight` where it has labels, and, for a frame
  teacher and a frame student, the frame targets moved onto the student's time columns (`frame_resampler`).
- `build_student`, `distill_splits`, `distill_loss`, `BothHeads`: what the engine (`engine.py`) asks of the recipe.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..audio.features import FeatureExtractor
from ..audio.io import load_audio
from ..config import ASTConfig, FrameHeadConfig, FrontendConfig, column_span
from ..errors import AstAudioError, ConfigError
from ..infer.archive import KILL_HOOK, list_files, share
from ..model import AST
from ..model.scores import probabilities
from ..utils import atomic_write_text, one_line
from ..weights.checkpoint import load_model
from . import logits as L
from .augment import remove_dc, spec_masks
from .data import BadClip, Item, item_seed
from .layouts import Example, Manifest, Splits, load_splits
from .recipes import TrainConfig

logger = logging.getLogger(__name__)

# CED's view augmentation for 1024 frames x 128 mel bins: shift +-0.5 s, time mask 192 frames, frequency mask 24 bins
# (scaled to other inputs by `ViewConfig.for_input`).
CED_SHIFT_S, CED_TIMEM, CED_FREQM = 0.5, 192, 24


@dataclass(frozen=True)
class ViewConfig:
    """How a view is drawn from its seed: a circular waveform shift of up to +-`shift_s` seconds, then one
    frequency mask of < `freqm` bins and one time mask of < `timem` frames (torchaudio's rule, `spec_masks`)."""

    shift_s: float = CED_SHIFT_S
    freqm: int = CED_FREQM
    timem: int = CED_TIMEM

    @classmethod
    def for_input(cls, frontend: FrontendConfig) -> ViewConfig:
        """CED's masks scaled to this input: 192/1024 of the frames and 24/128 of the mel bins."""
        return cls(CED_SHIFT_S, round(CED_FREQM * frontend.num_mel_bins / 128),
                   round(CED_TIMEM * frontend.target_length / 1024))

    def for_bins(self, teacher_bins: int, student_bins: int) -> ViewConfig:
        """The same view for a student with other mel bins (64 for 128): the frequency mask scaled with them (the
        generator's draws are the same; features are then the teacher's view at the student's resolution)."""
        return ViewConfig(self.shift_s, round(self.freqm * student_bins / teacher_bins), self.timem)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def view_seed(seed: int, clip: int, view: int) -> int:
    """The stored 63-bit seed of view `view` of clip `clip` of a run seeded `seed`."""
    return item_seed(seed, clip, view)


def make_view(waveform: torch.Tensor, seed: int, view: int, extractor: FeatureExtractor,
              config: ViewConfig) -> torch.Tensor:
    """(N,) DC-removed waveform -> (T, F) float32 features of view `view` drawn from `seed` (view 0: no augmentation).

    One generator seeded by `seed` draws, in this order: the shift (uniform integer samples in +-shift_s), the
    frequency mask, the time mask. The one definition of a view: the teacher's and the student's inputs both come
    from here, so they are equal bit for bit (on the same front end).
    """
    if view > 0:
        generator = torch.Generator().manual_seed(int(seed))
        most = round(config.shift_s * extractor.config.sample_rate)
        shift = int(torch.randint(-most, most + 1, (1,), generator=generator))
        waveform = torch.roll(waveform, shift)
    spec = extractor.pad_or_crop(extractor.frames(waveform))  # (T, F) log-mel
    if view > 0:
        spec = spec_masks(spec, config.freqm, config.timem, generator)
    return extractor.normalize(spec).float().contiguous()


def feature_crc(features: torch.Tensor) -> int:
    """CRC-32 of a float32 tensor's bytes (the bit-for-bit check of a regenerated view)."""
    return zlib.crc32(features.contiguous().numpy().tobytes())


# ----------------------------------------------------------------------------------------------------------------
# Clips: files or tar shards


@dataclass
class ClipSource:
    """The clips of `--data`: audio files (a folder or a list) or tar shards (`ast-audio prepare`), by index."""

    kind: str  # "files" or "shards"
    path: str
    names: list[str]
    labels: list[str] | None  # the shards' class names (files have none)
    targets: list[list[int]] | None
    _shards: Any = None

    def load(self, i: int, sample_rate: int) -> torch.Tensor:
        """(N,) DC-removed waveform of clip i at `sample_rate` (AstAudioError / OSError if it cannot be read)."""
        if self.kind == "files":
            return remove_dc(load_audio(self.names[i], sample_rate=sample_rate))
        if self._shards is None:
            from .shards import ShardClips

            self._shards = ShardClips(self.path, FrontendConfig(sample_rate=sample_rate))
        return self._shards.waveform(i)


def open_source(data: str | os.PathLike) -> ClipSource:
    """`data` as clips: a shard folder (its clip table; labels and targets come with it), else `list_files`."""
    from .shards import ShardClips, is_shard_folder

    if is_shard_folder(data):
        clips = ShardClips(data, FrontendConfig())
        return ClipSource("shards", str(data), [clips.key(i) for i in range(len(clips))], list(clips.labels),
                          clips.all_targets())
    if not Path(data).exists():
        raise ConfigError(f"--data {data} does not exist; expected a folder of audio, a text file with one audio "
                          "path per line, or a folder of tar shards (`ast-audio prepare`)")
    names = list_files(data)
    if not names:
        raise ConfigError(f"--data {data}: no audio files found")
    return ClipSource("files", str(data), names, None, None)


# ----------------------------------------------------------------------------------------------------------------
# The teacher


class Teacher:
    """One checkpoint or an ensemble: the mean of its members' probabilities (clip and, when every member has a
    frame head, frame scores). Members must share labels, score rule, front end and input size."""

    def __init__(self, checkpoints: Sequence[str], device: str | torch.device = "cpu") -> None:
        if not checkpoints:
            raise ConfigError("--teacher needs at least one checkpoint")
        self.device = torch.device(device)
        self.members: list[AST] = [load_model(c).to(self.device).eval() for c in checkpoints]
        first = self.members[0]
        for path, model in zip(checkpoints[1:], self.members[1:], strict=True):
            for what, mine, theirs in (("labels", model.labels, first.labels),
                                       ("front end", model.frontend, first.frontend),
                                       ("score rule (multi_label)", model.multi_label, first.multi_label)):
                if mine != theirs:
                    raise ConfigError(f"teacher {path}: its {what} differ from those of {checkpoints[0]}; the members "
                                      "of an ensemble must score the same classes on the same input")
        grids = {m.config.grid[1] for m in self.members if m.has_frame_head}
        self.frames = all(m.has_frame_head for m in self.members) and len(grids) == 1
        self.checkpoints = list(checkpoints)

    @property
    def labels(self) -> list[str]:
        return list(self.members[0].labels)

    @property
    def frontend(self) -> FrontendConfig:
        return self.members[0].frontend

    @property
    def multi_label(self) -> bool:
        return self.members[0].multi_label

    @property
    def frame_model(self) -> AST | None:
        """The member whose config describes the frame timeline (None without frame scores)."""
        return self.members[0] if self.frames else None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, F) -> ((B, C) mean clip probabilities, (B, t_dim, C) mean frame probabilities or None)."""
        clips, frames = [], []
        for part in x.split(batch_size):
            part = part.to(self.device)
            p = torch.zeros(len(part), len(self.labels), device=self.device)
            f = None
            for model in self.members:
                if self.frames:
                    logits, frame_logits = model.forward_both(part)
                    fp = probabilities(frame_logits, model.multi_label)
                    f = fp if f is None else f + fp
                else:
                    logits = model(part)
                p += probabilities(logits, model.multi_label)
            clips.append((p / len(self.members)).cpu())
            if f is not None:
                frames.append((f / len(self.members)).cpu())
        return torch.cat(clips), (torch.cat(frames) if frames else None)


# ----------------------------------------------------------------------------------------------------------------
# Writing the teacher's outputs


class _Views(torch.utils.data.Dataset):
    """Clip indices -> (clip, (K, T, F) features of its K views, (K,) seeds, error), computed in DataLoader workers."""

    def __init__(self, source: ClipSource, clips: Sequence[int], frontend: FrontendConfig, views: int,
                 config: ViewConfig, seed: int) -> None:
        self.source, self.clips, self.views, self.config, self.seed = source, list(clips), views, config, seed
        self.extractor = FeatureExtractor(frontend, remove_clip_dc=True)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, j: int) -> tuple[int, torch.Tensor | None, list[int], str]:
        clip = self.clips[j]
        seeds = [view_seed(self.seed, clip, v) for v in range(self.views)]
        try:
            wave = self.source.load(clip, self.extractor.config.sample_rate)
            feats = torch.stack([make_view(wave, s, v, self.extractor, self.config) for v, s in enumerate(seeds)])
        except (AstAudioError, OSError) as exc:
            return clip, None, seeds, f"{self.source.names[clip]}: {one_line(exc)}"
        return clip, feats, seeds, ""


def _top(scores: torch.Tensor, k: int, index_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(..., C) -> ((..., k) class indices, (..., k) float16 probabilities), highest first."""
    values, indices = scores.topk(k, dim=-1)
    return indices.numpy().astype(index_dtype), values.numpy().astype(np.float16)


def _chunk_arrays(clips: list[int], seeds: list[list[int]], crcs: list[list[int]], failed: list[int],
                  probs: torch.Tensor | None, frames: torch.Tensor | None, views: int, k: int,
                  index_dtype: np.dtype, columns: int | None) -> dict[str, np.ndarray]:
    """The arrays of one batch (see `ast_audio.train.logits`); probs (B*K, C), frames (B*K, t_dim, C); `columns`:
    the frame teacher's t_dim (None without frame scores)."""
    b = len(clips)
    arrays = {"clip": np.asarray(clips, np.int64), "failed": np.asarray(failed, np.int64),
              "seed": np.asarray(seeds, np.int64).reshape(b, views),
              "crc": np.asarray(crcs, np.int64).reshape(b, views)}
    if probs is None:  # a batch of failed clips only
        arrays["top_index"] = np.zeros((0, views, k), index_dtype)
        arrays["top_prob"] = np.zeros((0, views, k), np.float16)
        if columns is not None:
            arrays["frame_index"] = np.zeros((0, views, k), index_dtype)
            arrays["frame_prob"] = np.zeros((0, views, columns, k), np.float16)
        return arrays
    idx, prob = _top(probs, k, index_dtype)
    arrays["top_index"], arrays["top_prob"] = idx.reshape(b, views, k), prob.reshape(b, views, k)
    if frames is not None:
        classes = frames.amax(dim=1).topk(k, dim=-1).indices  # (B*K, k): the view's most active classes
        picked = frames.gather(2, classes.unsqueeze(1).expand(-1, frames.shape[1], -1))  # (B*K, t_dim, k)
        arrays["frame_index"] = classes.numpy().astype(index_dtype).reshape(b, views, k)
        arrays["frame_prob"] = picked.numpy().astype(np.float16).reshape(b, views, frames.shape[1], k)
    return arrays


def logits_index(teacher: Teacher, source: ClipSource, views: int, top_k: int, seed: int,
                 config: ViewConfig) -> dict[str, Any]:
    """The `index.json` of a run (every --shard part writes the same one)."""
    frame = teacher.frame_model
    targets = source.targets if source.labels is not None and source.labels == teacher.labels else None
    return {"format": L.FORMAT_NAME, "version": L.FORMAT_VERSION, "teacher": teacher.checkpoints,
            "labels": teacher.labels, "multi_label": teacher.multi_label, "frontend": teacher.frontend.to_dict(),
            "teacher_config": teacher.members[0].config.to_dict(),
            "frame_head": frame.config.frame_head.to_dict() if frame is not None else None,
            "views": views, "top_k": top_k, "seed": seed, "augment": config.to_dict(), "data": source.path,
            "source": source.kind, "clips": source.names, "targets": targets}


def extract_logits(teachers: Sequence[str], data: str | os.PathLike, out: str | os.PathLike, *, views: int = 10,
                   top_k: int = 20, seed: int = 0, view_config: ViewConfig | None = None,
                   shard: tuple[int, int] | None = None, batch_size: int = 8, chunk_size: int = 256,
                   workers: int = 0, resume: bool = False,
                   device: str = "cpu", progress: Callable[[float, float | None], None] | None = None,
                   on_error: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Store `teachers`' outputs on `views` views of every clip of `data` (part k of n with `shard`) in `out`.

    Clips are decoded and their views made in `workers` DataLoader processes, scored `batch_size` clips at a time
    and written `chunk_size` clips per chunk file (a kill loses at most the chunk in flight). Returns {"output",
    "clips" (this part's), "written", "skipped" (already stored), "errors", "complete" (every part done), "bytes"}.
    Without `resume`, a part that already has chunks in `out` is refused.
    """
    if views < 1:
        raise ConfigError(f"--views must be at least 1, got {views}")
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    folder = Path(out)
    source = open_source(data)
    teacher = Teacher(teachers, device)
    config = view_config or ViewConfig.for_input(teacher.frontend)
    k = min(top_k, len(teacher.labels))
    k_part, n_parts = shard or (0, 1)
    other_splits = sorted({L.chunk_part(p)[1] for p in L.chunk_files(folder)} - {n_parts})
    if other_splits:  # a clip would be stored once per split: refuse rather than hold it twice
        raise ConfigError(f"{folder} holds logits split into {other_splits[0]} part(s), not {n_parts}; give every "
                          f"part the same --shard K/{other_splits[0]}, or start over with --force and no --shard "
                          "(or another -o/--output)")
    existing = L.chunk_files(folder, (k_part, n_parts))
    if existing and not resume:
        raise ConfigError(f"{folder} already holds logits of part {k_part} of {n_parts}; pass --resume to continue, "
                          "--force to start over, or choose another -o/--output")
    L.write_index(folder, logits_index(teacher, source, views, k, seed, config))
    mine = share(range(len(source.names)), k_part, n_parts)
    done = L.clips_in(existing) if resume else set()
    todo = [c for c in mine if c not in done]
    dataset = _Views(source, todo, teacher.frontend, views, config, seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=list,
                                         prefetch_factor=2 if workers else None)
    index_dtype = L.index_dtype(len(teacher.labels))
    columns = teacher.frame_model.config.grid[1] if teacher.frame_model is not None else None
    number, written, errors = len(existing), 0, 0
    pending: list[dict[str, np.ndarray]] = []

    def flush() -> None:
        nonlocal number, pending
        if pending:
            L.write_chunk(L.chunk_path(folder, k_part, n_parts, number),
                          {name: np.concatenate([p[name] for p in pending]) for name in pending[0]})
            number, pending = number + 1, []

    for batch in loader:
        good = [b for b in batch if b[1] is not None]
        failed = [b[0] for b in batch if b[1] is None]
        for _, _, _, error in (b for b in batch if b[1] is None):
            errors += 1
            if on_error is not None:
                on_error(error)
        probs = frames = None
        if good:
            x = torch.cat([b[1] for b in good])  # (B*K, T, F), clip-major
            probs, frames = teacher(x, batch_size)
        crcs = [[feature_crc(view) for view in b[1]] for b in good]
        pending.append(_chunk_arrays([b[0] for b in good], [b[2] for b in good], crcs, failed, probs, frames, views,
                                     k, index_dtype, columns))
        written += len(batch)
        if sum(len(p["clip"]) + len(p["failed"]) for p in pending) >= chunk_size:
            flush()
        if progress is not None:
            progress(written, len(todo))
        if os.environ.get(KILL_HOOK) == str(written):  # tests: a real SIGKILL after this many clips
            os.kill(os.getpid(), 9)
    flush()
    atomic_write_text(L.done_path(folder, k_part, n_parts), f'{{"clips": {len(mine)}}}\n')
    complete = all(L.done_path(folder, j, n_parts).exists() for j in range(n_parts))
    return {"output": str(folder), "clips": len(mine), "written": written, "skipped": len(mine) - len(todo),
            "errors": errors, "complete": complete, "bytes": L.storage_bytes(folder)}


# ----------------------------------------------------------------------------------------------------------------
# The student's side


def student_frontend(index: dict[str, Any], num_mel_bins: int | None = None) -> FrontendConfig:
    """The teacher's front end (a student with other mel bins changes only those)."""
    frontend = FrontendConfig.from_dict(index["frontend"])
    return frontend if num_mel_bins is None else frontend.replace(num_mel_bins=num_mel_bins)


def frame_resampler(teacher: ASTConfig, student: ASTConfig, frontend: FrontendConfig) -> np.ndarray:
    """(t_student, t_teacher) weights that move frame targets from the teacher's time columns onto the student's:
    row j averages the teacher columns overlapping student column j's span (`column_span`), by overlap."""
    t_s, t_t = student.grid[1], teacher.grid[1]
    weights = np.zeros((t_s, t_t), np.float32)
    for j in range(t_s):
        a, b = column_span(student, frontend, j)
        for i in range(t_t):
            c, d = column_span(teacher, frontend, i)
            weights[j, i] = max(0.0, min(b, d) - max(a, c))
    total = weights.sum(axis=1, keepdims=True)
    weights[total[:, 0] == 0, -1] = 1.0  # a student column past the teacher's last one: the last teacher column
    return weights / weights.sum(axis=1, keepdims=True)


class DistillDataset(torch.utils.data.Dataset):
    """Stored clips -> (features (T, F), targets, key) items: one view per clip per epoch, regenerated from its seed.

    The view of item i in epoch e is view `item_seed(seed, e, i) % views` (of the first `views` stored). Targets: the
    filled teacher probabilities (C,) (`logits.fill_targets`), as (1 - label_weight) x teacher + label_weight x the
    clip's labels where it has labels; with `frames` (a frame teacher and a frame student), followed by the (t_dim, C)
    frame targets on the student's columns, flattened: (C + t_dim * C,). `mismatches` counts items whose features
    differ from the teacher's (CRC-32; checked when the student's front end is the teacher's).
    """

    def __init__(self, stored: L.StoredLogits, source: ClipSource, clips: Sequence[int], frontend: FrontendConfig,
                 *, views: int, seed: int, label_weight: float = 0.0,
                 frame_weights: np.ndarray | None = None) -> None:
        index = stored.index
        teacher_frontend = FrontendConfig.from_dict(index["frontend"])
        self.stored, self.source, self.clips = stored, source, list(clips)
        self.rows = stored.row()
        self.extractor = FeatureExtractor(frontend, remove_clip_dc=True)
        self.config = ViewConfig(**index["augment"]).for_bins(teacher_frontend.num_mel_bins, frontend.num_mel_bins)
        self.check_crc = frontend == teacher_frontend
        self.views, self.seed, self.label_weight = views, seed, label_weight
        self.targets = index.get("targets")
        self.frame_weights = frame_weights
        self.epoch, self.mismatches = 0, 0

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def view_of(self, i: int) -> int:
        return item_seed(self.seed, self.epoch, i) % self.views

    def target(self, row: int, view: int, clip: int) -> np.ndarray:
        """(C,) or (C + t_dim * C,) float32 targets of a stored clip-view."""
        y = self.stored.targets(row, view)
        if self.label_weight > 0 and self.targets is not None:
            hard = np.zeros_like(y)
            hard[self.targets[clip]] = 1.0
            y = (1.0 - self.label_weight) * y + self.label_weight * hard
        if self.frame_weights is not None:
            frames = self.frame_weights @ self.stored.frame_targets(row, view)  # (t_s, t_t) @ (t_t, C)
            y = np.concatenate([y, frames.reshape(-1)])
        return y.astype(np.float32)

    def __getitem__(self, i: int) -> Item | BadClip:
        clip = self.clips[i]
        row, view = self.rows[clip], self.view_of(i)
        name = self.source.names[clip]
        try:
            wave = self.source.load(clip, self.extractor.config.sample_rate)
        except (AstAudioError, OSError) as exc:
            return BadClip(name, f"{name}: {one_line(exc)}")
        x = make_view(wave, int(self.stored.seed[row, view]), view, self.extractor, self.config)
        if self.check_crc and feature_crc(x) != int(self.stored.crc[row, view]):
            self.mismatches += 1
            if self.mismatches == 1:
                logger.warning("%s view %d: regenerated features differ from the teacher's (another decoder or "
                               "front end?); the student trains on its own", name, view)
        return x, torch.from_numpy(self.target(row, view, clip)), name


# ----------------------------------------------------------------------------------------------------------------
# What the engine asks of the distill recipe


def _eval_manifest(config: TrainConfig, labels: list[str]) -> Manifest:
    """--eval-data (a labelled folder/CSV) with its classes put in the teacher's order by name."""
    whole = load_splits("folder", config.eval_data, eval_data=config.eval_data, label_csv=config.label_csv,
                        seed=config.seed).valid
    unknown = [name for name in whole.labels if name not in labels]
    if unknown:
        raise ConfigError(f"--eval-data {config.eval_data}: class {unknown[0]!r} is not one of the teacher's "
                          f"{len(labels)} classes ({', '.join(labels[:8])}{' ...' if len(labels) > 8 else ''}); "
                          "evaluate the student on the teacher's classes")
    where = [labels.index(name) for name in whole.labels]
    examples = tuple(Example(e.source, tuple(where[t] for t in e.targets), e.key) for e in whole.examples)
    return Manifest(examples, tuple(labels), tuple(labels), multi_label=True)


def _holdout(stored: L.StoredLogits, source: ClipSource, fraction: float, seed: int
             ) -> tuple[list[int], Manifest]:
    """Label-free validation: a seeded fraction of the stored clips, held out of training, scored against the
    teacher's plain answer (view 0, classes with probability >= 0.5)."""
    if source.kind != "files":
        raise ConfigError("logits of tar shards: give a labelled validation set with --eval-data (a folder or "
                          "manifest of files)")
    labels = list(stored.index["labels"])
    clips = sorted(int(c) for c in stored.clip)
    order = np.random.default_rng(seed).permutation(len(clips))
    count = max(1, round(fraction * len(clips))) if len(clips) > 1 else 0
    held = sorted(clips[i] for i in order[:count])
    rows = stored.row()
    examples = []
    for clip in held:
        p = stored.targets(rows[clip], 0)
        examples.append(Example(source.names[clip], tuple(int(c) for c in np.flatnonzero(p >= 0.5)),
                                source.names[clip]))
    return held, Manifest(tuple(examples), tuple(labels), tuple(labels), multi_label=True)


@dataclass
class DistillData:
    """The stored logits, their clips, the clips the student trains on, and the engine's splits."""

    stored: L.StoredLogits
    source: ClipSource
    train_clips: list[int]
    splits: Splits
    labels: tuple[str, ...]
    multi_label: bool


def distill_splits(config: TrainConfig) -> DistillData:
    """The distill recipe's data: the stored logits of `config.logits` (complete, views >= `config.views`), the
    clips to train on, and the validation split (--eval-data, else a held-out fraction of the clips)."""
    stored = L.load_logits(config.logits)
    index = stored.index
    if config.views is not None and config.views > stored.views:
        raise ConfigError(f"--set views={config.views}: {config.logits} stores {stored.views} views per clip; use at "
                          f"most {stored.views} or store more with `ast-audio distill logits --views`")
    if config.label_weight > 0 and index.get("targets") is None:
        raise ConfigError(f"label_weight {config.label_weight:g} mixes in labels, but {config.logits} has none (its "
                          "clips were not labelled shards with the teacher's classes); use label_weight=0")
    source = ClipSource(index["source"], index["data"], list(index["clips"]), None, index.get("targets"))
    labels = list(index["labels"])
    if config.eval_data is not None:
        held, valid = [], _eval_manifest(config, labels)
    else:
        held, valid = _holdout(stored, source, config.holdout, config.seed)
    train_clips = sorted(set(int(c) for c in stored.clip) - set(held))
    targets = index.get("targets") or [[] for _ in source.names]
    train = Manifest(tuple(Example(source.names[c], tuple(targets[c]), source.names[c]) for c in train_clips),
                     tuple(labels), tuple(labels), multi_label=bool(index["multi_label"]))
    return DistillData(stored, source, train_clips, Splits(train, valid, None), tuple(labels),
                       bool(index["multi_label"]))


def student_config(config: TrainConfig, num_classes: int) -> ASTConfig:
    """The student's ASTConfig: `config.model` on the teacher's input, with the teacher's frame head unless the
    --student JSON sets `frame_head` (null for none)."""
    index = L.read_logits_index(config.logits)
    head = index.get("frame_head")
    given = config.student_fields.get("frame_head", head)
    frame_head = FrameHeadConfig.from_dict(given) if given is not None else None
    return config.model.ast_config(config.frontend, num_classes).replace(frame_head=frame_head)


def build_student(config: TrainConfig, labels: Sequence[str], multi_label: bool) -> AST:
    """A fresh student (seeded), or one from ImageNet weights (`--init imagenet:PATH`, adapted to 16x16 patches and
    the teacher's input) or from a student checkpoint (`--init checkpoint:PATH`, same classes)."""
    kind, path = config.init_spec
    target = student_config(config, len(labels))
    torch.manual_seed(config.seed)
    if kind == "none":
        return AST(target, frontend=config.frontend, labels=list(labels), multi_label=multi_label).train()
    if kind not in ("imagenet", "checkpoint") or path is None:
        raise ConfigError(f"a student starts from --init none, imagenet:PATH (DeiT/ViT weights of its width) or "
                          f"checkpoint:PATH, got {config.init!r}")
    if kind == "checkpoint":
        given = load_model(path)
        if list(given.labels) != list(labels):
            raise ConfigError(f"--init {config.init}: its classes ({', '.join(given.labels[:4])} ...) are not the "
                              f"teacher's ({', '.join(labels[:4])} ...); continue a student of this teacher, or start "
                              "from --init none")
    model = load_model(path, model_size=target.model_size if kind == "imagenet" else None,
                       input_fdim=target.input_fdim, input_tdim=target.input_tdim, fstride=target.fstride,
                       tstride=target.tstride, num_classes=len(labels), labels=list(labels), multi_label=multi_label,
                       frontend=config.frontend, frame_head=target.frame_head)
    if (model.config.embed_dim, model.config.depth) != (target.embed_dim, target.depth):
        raise ConfigError(f"--init {config.init}: a {model.config.embed_dim}-wide, {model.config.depth}-block model, "
                          f"but the student is {target.embed_dim} wide with {target.depth} blocks; give weights of "
                          "the student's size")
    return model.train()


def train_dataset(config: TrainConfig, data: DistillData, model: AST) -> DistillDataset:
    """The training items for `model` (frame targets when the teacher and the student both have frame heads)."""
    stored = data.stored
    weights = None
    if model.has_frame_head and stored.frame_prob is not None and config.frame_weight > 0:
        teacher = ASTConfig.from_dict(stored.index["teacher_config"])
        weights = frame_resampler(teacher, model.config, config.frontend)
    return DistillDataset(stored, data.source, data.train_clips, config.frontend,
                          views=config.views or stored.views, seed=config.seed, label_weight=config.label_weight,
                          frame_weights=weights)


class BothHeads(torch.nn.Module):
    """A frame student's clip and frame logits as one (B, C + t_dim * C) output (what DDP and the engine's step
    take), for `distill_loss`."""

    def __init__(self, model: AST) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clip, frames = self.model.forward_both(x)  # (B, C), (B, t_dim, C)
        return torch.cat([clip, frames.flatten(1)], dim=1)


def distill_loss(clip_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], num_classes: int,
                 frame_weight: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The clip loss (BCE against the teacher's probabilities, or soft cross-entropy for a softmax teacher) on the
    first C columns, plus `frame_weight` x BCE on the frame columns when the output has them."""

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = clip_loss(output[:, :num_classes], target[:, :num_classes])
        frames = output[:, num_classes:]
        if target.shape[1] > num_classes:
            value = value + frame_weight * F.binary_cross_entropy_with_logits(frames, target[:, num_classes:])
        elif frames.numel():  # frame outputs without frame targets (DDP's empty batch): in the graph, no gradient
            value = value + 0.0 * frames.sum()
        return value

    return loss
