"""How well `explain` points at the evidence, on clips where the evidence is known (the demo model's sounds).

`python -m ast_audio.bench.explain --checkpoint DEMO/model` (a model from `ast-audio demo -o DEMO`) generates
`clips_per_class` clips per demo class with the demo's synthesis (`ast_audio.apps.demo.synth_event`): 2 s of the demo's
quiet background noise with one 0.5-1 s sound at a random time, so the sound covers a known part of the spectrogram.
Its region is the ideal binary mask at a 0 dB local criterion: the (frame, mel bin) cells where the sound alone has
more power than the background alone (both known, computed with the model's own front end).

For each clip and each method (`explain_methods.METHODS`; gradient-rollout explains the top class, as the command
does by default):
- pointing game: does the most relevant patch touch the region (`infer.explain.pointing_game`)? The chance level is
  the share of patches that touch it (`pointing_chance`);
- deletion curve: the top class's score as patches are removed most relevant first, a removed patch's cells set to
  the background's level (the per-mel-bin mean of the clip's background alone, in log-mel), sampled at 21 points;
  its area (AUC) against the mean AUC of `random_orders` random orders of the same clip.

Everything is seeded (`seed`): the same checkpoint gives the same numbers.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..apps.demo import CLASSES, SAMPLE_RATE, background_noise, synth_event
from ..audio.features import FeatureExtractor
from ..infer.explain import (
    deletion_curve,
    model_input,
    patch_relevance,
    pointing_chance,
    pointing_game,
    relevance_order,
    torch_ast,
)
from ..infer.explain_methods import METHODS
from ..model.ast import AST

CLIP_S = 2.0
SOUND_S = (0.5, 1.0)  # the sound's length
ONSET_S = (0.1, 0.9)  # where it starts (it ends by 1.9 s)


@dataclass
class KnownClip:
    """A clip and its parts: waveform = background + sound (all (N,) float32 at 16 kHz); sound is zero outside
    [onset_s, offset_s)."""

    kind: str
    waveform: np.ndarray
    background: np.ndarray
    sound: np.ndarray
    onset_s: float
    offset_s: float


def known_clips(clips_per_class: int = 3, seed: int = 0) -> list[KnownClip]:
    """`clips_per_class` clips of each demo class, in class order: one sound at a random time over quiet noise."""
    rng = np.random.default_rng(seed)
    n = int(CLIP_S * SAMPLE_RATE)
    clips = []
    for kind in CLASSES:
        for _ in range(clips_per_class):
            background = background_noise(n, rng)
            onset = int(rng.uniform(*ONSET_S) * SAMPLE_RATE)
            event = synth_event(kind, int(rng.uniform(*SOUND_S) * SAMPLE_RATE), rng)  # a noise burst may be shorter
            sound = np.zeros(n)
            sound[onset:onset + len(event)] = event
            clips.append(KnownClip(kind, (background + sound).astype(np.float32), background.astype(np.float32),
                                   sound.astype(np.float32), onset / SAMPLE_RATE, (onset + len(event)) / SAMPLE_RATE))
    return clips


def sound_region(clip: KnownClip, features: FeatureExtractor) -> torch.Tensor:
    """(T, F) bool: the cells where the sound alone has more power than the background alone (log-mel: sound > bg;
    strictly, so the mel bins no FFT bin falls into, at the log floor in both, stay outside)."""
    return features.frames(clip.sound) > features.frames(clip.background)


@dataclass
class ClipResult:
    kind: str
    top_class: str
    chance: float  # share of patches touching the sound's region
    hits: dict[str, bool] = field(default_factory=dict)  # method -> pointing game hit
    auc: dict[str, float] = field(default_factory=dict)  # method -> deletion AUC of the top class's score
    random_auc: float = float("nan")  # mean over the random orders


def measure_clip(model: AST, clip: KnownClip, *, random_orders: int = 5, steps: int = 20,
                 seed: int = 0) -> ClipResult:
    """Pointing game and deletion AUC of each method on one clip, and the random orders' mean AUC."""
    features = FeatureExtractor(model.frontend)
    frames = features.frames(clip.waveform)[:model.frontend.target_length]  # (T, F) unnormalised
    fill = features.frames(clip.background).mean(dim=0)  # (F,) the background's level per mel bin
    region = sound_region(clip, features)[:frames.shape[0]]
    x = model_input(model, frames)
    patches = {method: patch_relevance(model, x, method) for method in METHODS}  # method -> (patch, logits, class)
    _, logits, _ = patches[METHODS[0]]
    top = model.labels[int(logits.argmax())]  # the class the default method explains
    result = ClipResult(clip.kind, top, pointing_chance(region, model.config))
    for method, (patch, _, _) in patches.items():
        result.hits[method] = pointing_game(patch, region, model.config)
        result.auc[method] = deletion_curve(model, frames, top, relevance_order(patch), fill, steps=steps).auc
    generator = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(model.config.num_patches, generator=generator) for _ in range(random_orders)]
    result.random_auc = float(np.mean([deletion_curve(model, frames, top, order, fill, steps=steps).auc
                                       for order in orders]))
    return result


