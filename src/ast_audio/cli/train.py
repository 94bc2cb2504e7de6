"""`ast-audio train`, `eval` and `average`: thin shells over ast_audio.train.engine / average.

Examples:
    ast-audio train --recipe esc50 --data ESC-50-master -o runs/esc50
    ast-audio train --recipe folder --data my_sounds/ --init none --epochs 20 -o runs/mine
    ast-audio train --recipe folder --data my_sounds/ --init none --epochs 30 -o runs/mine --resume  # 10 more
    torchrun --nproc_per_node 4 -m ast_audio train --recipe audioset-balanced --data bal.json \
        --eval-data eval.json --labels class_labels_indices.csv --init imagenet:deit_base_384.pth
    ast-audio eval --checkpoint runs/mine/model --layout folder --data my_sounds/
    ast-audio average runs/as/models/epoch_1 runs/as/models/epoch_2 -o runs/as/wa
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..config import MODEL_SIZES
from ..train.recipes import RECIPES, make_recipe
from .args import (
    add_data_args,
    add_device_arg,
    add_output_arg,
    add_progress_arg,
    clear_for_force,
    positive_float,
    positive_int,
    progress_for,
    refuse_existing,
    require_output,
)

# What a training run's folder holds (clear_for_force replaces only such a folder).
RUN_MARKERS = ("checkpoint", "model", "config.json", "metrics.csv")


def _set_pairs(pairs: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE: VALUE is parsed as JSON when it can be (numbers, true/false, null, lists), else a string."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            values[key.replace("-", "_")] = json.loads(text)
        except json.JSONDecodeError:
            values[key.replace("-", "_")] = text
    return values


def config_from_args(args: argparse.Namespace):
    """The recipe with the command-line overrides applied (a TrainConfig; flat names are placed in its nested parts
    by `TrainConfig.from_dict`)."""
    from ..errors import ConfigError

    overrides: dict[str, Any] = dict(data=args.data, eval_data=args.eval_data, label_csv=args.labels,
                                     fold=args.fold, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                     seed=args.seed, device=args.device, model_size=args.model_size,
                                     fstride=args.fstride, tstride=args.tstride, init=args.init,
                                     num_workers=args.num_workers, target_length=args.target_length,
                                     finetune=args.finetune, lora_rank=args.lora_rank, lora_targets=args.lora_targets,
                                     patience=args.patience, logits=args.logits, student=args.student)
    if args.save_adapters:
        overrides["save_adapters"] = True
    if args.model_config:
        try:
            model_config = json.loads(args.model_config)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--model-config must be a JSON object such as '{{\"embed_dim\": 32, \"depth\": 2, "
                              f"\"num_heads\": 4}}': {exc}") from None
        if not isinstance(model_config, dict):
            raise ConfigError("--model-config must be a JSON object of ASTConfig fields")
        overrides["model_config"] = model_config
    if args.no_progress:
        overrides["progress"] = False
    try:
        overrides.update(_set_pairs(args.set or []))
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return make_recipe(args.recipe, **overrides)
    except TypeError as exc:
        raise ConfigError(f"bad --set value: {exc}") from None


def cmd_train(args: argparse.Namespace) -> int:
    """Train a recipe into -o/--output (see ast_audio.train.engine.run)."""
    import os

    from ..errors import ConfigError

    if args.data is None and args.recipe != "distill":
        raise ConfigError(f"--recipe {args.recipe} needs --data PATH (only the distill recipe reads its clips from "
                          "--logits)")
    config = config_from_args(args)
    if args.print_config:
        sys.stdout.write(config.to_json() + "\n")
        return 0
    from ..train.dist import elastic_restart, elastic_resume
    from ..train.engine import run

    out = Path(args.output)
    if args.resume and args.force:
        raise ConfigError("--resume continues the run in -o/--output and --force replaces it: pass one of them")
    if args.resume and args.epochs is None:
        config = config.replace(epochs=_saved_epochs(out, config.epochs))
    if args.force and elastic_restart() == 0 and os.environ.get("RANK", "0") == "0":
        clear_for_force(out, RUN_MARKERS)  # rank 0, before any rank looks at it
    # torchrun --max-restarts N: a (re)started worker continues from the last complete checkpoint in -o/--output
    run(config, out, resume=args.resume or elastic_resume())
    return 0


def _saved_epochs(out: Path, default: int) -> int:
    """--resume without --epochs: the epochs the run in `out` was started with (its config.json), not the recipe's
    default; --epochs N with --resume extends (or shortens) the run to N epochs."""
    path = out / "config.json"
    if not path.is_file():
        return default
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["epochs"])
    except (ValueError, KeyError, TypeError):
        return default


def cmd_eval(args: argparse.Namespace) -> int:
    """Print the metrics of a checkpoint (or an ensemble) on a data split as JSON."""
    from ..train.evaluate import evaluate_checkpoints

    if args.output:
        refuse_existing(args.output, args.force)
    with progress_for(args, "eval", "batches") as progress:
        result = evaluate_checkpoints([args.checkpoint, *(args.ensemble or [])], args.layout, args.data,
                                      split=args.split, fold=args.fold, eval_data=args.eval_data,
                                      label_csv=args.labels, seed=args.seed, batch_size=args.batch_size,
                                      num_workers=args.num_workers, device=args.device, progress=progress)
    text = json.dumps(result, indent=2) + "\n"
    if args.output:
        from ..utils import atomic_write_text

        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    """Average the weights of CKPT... into -o/--output (native format)."""
    from ..train.average import average_checkpoints
    from ..weights.checkpoint import save_model

    out = Path(require_output(args, "DIR"))
    refuse_existing(out, args.force)
    model = average_checkpoints(args.checkpoints)
    save_model(model, out)
    print(f"averaged {len(args.checkpoints)} checkpoints into {out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add train, eval and average."""
    train = commands.add_parser(
        "train", help="train an AST with one of the paper's recipes or on your own folder of sounds",
        description="Train with a recipe (defaults = the reference's egs/*/run*.sh, spec §3.2). Run under "
        "`torchrun --nproc_per_node N -m ast_audio train ...` for several processes (DDP).")
    train.add_argument("--recipe", choices=RECIPES, required=True)
    add_data_args(train, layout=None, shards=True, data_required=False)
    add_output_arg(train, metavar="DIR", default="runs/train", deprecated=("--out",),
                   help="output folder (default runs/train); an existing run is refused without --resume (continue "
                   "it) or --force (start over)")
    train.add_argument("--epochs", type=positive_int, help="epochs to train (default: the recipe's); with --resume, "
                       "the new total: a finished 2-epoch run resumed with --epochs 4 trains epochs 3-4")
    train.add_argument("--batch-size", type=positive_int, help="global batch size (over all processes)")
    train.add_argument("--lr", type=positive_float)
    train.add_argument("--seed", type=int)
    add_device_arg(train)
    train.add_argument("--model-size", choices=sorted(MODEL_SIZES, key=list(MODEL_SIZES).index))
    train.add_argument("--fstride", type=positive_int)
    train.add_argument("--tstride", type=positive_int)
    train.add_argument("--target-length", type=positive_int, metavar="FRAMES", help="input frames (10 ms each)")
    train.add_argument("--init", metavar="SPEC", help="none | imagenet:PATH | audioset[:PATH] | checkpoint:PATH "
                       "(default: the recipe's)")
    train.add_argument("--num-workers", type=int, help="data loader processes per training process")
    train.add_argument("--model-config", metavar="JSON", help="ASTConfig fields for a model trained from scratch, "
                       "e.g. '{\"embed_dim\": 32, \"depth\": 2, \"num_heads\": 4}' (tests, small experiments)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="set any TrainConfig field by its flat name (repeatable), e.g. --set mixup=0.5 --set "
                            "timem=40")
    train.add_argument("--finetune", metavar="MODE", help="full (default) | linear (the head on cached frozen "
                       "features) | last:N (the last N blocks + norm + head) | lora (adapters + head, merged on save)")
    train.add_argument("--lora-rank", type=positive_int, metavar="R", help="LoRA rank (default 8)")
    train.add_argument("--lora-targets", metavar="NAMES", help="comma-separated block layers LoRA adapts: qkv, proj, "
                       "fc1, fc2 (default qkv,proj)")
    train.add_argument("--save-adapters", action="store_true", help="lora: also write the adapters and head alone "
                       "to OUT/adapters/")
    train.add_argument("--patience", type=positive_int, metavar="EPOCHS", help="early stopping: stop after this "
                       "many epochs without a better validation score")
    train.add_argument("--logits", metavar="DIR", help="distill recipe: the teacher's stored outputs (`ast-audio "
                       "distill logits`)")
    train.add_argument("--student", metavar="SIZE|JSON", help="distill recipe: tiny, mini or small (192/256/384 wide, "
                       "12 blocks, 16x16 patches at stride 16) or a JSON object of ASTConfig fields; the input and "
                       "classes come from the teacher")
    train.add_argument("--resume", action="store_true", help="continue the run in -o/--output from its last "
                       "checkpoint (up to --epochs, if given: more epochs extend a finished run)")
    train.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    add_progress_arg(train)
    train.set_defaults(func=cmd_train)

    ev = commands.add_parser("eval", help="mAP / mAUC / d' / accuracy of a checkpoint (or an ensemble) on a data set")
    ev.add_argument("--checkpoint", required=True, help="checkpoint folder, .pth file or hub id")
    ev.add_argument("--ensemble", nargs="+", metavar="CKPT", help="more checkpoints: average their scores")
    add_data_args(ev, layout="required")
    ev.add_argument("--split", choices=("train", "valid", "test"), help="default: test if the layout has one, "
                    "else valid")
    ev.add_argument("--batch-size", type=positive_int, default=24)
    ev.add_argument("--num-workers", type=int, default=0)
    ev.add_argument("--seed", type=int, default=0, help="seed of the folder layout's holdout split")
    add_device_arg(ev)
    add_output_arg(ev, metavar="PATH", help="write the JSON here instead of stdout")
    add_progress_arg(ev)
    ev.set_defaults(func=cmd_eval)

    avg = commands.add_parser("average", help="average the weights of checkpoints of the same model (WA)")
    avg.add_argument("checkpoints", nargs="+", metavar="CKPT")
    add_output_arg(avg, metavar="DIR", required=True, deprecated=("--out",), help="folder of the averaged model")
    avg.set_defaults(func=cmd_average)
