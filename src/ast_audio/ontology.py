"""The AudioSet ontology: classes, their parents and children, and lookups by id, name or text.

The ontology ships as package data (data/ontology/ontology.json, CC BY-SA 4.0; data/ontology/README.md gives the
origin and attribution). It is a graph, not a tree: a class can have several parents ("Bell" is under "Musical
instrument" and "Sounds of things"), so a subtree is the set of everything reachable through `child_ids`, each
class once. "abstract" classes (e.g. "Human voice") only group others and are never a model output.

Nothing here knows about models; `ast_audio.labels` maps a model's class names onto these classes.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import ConfigError


@dataclass(frozen=True)
class OntologyClass:
    """One ontology entry: `id` is the AudioSet mid ("/m/04rlf"), `children` / `parents` ids in file order."""

    id: str
    name: str
    description: str
    children: tuple[str, ...]
    parents: tuple[str, ...]
    abstract: bool
    blacklist: bool


class Ontology:
    """The classes of an ontology.json, indexed by id and by lower-cased name."""

    def __init__(self, classes: list[OntologyClass]) -> None:
        self.classes: dict[str, OntologyClass] = {c.id: c for c in classes}  # file order
        self._by_name = {c.name.casefold(): c for c in classes}

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[OntologyClass]:
        return iter(self.classes.values())

    @property
    def roots(self) -> list[OntologyClass]:
        """The top-level classes (no parent), in file order."""
        return [c for c in self if not c.parents]

    def find(self, text: str) -> OntologyClass | None:
        """The class whose id is `text` (exactly) or whose name is `text` ignoring case; None if there is none."""
        text = text.strip()
        return self.classes.get(text) or self._by_name.get(text.casefold())

    def get(self, text: str) -> OntologyClass:
        """`find`, or a one-line ConfigError with the closest names."""
        found = self.find(text)
        if found is None:
            raise ConfigError(f"no AudioSet class {text!r}{self.suggest(text)}; `ast-audio labels --search TEXT` "
                              "finds classes by name or description")
        return found

    def descendants(self, class_id: str) -> set[str]:
        """The ids of `class_id` and every class below it (through any parent), each once."""
        seen: set[str] = set()
        todo = [class_id]
        while todo:
            current = todo.pop()
            if current not in seen and current in self.classes:
                seen.add(current)
                todo.extend(self.classes[current].children)
        return seen

    def ancestors(self, class_id: str) -> set[str]:
        """The ids of every class above `class_id` (not itself)."""
        seen: set[str] = set()
        todo = list(self.classes[class_id].parents)
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.classes[current].parents)
        return seen

    def subtree(self, text: str) -> list[tuple[int, OntologyClass]]:
        """(depth, class) of the class `text` names (`get`) and every class below it, depth first in file order; a
        class of two parents appears under each (a cycle in a hand-edited file is not followed)."""
        rows: list[tuple[int, OntologyClass]] = []

        def walk(class_id: str, depth: int, path: tuple[str, ...]) -> None:
            node = self.classes[class_id]
            rows.append((depth, node))
            for child in node.children:
                if child not in path:
                    walk(child, depth + 1, (*path, child))

        root = self.get(text)
        walk(root.id, 0, (root.id,))
        return rows

    def search(self, text: str) -> list[OntologyClass]:
        """Classes whose name or description contains `text` (ignoring case); name matches first, in file order."""
        needle = text.strip().casefold()
        by_name = [c for c in self if needle in c.name.casefold()]
        by_description = [c for c in self if needle not in c.name.casefold() and needle in c.description.casefold()]
        return by_name + by_description

    def suggest(self, text: str, extra: tuple[str, ...] = ()) -> str:
        """" (did you mean 'A', 'B'?)" for the names (ontology names and `extra`) closest to `text`, else ""."""
        names = {c.name.casefold(): c.name for c in self} | {n.casefold(): n for n in extra}
        close = difflib.get_close_matches(text.strip().casefold(), list(names), n=3, cutoff=0.6)
        return f" (did you mean {', '.join(repr(names[c]) for c in close)}?)" if close else ""


def ontology_path() -> Path:
    """The shipped ontology.json."""
    return Path(str(resources.files("ast_audio") / "data" / "ontology" / "ontology.json"))


def read_ontology(path: str | Path) -> Ontology:
    """Parse an AudioSet ontology.json (a list of {id, name, description, child_ids, restrictions, ...}).

    Raises:
        ConfigError: unreadable file, missing fields, duplicate ids, or a child id that is not a class.
    """
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the ontology ({exc})") from None
    parents: dict[str, list[str]] = {}
    try:
        for entry in entries:
            for child in entry["child_ids"]:
                parents.setdefault(child, []).append(entry["id"])
        classes = [OntologyClass(id=e["id"], name=e["name"], description=e.get("description", ""),
                                 children=tuple(e["child_ids"]), parents=tuple(parents.get(e["id"], ())),
                                 abstract="abstract" in e.get("restrictions", ()),
                                 blacklist="blacklist" in e.get("restrictions", ())) for e in entries]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not an AudioSet ontology.json (an entry lacks {exc})") from None
    ontology = Ontology(classes)
    if len(ontology.classes) != len(classes):
        raise ConfigError(f"{path}: class ids must be unique")
    dangling = sorted(set(parents) - set(ontology.classes))
    if dangling:
        raise ConfigError(f"{path}: child ids {dangling[:3]} are not classes of the file")
    return ontology


@lru_cache(maxsize=1)
def load_ontology() -> Ontology:
    """The shipped AudioSet ontology (read once per process)."""
    return read_ontology(ontology_path())