@dataclass
class ExplainBench:
    """Per-method totals over the clips: pointing hits, mean deletion AUC, clips whose AUC beat their random mean."""

    clips: list[ClipResult]
    hits: dict[str, int]
    mean_auc: dict[str, float]
    beats_random: dict[str, int]
    mean_random_auc: float
    mean_chance: float
    correct: int  # clips whose top class is their own

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """Markdown tables: the totals, then per class (pointing hits and mean deletion AUC per method)."""
        n = len(self.clips)
        methods = list(self.hits)
        lines = [f"{n} clips ({self.correct} with the right top class); pointing chance (a random patch) "
                 f"{self.mean_chance:.2f}; random-order deletion AUC {self.mean_random_auc:.3f}",
                 "", "| method | pointing game | deletion AUC (mean) | clips with AUC below random's |",
                 "|---|---|---|---|"]
        for method in methods:
            lines.append(f"| {method} | {self.hits[method]}/{n} | {self.mean_auc[method]:.3f} | "
                         f"{self.beats_random[method]}/{n} |")
        lines += ["", "| class | chance | " + " | ".join(f"{m} pointing | {m} AUC" for m in methods)
                  + " | random AUC |", "|---" * (3 + 2 * len(methods)) + "|"]
        for kind in dict.fromkeys(r.kind for r in self.clips):
            rows = [r for r in self.clips if r.kind == kind]
            cells = [f"{sum(r.hits[m] for r in rows)}/{len(rows)} | {np.mean([r.auc[m] for r in rows]):.3f}"
                     for m in methods]
            lines.append(f"| {kind} | {np.mean([r.chance for r in rows]):.2f} | " + " | ".join(cells)
                         + f" | {np.mean([r.random_auc for r in rows]):.3f} |")
        return "\n".join(lines)


def run_bench(model: AST, *, clips_per_class: int = 3, random_orders: int = 5, steps: int = 20,
              seed: int = 0) -> ExplainBench:
    """Both methods on `known_clips(clips_per_class, seed)` (12 clips by default)."""
    model = torch_ast(model).eval()
    results = [measure_clip(model, clip, random_orders=random_orders, steps=steps, seed=seed + i)
               for i, clip in enumerate(known_clips(clips_per_class, seed))]
    return ExplainBench(
        clips=results,
        hits={m: sum(r.hits[m] for r in results) for m in METHODS},
        mean_auc={m: float(np.mean([r.auc[m] for r in results])) for m in METHODS},
        beats_random={m: sum(r.auc[m] < r.random_auc for r in results) for m in METHODS},
        mean_random_auc=float(np.mean([r.random_auc for r in results])),
        mean_chance=float(np.mean([r.chance for r in results])),
        correct=sum(r.top_class == r.kind for r in results))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the demo model (`ast-audio demo -o DIR`: DIR/model)")
    parser.add_argument("--clips-per-class", type=int, default=3, help="clips of each demo class (default 3)")
    parser.add_argument("--random-orders", type=int, default=5, help="random deletion orders per clip (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="clips and random orders (default 0)")
    parser.add_argument("--json", metavar="OUT", help="also write every clip's numbers as JSON")
    args = parser.parse_args(argv)
    from ..utils import atomic_write_text
    from ..weights.checkpoint import load_model

    bench = run_bench(load_model(args.checkpoint), clips_per_class=args.clips_per_class,
                      random_orders=args.random_orders, seed=args.seed)
    for r in bench.clips:
        marks = ", ".join(f"{m} {'hit' if r.hits[m] else 'miss'} AUC {r.auc[m]:.3f}" for m in METHODS)
        print(f"{r.kind:12s} top {r.top_class:12s} chance {r.chance:.2f}; {marks}; random AUC {r.random_auc:.3f}")
    print(bench.table())
    if args.json:
        atomic_write_text(args.json, json.dumps(bench.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
