"""`ast-audio labels`: a model's classes (default: AudioSet's 527), an ontology subtree, or a search.

The lookups live in `ast_audio.ontology` and `ast_audio.labels`; this module only formats them. Without
--checkpoint nothing loads torch (the shipped AudioSet table is the default model's class list).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(commands: argparse._SubParsersAction) -> None:
    """Add labels."""
    labels = commands.add_parser(
        "labels", help="list, browse and search a model's classes and the AudioSet ontology",
        description="List the model's classes (index, name, AudioSet id), print an ontology subtree (--tree) or "
        "search names and descriptions (--search). Default: the 527 AudioSet classes.")
    labels.add_argument("--checkpoint", metavar="C", help="list this checkpoint's classes (folder, .pth or hub id; "
                        "default: the AudioSet table, without loading a model)")
    labels.add_argument("--tree", metavar="NAME", help="print the ontology below NAME (a name in any case, or an id "
                        "such as /m/04rlf), indented; '*' marks the model's output classes (with their index), "
                        "'(abstract)' the grouping classes")
    labels.add_argument("--search", metavar="TEXT", help="ontology classes whose name or description contains TEXT "
                        "(any case), and the model's classes whose name does")
    labels.add_argument("--json", action="store_true", help="print JSON instead of text")
    labels.set_defaults(func=cmd_labels)


def _model_labels(checkpoint: str | None) -> tuple[str, ...]:
    from ..labels import builtin_labels

    if checkpoint is None:
        return tuple(builtin_labels("audioset"))
    from ..weights.checkpoint import load_model

    return tuple(load_model(checkpoint).labels)


def _emit(text: str) -> int:
    """Print `text` (a reader that stops early, `ast-audio labels | head`, is handled once for every command by
    `cli.main`)."""
    sys.stdout.write(text)
    return 0


def _text_row(row: dict[str, Any], view: str) -> str:
    """One line of the text output of a `view` ("tree", "search" or "list") row."""
    note = " (abstract)" if row.get("abstract") else ""
    ident = f"  {row['id']}" if row["id"] else ""
    if view == "tree":
        mark = f"* {row['index']:>3} " if row["index"] is not None else "      "
        return f"{mark}{'  ' * row['depth']}{row['name']}{ident}{note}"
    mark = f"{row['index']:>3}" if row["index"] is not None else "  -"
    return f"{mark}  {row['name']}{ident}{note}"


def cmd_labels(args: argparse.Namespace) -> int:
    """Print the classes, a subtree or search results (text or --json): `ast_audio.labels.label_rows`."""
    from ..labels import label_rows

    rows = label_rows(_model_labels(args.checkpoint), tree=args.tree, search=args.search)
    if args.json:
        return _emit(json.dumps(rows, indent=1) + "\n")
    view = "tree" if args.tree else "search" if args.search else "list"
    lines = [_text_row(row, view) for row in rows]
    if args.search and not rows:
        lines.append(f"no class matches {args.search!r}")
    return _emit("".join(line + "\n" for line in lines))
