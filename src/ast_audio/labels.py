"""Class names: label files, checking names against a model's classes, and choosing the classes to report.

Label files are the reference `index,mid,display_name` CSV (e.g. AudioSet's class_labels_indices.csv). The
reference recipes ship one per dataset (`egs/*/data/*class_labels_indices.csv`, spec §0); the three are package data
here (`builtin_label_csv`, data/labels/README.md gives their origin and licence). Names are double-quoted when they
contain commas ("Male speech, man speaking"), so the file is read with `csv`.

AudioSet models: a model whose class names are mostly AudioSet ontology names (`class_map`) also accepts ontology
names (any case) and ids ("/m/04rlf") wherever classes are chosen (`selected_classes`), each meaning the class and
everything below it in the ontology, and can report parent classes scored as the max of their subtree (`rollup`).
Other models take their own label names, exactly as written.

Scores are (C,) vectors (torch tensors or anything indexable that yields numbers); nothing here imports torch.
"""

from __future__ import annotations

import csv
import difflib
import os
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, overload

from .errors import AstAudioError, AstAudioWarning, CheckpointError, ConfigError
from .ontology import Ontology, load_ontology

LABEL_CSV_HEADER = ("index", "mid", "display_name")
BUILTIN_LABELS = ("audioset", "esc50", "speechcommands")
AUDIOSET_NUM_CLASSES = 527


def builtin_label_csv(name: str) -> Path:
    """The label CSV shipped with the package for data set `name` ("audioset": 527 classes, "esc50": 50,
    "speechcommands": 35 words)."""
    if name not in BUILTIN_LABELS:
        raise ConfigError(f"no built-in label file {name!r}; expected one of {', '.join(BUILTIN_LABELS)}")
    return Path(str(resources.files("ast_audio") / "data" / "labels" / f"{name}_class_labels_indices.csv"))


def builtin_labels(name: str) -> list[str]:
    """The class names of the built-in label file `name` (see `builtin_label_csv`), in index order."""
    return read_label_csv(builtin_label_csv(name))


def default_labels(num_classes: int) -> list[str] | None:
    """Names for a checkpoint that stores none: the AudioSet names for a 527-output head (the AudioSet recipes'
    head; reference .pth files carry no names), else None (the model then says "class_0", "class_1", ...)."""
    return builtin_labels("audioset") if num_classes == AUDIOSET_NUM_CLASSES else None


