"""The four data-set layouts on disk, read into manifests of clips (paths and class indices).

`load_splits(layout, data, ...)` reads one of four layouts into train/valid/test `Manifest`s of absolute audio paths
and class indices (spec §2.5-2.6):

- "audioset": the reference JSON datafiles `{"data": [{"wav": PATH, "labels": "MID,MID"}]}` (a leading `#` comment
  line, as in the shipped samples, is tolerated) plus `class_labels_indices.csv`; valid = the eval JSON.
- "esc50": the ESC-50 release (`audio/*.wav`, `meta/esc50.csv`); valid = fold k, train = the other four.
- "speechcommands": the Speech Commands v2 release with its official `validation_list.txt` / `testing_list.txt`.
- "folder": a user's own data: class sub-folders (optionally under train/ valid/ test/), or a CSV/JSON manifest.
  A `_background` folder (or the label `_background` in a manifest) holds clips with no class at all: an all-zero
  target, so the data are multi-label (BCE: independent sigmoid scores) and the model learns to score quiet low.
  Other folders whose name starts with `_` (the demo's `_mixture/`) are not classes: skipped, with a warning.

Paths and labels are checked here (a missing file or an unknown label is a `ConfigError` naming the path);
whether each file decodes is found when it is loaded (`ast_audio.train.data.ClipDataset`). Nothing here imports
torch at module level (the command line reads `LAYOUTS` for its --help).
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import AstAudioWarning, ConfigError
from ..labels import read_label_table
from ..utils import one_line

LAYOUTS = ("audioset", "esc50", "speechcommands", "folder")

# File name endings `folder` and `speechcommands` pick up (what libsndfile decodes).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")

# The reference's Speech Commands V2-35 class order (egs/speechcommands/data/speechcommands_class_labels_indices.csv,
# spec §2.5); mids are /m/spcmd00 ... /m/spcmd34 in this order.
SPEECHCOMMANDS_WORDS = (
    "backward", "follow", "five", "bed", "zero", "on", "learn", "two", "house", "tree", "dog", "stop", "seven",
    "eight", "down", "six", "forward", "cat", "right", "visual", "four", "wow", "no", "nine", "off", "three", "left",
    "marvin", "yes", "up", "sheila", "happy", "bird", "go", "one",
)
SPEECHCOMMANDS_NOISE_DIR = "_background_noise_"
# The folder layout's name for "none of the classes" (a folder or a manifest label): all-zero targets.
BACKGROUND = "_background"

# Folder layout: a class with fewer clips than FEW_CLIPS gets a training warning; without validation data, nothing
# is held out when a class has fewer than MIN_SPLIT_CLIPS (a split would leave it 0-2 clips to learn from), and
# validation then scores the training clips.
FEW_CLIPS = 5
MIN_SPLIT_CLIPS = 4

# How many offending entries an error message quotes.
_QUOTE = 3


# --------------------------------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class Example:
    """One clip: `source` is an absolute audio path, `targets` class indices, `key` a stable id (relative path)."""

    source: str
    targets: tuple[int, ...]
    key: str


@dataclass(frozen=True)
class Manifest:
    """An ordered list of clips with the class vocabulary they index into."""

    examples: tuple[Example, ...]
    labels: tuple[str, ...]  # display names in index order
    mids: tuple[str, ...]  # AudioSet mids, the reference's dummy mids, or class folder names
    multi_label: bool

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.mids):
            raise ConfigError(f"manifest has {len(self.labels)} label names but {len(self.mids)} mids")
        n = len(self.labels)
        for example in self.examples:
            if any(not 0 <= t < n for t in example.targets):
                raise ConfigError(f"{example.key}: class index out of range 0..{n - 1} in {example.targets}")

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def subset(self, indices: Iterable[int]) -> Manifest:
        """The examples at `indices` (in that order), same vocabulary."""
        return Manifest(tuple(self.examples[int(i)] for i in indices), self.labels, self.mids, self.multi_label)

    def class_counts(self) -> list[int]:
        """Positives per class (a clip counts once per class it has)."""
        counts = [0] * self.num_classes
        for example in self.examples:
            for t in example.targets:
                counts[t] += 1
        return counts


@dataclass(frozen=True)
class Splits:
    train: Manifest
    valid: Manifest
    test: Manifest | None

    @property
    def valid_is_train(self) -> bool:
        """True when there was too little data to hold any out and validation scores the training clips."""
        return self.valid.examples == self.train.examples


def read_class_csv(path: str | os.PathLike) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Read the reference `index,mid,display_name` CSV -> (mids, display names), ordered by index.

    Raises:
        ConfigError: missing or malformed file; the message names the file (and line).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: label CSV not found; expected the class_labels_indices.csv "
                          "(header index,mid,display_name) of the data set, check --label-csv")
    rows = read_label_table(path, error=ConfigError)  # header, fields, indices 0..n-1, names
    for index, (mid, _name) in enumerate(rows):
        if not mid:
            raise ConfigError(f"{path}: empty mid for index {index}; every class needs its own mid")
    mids = tuple(mid for mid, _name in rows)
    if len(set(mids)) != len(mids):
        raise ConfigError(f"{path}: a mid appears twice; every class needs its own mid")
    return mids, tuple(name for _mid, name in rows)


def _read_json_datafile(path: Path) -> list[dict]:
    """The reference datafile's `data` list; leading `#` comment lines (the shipped samples have one) are skipped."""
    if not path.is_file():
        raise ConfigError(f"{path}: datafile not found; expected a JSON file {{\"data\": [{{\"wav\": ..., "
                          "\"labels\": ...}]}}, check the path")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read datafile ({one_line(exc)})") from None
    while lines and lines[0].lstrip().startswith("#"):
        lines.pop(0)
    try:
        content = json.loads("\n".join(lines))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); expected {{\"data\": [{{\"wav\": ..., "
                          "\"labels\": ...}]}}") from None
    if not isinstance(content, dict) or not isinstance(content.get("data"), list):
        raise ConfigError(f"{path}: expected a JSON object with a \"data\" list of {{\"wav\", \"labels\"}} entries")
    for i, entry in enumerate(content["data"]):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: data[{i}] is not an object; expected {{\"wav\": ..., \"labels\": ...}}")
    return content["data"]


def _resolve(root: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else root / p


def _check_exist(origin: Path | str, examples: Sequence[Example], hint: str) -> None:
    """ConfigError naming the first missing audio files (existence only; decoding is checked at load time)."""
    missing = [e.source for e in examples if not os.path.isfile(e.source)]
    if missing:
        quoted = ", ".join(missing[:_QUOTE])
        raise ConfigError(f"{origin}: {len(missing)} of {len(examples)} listed audio files do not exist, e.g. "
                          f"{quoted}; {hint}")


def _nonempty(manifest: Manifest, what: str, origin: Path | str) -> Manifest:
    if len(manifest) == 0:
        raise ConfigError(f"{origin}: the {what} split is empty; expected at least one audio clip")
    return manifest


def _dedupe(targets: Iterable[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(targets))


# --- audioset


def _audioset_manifest(json_path: Path, index_of: dict[str, int], labels: tuple[str, ...], mids: tuple[str, ...],
                       label_csv: Path) -> Manifest:
    root = json_path.parent
    examples = []
    for i, entry in enumerate(_read_json_datafile(json_path)):
        wav, label_text = entry.get("wav"), entry.get("labels")
        if not isinstance(wav, str) or not wav or not isinstance(label_text, str):
            raise ConfigError(f"{json_path}: data[{i}] needs a \"wav\" path and a \"labels\" string of "
                              "comma-separated mids")
        targets = []
        for mid in (m.strip() for m in label_text.split(",")):
            if mid not in index_of:
                raise ConfigError(f"{json_path}: data[{i}] ({wav}) has label {mid!r}, which is not a mid of "
                                  f"{label_csv}; use the label CSV the datafile was made with")
            targets.append(index_of[mid])
        examples.append(Example(str(_resolve(root, wav).resolve()), _dedupe(targets), wav))
    _check_exist(json_path, examples, f"relative paths are resolved against {root}; fix the \"wav\" entries")
    return _nonempty(Manifest(tuple(examples), labels, mids, multi_label=True), "datafile", json_path)


def _load_audioset(data: Path, eval_data: str | None, label_csv: str | None) -> Splits:
    if label_csv is None:
        raise ConfigError("layout audioset needs the label CSV (class_labels_indices.csv with index,mid,display_name): "
                          "pass --label-csv")
    if eval_data is None:
        raise ConfigError(f"layout audioset needs an eval datafile besides {data}: pass --eval-data EVAL.json")
    mids, labels = read_class_csv(label_csv)
    index_of = {mid: i for i, mid in enumerate(mids)}
    train = _audioset_manifest(data, index_of, labels, mids, Path(label_csv))
    valid = _audioset_manifest(Path(eval_data), index_of, labels, mids, Path(label_csv))
    return Splits(train=train, valid=valid, test=None)


# --- esc50


def _load_esc50(root: Path, fold: int | None) -> Splits:
    meta = root / "meta" / "esc50.csv"
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder; expected the ESC-50 release root (audio/, meta/esc50.csv)")
    if not meta.is_file():
        raise ConfigError(f"{meta}: not found; expected the ESC-50 release root with meta/esc50.csv "
                          "(columns filename,fold,target,category)")
    try:
        with meta.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{meta}: cannot read ({one_line(exc)})") from None
    needed = {"filename", "fold", "target", "category"}
    if not rows or not needed <= set(rows[0]):
        raise ConfigError(f"{meta}: expected a header with columns {', '.join(sorted(needed))} and at least one row")
    names: dict[int, str] = {}
    items: list[tuple[int, Example]] = []
    for line_no, row in enumerate(rows, start=2):
        try:
            clip_fold, target = int(row["fold"]), int(row["target"])
        except ValueError:
            raise ConfigError(f"{meta}:{line_no}: fold and target must be integers, got {row['fold']!r}, "
                              f"{row['target']!r}") from None
        category = row["category"].strip()
        if names.setdefault(target, category) != category:
            raise ConfigError(f"{meta}:{line_no}: target {target} is {category!r} here but {names[target]!r} above")
        path = root / "audio" / row["filename"].strip()
        items.append((clip_fold, Example(str(path.resolve()), (target,), row["filename"].strip())))
    if sorted(names) != list(range(len(names))):
        raise ConfigError(f"{meta}: targets must be 0..{len(names) - 1} with none missing, found {sorted(names)[:8]}")
    folds = sorted({f for f, _ in items})
    if fold is None or fold not in folds:
        raise ConfigError(f"{meta}: fold must be one of {folds} (the validation fold; the others train), "
                          f"got {fold}; pass --fold K")
    _check_exist(meta, [e for _, e in items], f"expected the clips under {root / 'audio'}")
    labels = tuple(names[i] for i in range(len(names)))
    mids = tuple(f"/m/07rwj{i:02d}" for i in range(len(names)))  # the reference's dummy ESC-50 mids (spec §2.5)
    train = Manifest(tuple(e for f, e in items if f != fold), labels, mids, multi_label=False)
    valid = Manifest(tuple(e for f, e in items if f == fold), labels, mids, multi_label=False)
    return Splits(_nonempty(train, "train", meta), _nonempty(valid, f"fold-{fold} validation", meta), None)


# --- speechcommands


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_EXTENSIONS)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(f"{path}: not found; expected the Speech Commands release root with validation_list.txt "
                          "and testing_list.txt")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _load_speechcommands(root: Path) -> Splits:
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder; expected the Speech Commands v2 release root (one folder per word)")
    valid_keys = _read_list(root / "validation_list.txt")
    test_keys = _read_list(root / "testing_list.txt")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name != SPEECHCOMMANDS_NOISE_DIR
                     and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in SPEECHCOMMANDS_WORDS]
    if unknown:
        raise ConfigError(f"{root}: word folder(s) {unknown[:_QUOTE]} are not Speech Commands V2 words "
                          f"({', '.join(SPEECHCOMMANDS_WORDS)}); remove them or use --layout folder")
    if not folders:
        raise ConfigError(f"{root}: no word folders; expected the Speech Commands v2 release root")
    present = {p.name for p in folders}
    # The reference order, restricted to the words present (all 35 in the real release: indices unchanged).
    words = tuple(w for w in SPEECHCOMMANDS_WORDS if w in present)
    index_of = {w: i for i, w in enumerate(words)}
    mids = tuple(f"/m/spcmd{SPEECHCOMMANDS_WORDS.index(w):02d}" for w in words)
    all_keys: list[str] = []
    for folder in folders:
        files = _audio_files(folder)
        if not files:
            raise ConfigError(f"{folder}: word folder has no audio files; remove it or restore its clips")
        all_keys.extend(f"{folder.name}/{p.name}" for p in files)

    def example(key: str) -> Example:
        return Example(str((root / key).resolve()), (index_of[key.split("/")[0]],), key)

    known = set(all_keys)
    for list_name, keys in (("validation_list.txt", valid_keys), ("testing_list.txt", test_keys)):
        missing = [k for k in keys if k not in known]
        if missing:
            raise ConfigError(f"{root / list_name}: {len(missing)} listed clip(s) do not exist under {root}, e.g. "
                              f"{', '.join(missing[:_QUOTE])}; the list and the folders must be from the same release")
    held_out = set(valid_keys) | set(test_keys)

    train = Manifest(tuple(example(k) for k in all_keys if k not in held_out), words, mids, multi_label=False)
    valid = Manifest(tuple(example(k) for k in valid_keys), words, mids, multi_label=False)
    test = Manifest(tuple(example(k) for k in test_keys), words, mids, multi_label=False)
    return Splits(_nonempty(train, "train", root), _nonempty(valid, "validation (validation_list.txt)", root),
                  _nonempty(test, "test (testing_list.txt)", root))


# --- folder


@dataclass(frozen=True)
class _Raw:
    """A clip with label *names* (before the vocabulary is known)."""

    source: Path
    names: tuple[str, ...]
    key: str


def _class_key(raw: _Raw) -> str:
    """The class a clip counts under for splitting: its first label, or `BACKGROUND` for a clip of no class."""
    return raw.names[0] if raw.names else BACKGROUND


def _scan_class_folders(root: Path) -> list[_Raw]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    # `_name` folders other than `_background` are not classes (the demo's `_mixture/`, whose labels live in its
    # train.csv; Speech Commands' `_background_noise_/`): skipped, with one line saying so.
    skipped = [p for p in folders if p.name.startswith("_") and p.name != BACKGROUND]
    classes = [p for p in folders if p not in skipped]
    if skipped:
        counts = ", ".join(f"{p.name}/ ({len(_audio_files(p))} files)" for p in skipped)
        warnings.warn(f"{root}: skipped {counts}: a folder whose name starts with '_' is not a class (only "
                      f"{BACKGROUND}/ is read, as clips of no class); to train on such clips, list them with their "
                      "labels in a CSV/JSON manifest and pass that as --data", AstAudioWarning, stacklevel=2)
    if not classes:
        raise ConfigError(f"{root}: no class sub-folders; expected one folder of audio files per class "
                          "(e.g. dog/*.wav, cat/*.wav), or a CSV/JSON manifest")
    raws = []
    for folder in classes:
        files = _audio_files(folder)
        if not files:
            raise ConfigError(f"{folder}: class folder has no audio files ({', '.join(AUDIO_EXTENSIONS)}); "
                              "remove it or add clips")
        names = () if folder.name == BACKGROUND else (folder.name,)
        raws.extend(_Raw(p.resolve(), names, f"{folder.name}/{p.name}") for p in files)
    return raws


def _read_csv_manifest(path: Path) -> list[_Raw]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read CSV manifest ({one_line(exc)})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    raws = []
    for line_no, row in enumerate(rows, start=1):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ConfigError(f"{path}:{line_no}: expected path,label[;label...] (2 fields), got {row!r}")
        names = _without_background(n.strip() for n in row[1].split(";") if n.strip())
        raws.append(_Raw(_resolve(path.parent, row[0].strip()).resolve(), names, row[0].strip()))
    return raws


def _read_json_manifest(path: Path) -> list[_Raw]:
    raws = []
    for i, entry in enumerate(_read_json_datafile(path)):
        wav = entry.get("wav", entry.get("path"))
        labels = entry.get("labels", entry.get("label"))
        if isinstance(labels, str):
            labels = labels.split(",")
        if not isinstance(wav, str) or not wav or not isinstance(labels, list) or not labels:
            raise ConfigError(f"{path}: data[{i}] needs \"wav\" (a path) and \"labels\" (comma-separated names or "
                              "a list)")
        names = _without_background(str(n).strip() for n in labels if str(n).strip())
        raws.append(_Raw(_resolve(path.parent, wav).resolve(), names, wav))
    return raws


def _without_background(names: Iterable[str]) -> tuple[str, ...]:
    """Label names in order, once each, without `BACKGROUND` (a clip labelled only that has no class)."""
    return tuple(n for n in dict.fromkeys(names) if n != BACKGROUND)


def _read_source(path: Path) -> list[_Raw]:
    """A folder of class folders, a CSV or a JSON manifest -> raw clips (existence checked)."""
    if path.is_dir():
        raws = _scan_class_folders(path)
    elif path.suffix.lower() == ".csv" and path.is_file():
        raws = _read_csv_manifest(path)
    elif path.suffix.lower() == ".json" and path.is_file():
        raws = _read_json_manifest(path)
    elif not path.exists():
        raise ConfigError(f"{path}: not found; expected a folder of class sub-folders or a CSV/JSON manifest")
    else:
        raise ConfigError(f"{path}: expected a folder of class sub-folders, a .csv (path,label) or a .json manifest")
    missing = [str(r.source) for r in raws if not r.source.is_file()]
    if missing:
        raise ConfigError(f"{path}: {len(missing)} of {len(raws)} listed audio files do not exist, e.g. "
                          f"{', '.join(missing[:_QUOTE])}; relative paths are resolved against {path.parent}")
    if not raws:
        raise ConfigError(f"{path}: no clips; expected at least one audio clip")
    return raws


def _holdout(raws: list[_Raw], fraction: float, seed: int, origin: Path) -> tuple[list[_Raw], list[_Raw]]:
    """Seeded stratified split: per class (first label), round(fraction * n) clips go to valid (1..n-1 if n >= 2)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout must be a fraction in (0, 1), got {fraction}")
    groups: dict[str, list[int]] = {}
    for i, raw in enumerate(raws):
        groups.setdefault(_class_key(raw), []).append(i)
    import torch  # only here: the holdout draws from torch's generator so that splits stay as they were

    generator = torch.Generator().manual_seed(seed)
    valid_ids: set[int] = set()
    for name in sorted(groups):
        ids = groups[name]
        n_valid = min(max(round(fraction * len(ids)), 1), len(ids) - 1) if len(ids) >= 2 else 0
        order = torch.randperm(len(ids), generator=generator).tolist()
        valid_ids.update(ids[j] for j in order[:n_valid])
    if not valid_ids:
        raise ConfigError(f"{origin}: a {fraction:g} holdout leaves the validation split empty (each class needs 2+ "
                          "clips); add clips, raise --holdout, or give explicit valid data")
    return ([r for i, r in enumerate(raws) if i not in valid_ids], [r for i, r in enumerate(raws) if i in valid_ids])


def _load_folder(data: Path, eval_data: str | None, label_csv: str | None, holdout: float, seed: int) -> Splits:
    if data.is_dir() and (data / "train").is_dir():
        train_raw = _read_source(data / "train")
        valid_raw = _read_source(data / "valid") if (data / "valid").is_dir() else None
        test_raw = _read_source(data / "test") if (data / "test").is_dir() else None
    else:
        if data.is_dir() and any((data / name).is_dir() for name in ("valid", "test")):
            raise ConfigError(f"{data}: has valid/ or test/ but no train/ folder; expected train/ (and optionally "
                              "valid/ and test/), each with one sub-folder per class")
        train_raw, valid_raw, test_raw = _read_source(data), None, None
    if eval_data is not None:
        if valid_raw is not None:
            raise ConfigError(f"{data}: has a valid/ folder and --eval-data {eval_data} was given too; use one")
        valid_raw = _read_source(Path(eval_data))
    if valid_raw is None:
        per_class: dict[str, int] = {}
        for raw in train_raw:
            per_class[_class_key(raw)] = per_class.get(_class_key(raw), 0) + 1
        if min(per_class.values()) < MIN_SPLIT_CLIPS:
            valid_raw = list(train_raw)
        else:
            train_raw, valid_raw = _holdout(train_raw, holdout, seed, data)

    if label_csv is not None:
        mids, labels = read_class_csv(label_csv)
        index_of = {name: i for i, name in enumerate(labels)}
        index_of.update({mid: i for i, mid in enumerate(mids)})
        origin = Path(label_csv)
    else:
        names = sorted({n for raws in (train_raw, valid_raw, test_raw or []) for r in raws for n in r.names})
        labels = mids = tuple(names)
        index_of = {name: i for i, name in enumerate(names)}
        origin = data
        if not names:
            raise ConfigError(f"{data}: only {BACKGROUND} clips; expected at least one class besides the background")
    # Several labels on a clip, or none (background), make the classes independent: BCE and sigmoid scores.
    multi = any(len(r.names) != 1 for raws in (train_raw, valid_raw, test_raw or []) for r in raws)

    def manifest(raws: list[_Raw]) -> Manifest:
        examples = []
        for r in raws:
            unknown = [n for n in r.names if n not in index_of]
            if unknown:
                raise ConfigError(f"{r.source}: label {unknown[0]!r} is not in {origin}; known labels: "
                                  f"{', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''}")
            examples.append(Example(str(r.source), _dedupe(index_of[n] for n in r.names), r.key))
        return Manifest(tuple(examples), labels, mids, multi_label=multi)

    return Splits(_nonempty(manifest(train_raw), "train", data), _nonempty(manifest(valid_raw), "validation", data),
                  manifest(test_raw) if test_raw is not None else None)


def load_splits(layout: str, data: str | os.PathLike, *, fold: int | None = None, eval_data: str | None = None,
                label_csv: str | None = None, holdout: float = 0.2, seed: int = 0) -> Splits:
    """Read a data set in one of the `LAYOUTS` into train/valid(/test) manifests (see the module docstring).

    Args:
        layout: "audioset", "esc50", "speechcommands" or "folder".
        data: the train JSON (audioset), the release root (esc50, speechcommands), or a folder/CSV/JSON (folder).
        fold: ESC-50 validation fold (1..5).
        eval_data: audioset: the eval JSON (required); folder: optional validation folder/CSV/JSON.
        label_csv: `index,mid,display_name` CSV: required for audioset; optional for folder (fixes the order).
        holdout: folder without explicit validation data: stratified fraction moved to valid (none when a class
            has fewer than `MIN_SPLIT_CLIPS` clips: validation then scores the training clips, `Splits.valid_is_train`).
        seed: folder holdout seed.

    Raises:
        ConfigError: unknown layout, missing files/folders, unknown labels, bad fold, empty split; the message
            names the path and the fix.
    """
    path = Path(data).expanduser()
    if layout == "audioset":
        return _load_audioset(path, eval_data, label_csv)
    if layout in ("esc50", "speechcommands") and label_csv is not None:
        raise ConfigError(f"layout {layout} has a fixed class list; --label-csv is not used with it")
    if layout in ("esc50", "speechcommands") and eval_data is not None:
        raise ConfigError(f"layout {layout} takes its splits from the release; --eval-data is not used with it")
    if layout == "esc50":
        return _load_esc50(path, fold)
    if layout == "speechcommands":
        return _load_speechcommands(path)
    if layout == "folder":
        return _load_folder(path, eval_data, label_csv, holdout, seed)
    raise ConfigError(f"unknown data layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
