"""`ast-audio prepare` (pack a data set into tar shards) and `ast-audio stats` (normalisation mean/std).

Both read the same layouts as `ast-audio train` (ast_audio.train.data.load_splits). Unreadable clips are
reported on stderr with their path and skipped; the command then exits 1 after finishing the rest.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..config import SAMPLE_RATE
from .args import (
    add_data_args,
    add_option,
    add_output_arg,
    add_progress_arg,
    positive_int,
    progress_for,
    require_output,
    unit_float,
)

SPLITS = ("train", "valid", "test")

# The reference get_norm_stats.py example (spec §2.1): training augmentation on, normalisation off, batch 1000.
NORM_STATS_DEFAULTS = dict(mixup=0.5, freqm=24, timem=192, noise=False, target_length=1024)


def _add_data_args(parser: argparse.ArgumentParser, shards: bool) -> None:
    add_data_args(parser, layout="optional", shards=shards)
    parser.add_argument("--holdout", type=unit_float, default=0.2,
                        help="folder without validation data: stratified fraction held out (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="holdout split and shuffling seed (default 0)")
    parser.add_argument("--split", choices=SPLITS, default="train", help="which split to use (default train)")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `prepare` and `stats` to `commands`."""
    prepare = commands.add_parser(
        "prepare", help="pack a data set split into WebDataset-style tar shards",
        description="Decode every clip of a split once (mono, resampled to --sample-rate), store it losslessly in "
        "tar shards with its labels, and write index.json. `ast-audio train --data DIR` streams such a folder.")
    _add_data_args(prepare, shards=False)
    add_output_arg(prepare, metavar="DIR", required=True, deprecated=("--out",), help="output folder for the shards")
    prepare.add_argument("--shard-size", type=positive_int, default=1000, help="clips per shard (default 1000)")
    prepare.add_argument("--sample-rate", type=positive_int, default=SAMPLE_RATE,
                         help=f"stored rate in Hz (default {SAMPLE_RATE})")
    add_option(prepare, "--audio-format", choices=("flac", "wav"), default="flac", deprecated=("--format",),
               help="how the clips are stored: flac, lossless 24-bit (default); wav, float32")
    add_option(prepare, "--num-workers", type=int, default=0, deprecated=("--workers",),
               help="decoding processes (default 0: this process)")
    prepare.set_defaults(func=cmd_prepare)

    stats = commands.add_parser(
        "stats", help="compute a data set's normalisation mean/std the way the reference does",
        description="Mean of per-batch means and of per-batch stds of the unnormalised training features, with the "
        "training augmentation on (reference get_norm_stats.py). With --recipe, the recipe's augmentation and "
        "target length; without it, the reference example's (mixup 0.5, freqm 24, timem 192, 1024 frames). "
        "Prints JSON {\"mean\", \"std\", \"clips\", \"skipped\", \"batches\"}.")
    _add_data_args(stats, shards=True)
    stats.add_argument("--recipe", help="take augmentation and target length from this training recipe")
    stats.add_argument("--mixup", type=unit_float, help="mixup probability")
    stats.add_argument("--freqm", type=int, help="frequency-mask parameter (mel bins)")
    stats.add_argument("--timem", type=int, help="time-mask parameter (frames)")
    stats.add_argument("--noise", action=argparse.BooleanOptionalAction, default=None,
                       help="Speech Commands noise + roll")
    stats.add_argument("--target-length", type=positive_int, help="frames per clip after pad/crop")
    stats.add_argument("--num-mel-bins", type=positive_int, help="mel bins (default 128)")
    stats.add_argument("--batch-size", type=positive_int, default=1000, help="clips per batch (default 1000)")
    stats.add_argument("--num-batches", type=positive_int, help="stop after this many batches")
    add_option(stats, "--num-workers", type=int, default=0, deprecated=("--workers",),
               help="DataLoader worker processes (default 0)")
    add_progress_arg(stats)
    stats.set_defaults(func=cmd_stats)


def _manifest(args: argparse.Namespace):
    from ..errors import ConfigError
    from ..train.layouts import load_splits

    if args.layout is None:
        raise ConfigError("--layout is required (audioset, esc50, speechcommands or folder)")
    splits = load_splits(args.layout, args.data, fold=args.fold, eval_data=args.eval_data,
                         label_csv=args.labels, holdout=args.holdout, seed=args.seed)
    manifest = getattr(splits, args.split)
    if manifest is None:
        raise ConfigError(f"layout {args.layout} has no {args.split} split; use --split train or valid")
    return manifest


def _report_bad(items) -> None:
    for item in items:
        print(f"ast-audio: error: {item}", file=sys.stderr)


def cmd_prepare(args: argparse.Namespace) -> int:
    from ..train.shards import INDEX_NAME, prepare_shards

    output = require_output(args, "DIR")
    manifest = _manifest(args)
    out = prepare_shards(manifest, output, shard_size=args.shard_size, sample_rate=args.sample_rate,
                         audio_format=args.audio_format, num_workers=max(0, args.num_workers), force=args.force)
    index = json.loads((out / INDEX_NAME).read_text(encoding="utf-8"))
    _report_bad(entry["error"] for entry in index["skipped"])
    print(json.dumps({"out": str(out), "clips": index["clips"], "shards": len(index["shards"]),
                      "skipped": len(index["skipped"])}))
    return 1 if index["skipped"] else 0


def _stats_settings(args: argparse.Namespace):
    """(FrontendConfig, AugmentConfig) of the statistics: the recipe's (or the reference example's), with the
    command line's changes."""
    import dataclasses

    from ..config import FrontendConfig
    from ..train.recipes import AugmentConfig, make_recipe

    if args.recipe is not None:
        config = make_recipe(args.recipe)
        frontend, augment = config.frontend, config.augment
    else:
        defaults = NORM_STATS_DEFAULTS
        frontend = FrontendConfig(target_length=defaults["target_length"])
        augment = AugmentConfig(**{k: v for k, v in defaults.items() if k != "target_length"})
    changes = {name: getattr(args, name) for name in ("mixup", "freqm", "timem", "noise")
               if getattr(args, name) is not None}
    sizes = {name: getattr(args, name) for name in ("target_length", "num_mel_bins") if getattr(args, name) is not None}
    return dataclasses.replace(frontend, **sizes), dataclasses.replace(augment, **changes)


def cmd_stats(args: argparse.Namespace) -> int:
    from ..train.data import ClipDataset
    from ..train.shards import ShardDataset, is_shard_folder
    from ..train.stats import norm_stats

    frontend, augment = _stats_settings(args)
    if is_shard_folder(args.data):
        dataset = ShardDataset(args.data, frontend, augment, seed=args.seed, normalize=False)
    else:
        dataset = ClipDataset(_manifest(args), frontend, augment, seed=args.seed, normalize=False)
    with progress_for(args, "stats", "batches") as progress:
        result = norm_stats(dataset, batch_size=args.batch_size, num_batches=args.num_batches,
                            num_workers=max(0, args.num_workers), seed=args.seed, progress=progress)
    _report_bad(bad.error for bad in result.bad)
    print(json.dumps({"mean": result.mean, "std": result.std, "clips": result.clips, "skipped": result.skipped,
                      "batches": result.batches}))
    return 1 if result.bad else 0
