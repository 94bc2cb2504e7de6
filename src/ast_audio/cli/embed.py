"""`ast-audio embed`: clip and per-window embeddings (optionally patch tokens) of audio files to .npz or Parquet.

A thin shell over `ast_audio.infer.embed` (Embedder, write_embeddings).
"""

from __future__ import annotations

import argparse

from ..errors import AstAudioError
from ..infer.names import POOLS
from .args import (
    add_checkpoint_arg,
    add_device_arg,
    add_output_arg,
    add_precision_arg,
    add_strict_arg,
    inference_device,
    load_for_inference,
    number,
    positive_float,
    positive_int,
    refuse_existing,
    report_file_error,
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add embed."""
    embed = commands.add_parser(
        "embed", help="write clip and per-window embeddings of audio files (.npz or .parquet)",
        description="Embeddings for downstream models: per window (placed as `tag` places them, files streamed) the "
        "pooled tokens of the last layer (or --layer N), and per file their mean. --pool none also keeps every "
        "patch token with its time and mel-bin span.")
    embed.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, ...)")
    add_checkpoint_arg(embed)
    add_precision_arg(embed, default="auto")
    add_device_arg(embed)
    embed.add_argument("--window", type=positive_float, metavar="S",
                       help="window length in seconds (default: the model's input length)")
    embed.add_argument("--hop", type=positive_float, metavar="S", help="seconds between windows (default: half "
                       "the window)")
    embed.add_argument("--layer", type=number(int, what="a block number (negative: from the end)"), metavar="N",
                       help="pool the tokens after block N (1..depth, -1 = the last; default: the final, normed layer)")
    embed.add_argument("--pool", choices=POOLS, help="tokens: mean of the cls and dist tokens; mean: mean of the "
                       "patch tokens; none: also keep the patch tokens (default: the model's own pooling)")
    embed.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass (default 8)")
    add_output_arg(embed, metavar="OUT", required=True, help="OUT.npz or OUT.parquet")
    add_strict_arg(embed)
    embed.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed FILE... into OUT; bad files are reported one line each and left out; 1 if any failed."""
    from ..infer.embed import Embedder, output_format, write_embeddings

    output_format(args.output)
    refuse_existing(args.output, args.force)
    # Embeddings need the torch layers: auto picks among torch precisions; an explicit ort-* runs its fp32 source.
    device = inference_device(args.device, args.precision)
    model = load_for_inference(args.checkpoint, args.precision, torch_only=True, verbose=args.verbose, device=device)
    embedder = Embedder(model, device=device, layer=args.layer, pool=args.pool)
    embedder.tagger.window_and_hop(args.window, args.hop)  # refuse bad options before decoding anything
    failed = 0

    def report(index: int, exc: AstAudioError) -> None:
        nonlocal failed
        if args.debug:
            raise exc
        report_file_error(args.files[index], exc)
        failed += 1

    results = embedder.embed(args.files, window_s=args.window, hop_s=args.hop, batch_size=args.batch_size,
                             on_error=report)
    written = write_embeddings(results, args.output, embedder)
    if not written:
        raise AstAudioError(f"none of the {len(args.files)} file(s) could be embedded (each is named above); nothing "
                            f"was written to {args.output}")
    print(f"wrote embeddings of {written} file(s) ({embedder.dim} wide, layer {embedder.layer or 'final'}, pool "
          f"{embedder.pool}) to {args.output}")
    return 1 if failed else 0
