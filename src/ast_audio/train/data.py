"""The training data set: clips of a manifest -> (features, soft targets, key) items, and their collation.

`ClipDataset` decodes each clip, applies the training augmentation (mixup, masks, noise; `augment.py`) with
randomness seeded per (seed, epoch, index), and returns a `BadClip` instead of raising for a clip that cannot be
decoded; `collate` drops and lists those, so a few bad clips in two million are reported, never silently replaced.
`mixup_item` is the one item builder with waveform mixup, shared with the streamed `ShardDataset` (shards.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..audio.features import FeatureExtractor
from ..audio.io import load_audio
from ..config import FrontendConfig
from ..errors import AstAudioError, ConfigError
from ..utils import one_line
from .augment import hard_targets, mix_targets, mix_waveforms, noise_and_roll, remove_dc, sample_beta, spec_masks
from .layouts import Example, Manifest
from .recipes import AugmentConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BadClip:
    """A clip that could not be used: `error` is a one-line message that names the file."""

    key: str
    error: str


# One training item: (T, F) features, (C,) soft targets, the clip's key.
Item = tuple[torch.Tensor, torch.Tensor, str]


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit generator seed that depends on (seed, epoch, index) only (numpy SeedSequence hashing)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def mixup_draw(aug: AugmentConfig, partners: int, generator: torch.Generator) -> tuple[int, float] | None:
    """Whether to mix an item (probability `aug.mixup`), and if so with which of `partners` candidates and which
    λ ~ Beta(alpha, alpha): (partner index, λ) or None. The one mixup draw of the clip, shard and SED datasets."""
    if aug.mixup > 0 and partners > 0 and float(torch.rand(1, generator=generator)) < aug.mixup:
        chosen = int(torch.randint(0, partners, (1,), generator=generator))
        return chosen, sample_beta(aug.mixup_alpha, aug.mixup_alpha, generator)
    return None


class ClipDataset(torch.utils.data.Dataset):
    """Manifest -> (features (T, F) float32, soft targets (C,) float32, key) per index, or a `BadClip`.

    Decoding: `load_audio` (mono by channel average, resampled with soxr to `frontend.sample_rate`), DC removal,
    optional waveform mixup (spec §2.2), Kaldi fbank and pad/crop to `frontend.target_length`, optional
    frequency/time masks (value 0, before normalisation, spec §2.3), normalisation (unless `normalize=False`,
    for statistics), optional Speech Commands noise + roll (after normalisation, spec §2.4).

    Randomness comes from a `torch.Generator` seeded by (seed, epoch, index), so items do not depend on workers,
    ranks, or where a run was resumed. If a mixup partner cannot be decoded the item is returned unmixed (the
    partner is reported when it is loaded as an item itself); `mixup_fallbacks` counts them in this process.
    """

    def __init__(self, manifest: Manifest, frontend: FrontendConfig, augment: AugmentConfig | None = None, *,
                 seed: int = 0, normalize: bool = True) -> None:
        if not (isinstance(seed, int) and seed >= 0):
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        self.manifest = manifest
        self.frontend = frontend
        self.augment = augment if augment is not None and augment.active else None
        self.seed = seed
        self.normalize = normalize
        self.epoch = 0
        self.mixup_fallbacks = 0
        self.extractor = FeatureExtractor(frontend, remove_clip_dc=True)

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _load(self, example: Example) -> torch.Tensor:
        return remove_dc(load_audio(example.source, sample_rate=self.frontend.sample_rate))

    def features(self, waveform: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N,) DC-removed waveform -> (target_length, F) features: fbank, pad/crop, masks, normalise, noise."""
        spec = self.extractor.pad_or_crop(self.extractor.frames(waveform))  # (T, F)
        aug = self.augment
        if aug is not None and generator is not None:
            spec = spec_masks(spec, aug.freqm, aug.timem, generator)
        if self.normalize:
            spec = self.extractor.normalize(spec)
        if aug is not None and generator is not None and aug.noise:
            spec = noise_and_roll(spec, generator)
        return spec.float().contiguous()

    def __getitem__(self, index: int) -> Item | BadClip:
        example = self.manifest.examples[index]
        try:
            waveform = self._load(example)
        except (AstAudioError, OSError) as exc:
            return BadClip(example.key, one_line(exc))

        def partner(i: int) -> tuple[torch.Tensor, Sequence[int]]:
            other = self.manifest.examples[i]
            return self._load(other), other.targets

        return self.item(waveform, example.targets, example.key, index, len(self.manifest), partner)

    def item(self, waveform: torch.Tensor, targets: Sequence[int], key: str, index: int, partners: int,
             partner: Callable[[int], tuple[torch.Tensor, Sequence[int]]]) -> Item:
        """One training item from a decoded, DC-removed (N,) waveform: the one builder of mixup items (this
        dataset's and `ShardDataset`'s).

        With augmentation, a generator seeded by (seed, epoch, `index`) decides whether to mix (probability
        `mixup`), with which of the `partners` candidates (`partner(i)` decodes candidate i: its waveform and
        targets) and with which λ ~ Beta(alpha, alpha); then masks and noise (`features`). A partner that cannot be
        decoded leaves the item unmixed (counted in `mixup_fallbacks` and logged).
        """
        aug = self.augment
        soft = hard_targets(targets, self.num_classes)
        if aug is None:
            return self.features(waveform), soft, key
        generator = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))
        draw = mixup_draw(aug, partners, generator)
        if draw is not None:
            chosen, lam = draw
            try:
                partner_wave, partner_targets = partner(chosen)
            except (AstAudioError, OSError) as exc:
                self.mixup_fallbacks += 1
                logger.warning("mixup partner of %s skipped (item left unmixed): %s", key, one_line(exc))
            else:
                waveform = mix_waveforms(waveform, partner_wave, lam)
                soft = mix_targets(targets, partner_targets, lam, self.num_classes)
        return self.features(waveform, generator), soft, key


@dataclass
class Batch:
    """Collated clips: x (B, T, F), y (B, C), their keys, and the clips dropped as unreadable.

    An all-bad batch has B = 0 and x.shape == (0, 0, 0); check `len(batch)` before a forward pass.
    """

    x: torch.Tensor
    y: torch.Tensor
    keys: list[str]
    bad: list[BadClip] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)


def collate(items: Sequence[Item | BadClip]) -> Batch:
    """Stack the good items into a `Batch`, listing the `BadClip`s instead of replacing them."""
    bad = [item for item in items if isinstance(item, BadClip)]
    good = [item for item in items if not isinstance(item, BadClip)]
    if not good:
        return Batch(torch.zeros(0, 0, 0), torch.zeros(0, 0), [], bad)
    x = torch.stack([item[0] for item in good])  # B x (T, F) -> (B, T, F)
    y = torch.stack([item[1] for item in good])  # B x (C,) -> (B, C)
    return Batch(x, y, [item[2] for item in good], bad)