def read_label_table(path: str | os.PathLike,
                     error: type[AstAudioError] = CheckpointError) -> list[tuple[str, str]]:
    """Read an `index,mid,display_name` CSV into (mid, display_name) rows ordered by `index`.

    The indices must be exactly 0..n-1 (in any row order) and every name non-empty.

    Raises:
        `error` (CheckpointError by default; the training data loader passes ConfigError): the file is missing,
            unreadable, or not in this format; the message names the offending line.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise error(f"{path}: cannot read label CSV ({exc}); expected a text file with the header "
                    f"{','.join(LABEL_CSV_HEADER)}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]  # tolerate blank lines
    if not rows or tuple(cell.strip() for cell in rows[0]) != LABEL_CSV_HEADER:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise error(f"{path}: label CSV must start with the header {','.join(LABEL_CSV_HEADER)}, found {found!r}")
    by_index: dict[int, tuple[str, str]] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != 3:
            raise error(f"{path}:{line_no}: expected 3 fields (index,mid,display_name), got {len(row)}; "
                        "quote names that contain commas")
        index_text, mid, name = (cell.strip() for cell in row)
        try:
            index = int(index_text)
        except ValueError:
            raise error(f"{path}:{line_no}: index {index_text!r} is not an integer") from None
        if index in by_index:
            raise error(f"{path}:{line_no}: index {index} appears twice")
        if not name:
            raise error(f"{path}:{line_no}: empty display_name for index {index}")
        by_index[index] = (mid, name)
    if not by_index:
        raise error(f"{path}: label CSV has a header but no classes")
    if sorted(by_index) != list(range(len(by_index))):
        missing = sorted(set(range(len(by_index))) - set(by_index))
        raise error(f"{path}: indices must be 0..{len(by_index) - 1} with none missing; missing {missing[:5]}")
    return [by_index[i] for i in range(len(by_index))]


def read_label_csv(path: str | os.PathLike) -> list[str]:
    """Class names from an `index,mid,display_name` CSV, ordered by `index` (see `read_label_table`).

    Raises:
        CheckpointError: the file is missing, unreadable, or not in this format.
    """
    return [name for _mid, name in read_label_table(path)]


def resolve_labels(labels: str | os.PathLike | Sequence[str]) -> list[str]:
    """`labels` as a list of names: a path (str or PathLike) is read with `read_label_csv`, a sequence is copied."""
    if isinstance(labels, (str, os.PathLike)):
        return read_label_csv(labels)
    names = list(labels)
    if not all(isinstance(name, str) for name in names):
        raise CheckpointError("labels must be a CSV path or a sequence of strings")
    return names


def unnamed_labels(num_classes: int) -> tuple[str, ...]:
    """The names of a model that stores none: "class_0", "class_1", ... (`AST` gives these; see `has_names`)."""
    return tuple(f"class_{i}" for i in range(num_classes))


def has_names(labels: Sequence[str]) -> bool:
    """Whether `labels` are real class names rather than the placeholders of `unnamed_labels`."""
    return tuple(labels) != unnamed_labels(len(labels))


# ----------------------------------------------------------------------------------------------------------------
# Names against a model's classes


def _quote(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


@overload
def match_classes(data_labels: Sequence[str], model_labels: Sequence[str], *, data_where: str = ...,
                  model_where: str = ..., allow_new: Literal[False] = ...) -> list[int]: ...
@overload
def match_classes(data_labels: Sequence[str], model_labels: Sequence[str], *, data_where: str = ...,
                  model_where: str = ..., allow_new: bool) -> list[int | None]: ...
def match_classes(data_labels: Sequence[str], model_labels: Sequence[str], *, data_where: str = "the data",
                  model_where: str = "the model", allow_new: bool = False) -> list[int] | list[int | None]:
    """The model output of each data class, matched by name: `order[i]` is the output that scores
    `data_labels[i]`, so `logits[:, order]` (N, C_model) -> (N, C_data) puts a model's scores in the data's class
    order, and `head.weight[order]` reorders a head's rows. The one place where data classes meet model outputs
    (`ast-audio eval`, `train --init checkpoint:PATH`).

    - Both sides named: matched by name in any order. Without `allow_new` the two must be the same set of names;
      with it, a data class the model lacks gets None (a new head row) and model outputs the data lacks are dropped.
    - One side without names (the model's `unnamed_labels`: a checkpoint that stores none): matched by position,
      only when the class counts agree, with a one-line AstAudioWarning saying so (never silently). With
      `allow_new` and different counts, every class is new (None).

    Raises:
        ConfigError: the names cannot be matched (one line naming the first classes missing on either side), or
            the counts differ where one side has no names, or a side names a class twice.
    """
    data, model = list(data_labels), list(model_labels)
    if data == model:
        return list(range(len(data)))
    if not (has_names(data) and has_names(model)):
        unnamed = model_where if not has_names(model) else data_where
        if len(data) == len(model):
            which = (f"{model_where} stores no class names, so its {len(model)} outputs are matched to the classes "
                     f"of {data_where}" if unnamed == model_where else
                     f"{data_where} has no class names, so its {len(data)} classes are matched to the outputs of "
                     f"{model_where}")
            warnings.warn(f"{which} by position, not by name; store the class names with the model and the data to "
                          "have them checked", AstAudioWarning, stacklevel=2)
            return list(range(len(data)))
        if allow_new:
            return [None] * len(data)
        raise ConfigError(f"{model_where} has {len(model)} classes but {data_where} has {len(data)}, and "
                          f"{unnamed} has no class names to match them by; use data with the model's classes")
    for side, names in ((data_where, data), (model_where, model)):
        twice = [n for n, count in Counter(names).items() if count > 1]
        if twice:
            raise ConfigError(f"{side} names class(es) {_quote(twice)} more than once; each class needs its own "
                              "name to be matched by name")
    index = {name: i for i, name in enumerate(model)}
    in_data = set(data)
    missing = [n for n in data if n not in index]  # data classes the model has no output for
    extra = [n for n in model if n not in in_data]  # model outputs the data lacks
    if allow_new:
        return [index.get(n) for n in data]
    if missing or extra:
        parts = [f"not in {model_where}: {_quote(missing)}" if missing else "",
                 f"not in {data_where}: {_quote(extra)}" if extra else ""]
        raise ConfigError(f"the classes of {data_where} do not match those of {model_where} "
                          f"({'; '.join(p for p in parts if p)}); use data labelled with the model's class names "
                          "(`ast-audio labels --checkpoint CKPT` lists them)")
    return [index[n] for n in data]


def check_labels(names: Sequence[str], labels: Sequence[str], where: str = "") -> None:
    """Raise a one-line ConfigError if any of `names` is not one of the model's `labels` (`where`: e.g. a file)."""
    known = set(labels)
    unknown = [n for n in names if n not in known]
    if unknown:
        _unknown_names(unknown, labels, where)


def _unknown_names(unknown: Sequence[str], labels: Sequence[str], where: str = "", hint: str = "") -> None:
    """The one-line error for class names that mean nothing to the model (with close matches when there are)."""
    examples = ", ".join(repr(n) for n in list(labels)[:5])
    more = f" (and {len(labels) - 5} more)" if len(labels) > 5 else ""
    place = f" in {where}" if where else ""
    close = difflib.get_close_matches(unknown[0], list(labels), n=3, cutoff=0.6)
    suggest = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else hint
    raise ConfigError(f"unknown class name(s) {', '.join(repr(n) for n in unknown[:5])}{place}{suggest}; the "
                      f"model's classes are {examples}{more}; check spelling and case (`ast-audio labels` lists them)")


@dataclass(frozen=True)
class ClassMap:
    """A model's class names placed in the AudioSet ontology.

    `ontology` is None when the names are not AudioSet's (fewer than half of them are ontology class names, e.g.
    ESC-50's lower-case "dog"); the model then takes its own names only. `node_of[i]` is the ontology id of class i
    (None for a name the ontology lacks: tolerated, reported once per label set by `class_map`).
    """

    labels: tuple[str, ...]
    ontology: Ontology | None
    node_of: tuple[str | None, ...]

    def resolve(self, text: str) -> list[int] | None:
        """The classes `text` stands for, or None if it names nothing.

        A model label taken exactly, or an ontology name (any case) or id: with the ontology, the class and every
        class below it that is one of the model's outputs (an empty list: a class with no output below it).
        """
        text = text.strip()
        exact = self.labels.index(text) if text in self.labels else None
        if self.ontology is not None and (exact is None or self.node_of[exact] is not None):
            node = self.ontology.find(text)
            if node is not None:
                below = self.ontology.descendants(node.id)
                return [i for i, n in enumerate(self.node_of) if n in below]
        return None if exact is None else [exact]

    def describe(self, text: str) -> str:
        """How `text` is shown in an error: its ontology name when it is an id."""
        node = self.ontology.find(text) if self.ontology is not None else None
        return f"{text!r}" if node is None or node.name == text.strip() else f"{text!r} ({node.name})"


@lru_cache(maxsize=16)
def class_map(labels: tuple[str, ...]) -> ClassMap:
    """`labels` placed in the shipped AudioSet ontology (see ClassMap); names it lacks are reported once (an
    AstAudioWarning; the CLI prints it as one line) and keep working as plain names."""
    ontology = load_ontology()
    found = [ontology.find(name) for name in labels]
    node_of = tuple(c.id if c is not None and c.name == name else None  # exact names only
                    for c, name in zip(found, labels, strict=True))
    mapped = sum(n is not None for n in node_of)
    if 2 * mapped < len(labels):
        return ClassMap(labels, None, (None,) * len(labels))
    missing = [name for name, node in zip(labels, node_of, strict=True) if node is None]
    if missing:
        warnings.warn(f"{len(missing)} class name(s) are not in the AudioSet ontology and are used as plain names: "
                      f"{', '.join(repr(n) for n in missing[:5])}{' ...' if len(missing) > 5 else ''}",
                      AstAudioWarning, stacklevel=2)
    return ClassMap(labels, ontology, node_of)


# Most class names one list (--only, --exclude, their form and WebSocket fields) may hold, beyond the model's own
# number of classes: every class, named once, always fits.
MAX_NAMES = 1000


@lru_cache(maxsize=16)
def _most_pieces(cmap: ClassMap) -> int:
    """Pieces (commas + 1) of the most-comma name `cmap` resolves: its labels and, with the ontology, its names."""
    names = list(cmap.labels) + ([c.name for c in cmap.ontology] if cmap.ontology is not None else [])
    return 1 + max((name.count(",") for name in names), default=0)


def parse_names(values: Sequence[str], labels: Sequence[str]) -> list[str]:
    """Class names from comma-separated option values, checked against `labels` (see `selected_classes` for what
    a name may be: with AudioSet labels also ontology names in any case and ids).

    AudioSet names can contain commas ("Male speech, man speaking"), so the longest run of comma-separated
    pieces that names a class is taken whole; anything else is a single name (and reported if unknown).
    """
    cmap = class_map(tuple(labels))
    # A name with k commas is a run of k + 1 pieces: no longer run can match, so each piece tries at most `longest`
    # runs (linear in the text, not cubic: 2,000 repeats of one name took 117 s).
    longest = _most_pieces(cmap)
    limit = longest * max(MAX_NAMES, len(labels))
    count = sum(value.count(",") + 1 for value in values)
    if count > limit:
        raise ConfigError(f"{count} comma-separated class names are more than the {limit} accepted; name fewer "
                          "classes (an ontology name such as 'Music' stands for every class below it)")
    names: list[str] = []
    for value in values:
        if cmap.resolve(value) is not None:
            names.append(value.strip())
            continue
        pieces = [p.strip() for p in value.split(",")]
        i = 0
        while i < len(pieces):
            match, end = pieces[i], i + 1  # default: one piece (reported below if unknown)
            for j in range(min(len(pieces), i + longest), i, -1):  # the longest run of pieces that is a label
                found = next((c for c in (", ".join(pieces[i:j]), ",".join(pieces[i:j]))
                              if cmap.resolve(c) is not None), None)
                if found is not None:
                    match, end = found, j
                    break
            if match:
                names.append(match)
            i = end
    selected_classes(labels, names)  # unknown names, and ontology classes with no output, fail here
    return names


def selected_classes(labels: Sequence[str], only: Sequence[str] | None = None,
                     exclude: Sequence[str] = ()) -> list[int]:
    """Indices of the classes kept by `only` / `exclude`, ascending: the library's one class filter (the CLI's
    --only / --exclude, the server's form fields and `listen` go through it).

    Each name is one of the model's `labels`, exactly; with AudioSet labels (`class_map`) it may also be an
    ontology name (any case) or id ("/m/04rlf"), and means that class and everything below it ("Music" keeps
    every genre and instrument; "Vehicle" every car, train and aircraft), through every parent a class has.

    Raises:
        ConfigError: a name that means nothing (one line, with close matches), or an ontology class none of whose
            subtree is among the model's classes.
    """
    cmap = class_map(tuple(labels))

    def expand(names: Sequence[str]) -> set[int]:
        unknown = [n for n in names if cmap.resolve(n) is None]
        if unknown:
            hint = cmap.ontology.suggest(unknown[0]) if cmap.ontology is not None else ""
            _unknown_names(unknown, labels, hint=hint)
        empty = [n for n in names if not cmap.resolve(n)]
        if empty:
            raise ConfigError(f"AudioSet class {cmap.describe(empty[0])} has no output in this model: neither it nor "
                              "any class below it is one of the model's classes (`ast-audio labels --tree NAME` "
                              "shows which are)")
        return {i for n in names for i in cmap.resolve(n) or ()}

    keep = expand(only) if only is not None else set(range(len(labels)))
    drop = expand(exclude)
    return sorted(keep - drop)


def rollup(labels: Sequence[str]) -> tuple[tuple[str, ...], list[list[int]]]:
    """The class names and score groups of `--rollup` for an AudioSet model.

    Returns (names, groups): `names` is the model's labels, in order, followed by every ontology class that is
    not one of them but has one below it (the abstract groups such as "Human voice", and others such as "Natural
    sounds"), in ontology file order; `groups[k]` lists the model outputs whose max is the score of `names[k]`:
    the outputs in that class's subtree (itself included). So a leaf keeps its score, "Music" becomes the max of
    Music and every genre and instrument, and "Vehicle" is there to ask for by name.

    Raises:
        ConfigError: the labels are not AudioSet names (there are no parents to roll up to).
    """
    cmap = class_map(tuple(labels))
    if cmap.ontology is None:
        raise ConfigError("--rollup needs a model with AudioSet class names (its parents come from the AudioSet "
                          "ontology); this model's classes are not AudioSet's")
    ontology, node_of = cmap.ontology, cmap.node_of

    def outputs_below(class_id: str) -> list[int]:
        below = ontology.descendants(class_id)
        return [i for i, n in enumerate(node_of) if n in below]

    groups = [outputs_below(node) if node is not None else [i] for i, node in enumerate(node_of)]
    names = list(labels)
    present = {n for n in node_of if n is not None}
    for node in ontology:
        if node.id not in present and (below := outputs_below(node.id)):
            names.append(node.name)
            groups.append(below)
    return tuple(names), groups


def rollup_scores(scores: Any, groups: Sequence[Sequence[int]]) -> Any:
    """Scores (..., C) -> (..., len(groups)): column k is the max of the columns in `groups[k]` (see `rollup`).

    `scores` is a torch tensor; each group is padded to the longest by repeating its first index (a max is
    unchanged by repeats), so one gather does every group.
    """
    width = max(len(g) for g in groups)
    index = [list(g) + [g[0]] * (width - len(g)) for g in groups]  # (C', width)
    return scores[..., index].amax(-1)


# ----------------------------------------------------------------------------------------------------------------
# The classes to report from a (C,) score vector


def top_labels(scores: Any, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The `k` best (label, score) pairs of a (C,) score tensor, best first."""
    values, index = scores.topk(min(k, scores.shape[0]))
    return [(labels[i], float(v)) for v, i in zip(values.tolist(), index.tolist(), strict=True)]


def filter_top(scores: Any, labels: Sequence[str], *, top_k: int, thresholds: Mapping[str, float] | None = None,
               keep: Sequence[int] | None = None) -> list[tuple[str, float]]:
    """Best (label, score) pairs among the classes in `keep` (default all); with `thresholds`, only the classes
    listed there whose score reaches their threshold (all of them, best first, not capped at top_k)."""
    index = list(range(len(labels))) if keep is None else list(keep)
    if thresholds is not None:
        index = [i for i in index if labels[i] in thresholds and float(scores[i]) >= thresholds[labels[i]]]
        index.sort(key=lambda i: -float(scores[i]))
        return [(labels[i], float(scores[i])) for i in index]
    index.sort(key=lambda i: -float(scores[i]))
    return [(labels[i], float(scores[i])) for i in index[:top_k]]


def tag_label_filter(labels: Sequence[str], *, rollup_parents: bool = False,
                     thresholds: Mapping[str, float] | None = None, thresholds_where: str = "",
                     only: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                     top_k: int = 5) -> Callable[[Any], None]:
    """A function that rewrites a TagResult in place: with `rollup_parents` the clip's and each window's scores gain
    the ontology's parent classes (`rollup`); `only` / `exclude` (option values, see `parse_names`) limit the top
    labels of clip and windows; `thresholds` make the clip labels every listed class at or above its threshold,
    best first. Names are checked now, before any audio is decoded (`thresholds_where`: the file, for the error)."""
    groups = None
    if rollup_parents:
        labels, groups = rollup(labels)
    kept_only = parse_names(only, labels) if only else None
    kept_out = parse_names(exclude, labels) if exclude else ()
    if thresholds is not None:
        check_labels(list(thresholds), labels, where=thresholds_where)
    if thresholds is None and kept_only is None and not kept_out and groups is None:
        return lambda result: None
    keep = selected_classes(labels, kept_only, kept_out)
    names = tuple(labels)

    def refine(result: Any) -> None:
        if groups is not None:  # (C,) -> (C',): the model's classes, then the parents they roll up to
            result.labels, result.scores = names, rollup_scores(result.scores, groups)
            for window in result.windows:
                window.scores = rollup_scores(window.scores, groups)
        result.top = filter_top(result.scores, names, top_k=top_k, thresholds=thresholds, keep=keep)
        for window in result.windows:  # windows keep their best kept classes (the table prints each one's top-1)
            window.top = filter_top(window.scores, names, top_k=top_k, keep=keep)

    return refine


def label_rows(labels: tuple[str, ...], *, tree: str | None = None, search: str | None = None) -> list[dict[str, Any]]:
    """What `ast-audio labels` lists, as rows of {"index", "name", "id"} (and "abstract"; "depth" in a tree):

    - neither: the model's classes with their ontology ids (None where a name is not in the ontology);
    - `tree`: the ontology below the class `tree` names (whatever the model), depth first;
    - `search`: ontology classes whose name or description contains `search` (any case), after the model's own
      names that contain it when the model's names are not AudioSet's.
    "index" is the model output that scores the class (None for the ontology's other classes)."""
    if tree and search:
        raise ConfigError("--tree and --search are separate views; pass one of them")
    cmap = class_map(labels)
    index = {node: i for i, node in enumerate(cmap.node_of) if node is not None}  # ontology id -> output index

    def entry(node: Any) -> dict[str, Any]:
        return {"id": node.id, "name": node.name, "index": index.get(node.id), "abstract": node.abstract}

    ontology = cmap.ontology or load_ontology()
    if tree:
        return [{"depth": depth, **entry(node)} for depth, node in ontology.subtree(tree)]
    if search:
        found = [entry(node) for node in ontology.search(search)]
        if cmap.ontology is None:  # a model of its own names: search those too
            needle = search.strip().casefold()
            found = [{"id": None, "name": name, "index": i, "abstract": False}
                     for i, name in enumerate(labels) if needle in name.casefold()] + found
        return found
    return [{"index": i, "name": name, "id": node} for i, (name, node) in enumerate(zip(labels, cmap.node_of,
                                                                                       strict=True))]
