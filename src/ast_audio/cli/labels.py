"""`ast-audio labels`: a model's classes (default: AudioSet's 527), an ontology subtree, or a search.

The lookups live in `ast_audio.ontology` and `ast_audio.labels`; this module only formats them. Without
--checkpoint nothing loads torch (the shipped AudioSet table is the default model's class list).
"""

from __future__ import annotations

import argparse
import io
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


def _entry(node: Any, index: dict[str, int], depth: int | None = None) -> dict[str, Any]:
    entry = {"id": node.id, "name": node.name, "index": index.get(node.id), "abstract": node.abstract}
    return entry if depth is None else {"depth": depth, **entry}


def _emit(text: str) -> int:
    """Print `text` (a reader that stops early, `ast-audio labels | head`, is handled once for every command by
    `cli.main`)."""
    sys.stdout.write(text)
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    """Print the classes, a subtree or search results (text or --json)."""
    from ..labels import class_map

    if args.tree and args.search:
        from ..errors import ConfigError

        raise ConfigError("--tree and --search are separate views; pass one of them")
    labels = _model_labels(args.checkpoint)
    cmap = class_map(labels)
    ontology = cmap.ontology
    index = {node: i for i, node in enumerate(cmap.node_of) if node is not None}  # ontology id -> output index
    out = io.StringIO()  # written at once by _emit

    if args.tree:
        from ..ontology import load_ontology

        ontology = ontology or load_ontology()  # the tree is the ontology's, whatever the model
        root = ontology.get(args.tree)
        rows: list[dict[str, Any]] = []

        def walk(class_id: str, depth: int, path: tuple[str, ...]) -> None:  # a class of two parents appears twice
            node = ontology.classes[class_id]
            rows.append(_entry(node, index, depth))
            for child in node.children:
                if child not in path:  # guard against a cycle in a hand-edited file
                    walk(child, depth + 1, (*path, child))

        walk(root.id, 0, (root.id,))
        if args.json:
            out.write(json.dumps(rows, indent=1) + "\n")
        else:
            for row in rows:
                mark = f"* {row['index']:>3} " if row["index"] is not None else "      "
                note = " (abstract)" if row["abstract"] else ""
                out.write(f"{mark}{'  ' * row['depth']}{row['name']}  {row['id']}{note}\n")
        return _emit(out.getvalue())

    if args.search:
        from ..ontology import load_ontology

        needle = args.search.strip().casefold()
        found = [_entry(node, index) for node in (ontology or load_ontology()).search(args.search)]
        if ontology is None:  # a model of its own names: search those too
            found = [{"id": None, "name": name, "index": i, "abstract": False}
                     for i, name in enumerate(labels) if needle in name.casefold()] + found
        if args.json:
            out.write(json.dumps(found, indent=1) + "\n")
        else:
            for row in found:
                mark = f"{row['index']:>3}" if row["index"] is not None else "  -"
                note = " (abstract)" if row["abstract"] else ""
                out.write(f"{mark}  {row['name']}{'  ' + row['id'] if row['id'] else ''}{note}\n")
            if not found:
                out.write(f"no class matches {args.search!r}\n")
        return _emit(out.getvalue())

    rows = [{"index": i, "name": name, "id": node} for i, (name, node) in enumerate(zip(labels, cmap.node_of,
                                                                                       strict=True))]
    if args.json:
        out.write(json.dumps(rows, indent=1) + "\n")
    else:
        for row in rows:
            out.write(f"{row['index']:>3}  {row['name']}{'  ' + row['id'] if row['id'] else ''}\n")
    return _emit(out.getvalue())
