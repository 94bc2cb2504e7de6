"""The shipped AudioSet ontology and label table, ontology-aware class filters, --rollup, the AudioSet names of a
527-output checkpoint, and `ast-audio labels`.

Expected class sets are written out by hand from ontology.json (or walked here from the raw JSON), never taken
from `ast_audio.ontology`.
"""

from __future__ import annotations

import csv
import json
import logging
import warnings
from pathlib import Path

import pytest
import torch

from ast_audio.errors import AstAudioWarning, ConfigError
from ast_audio.labels import (
    builtin_label_csv,
    builtin_labels,
    class_map,
    parse_names,
    rollup,
    rollup_scores,
    selected_classes,
)
from ast_audio.ontology import load_ontology, ontology_path
from ast_audio.weights.checkpoint import load_model
from conftest import run_cli, run_main, write_tone
from helpers import ref_model, save_reference

ROOT = Path(__file__).resolve().parents[1]
AUDIOSET = builtin_labels("audioset")
RAW = json.loads(ontology_path().read_text(encoding="utf-8"))
RAW_BY_ID = {entry["id"]: entry for entry in RAW}
RAW_ID_OF = {entry["name"]: entry["id"] for entry in RAW}


def raw_subtree_names(name: str) -> set[str]:
    """The test's own walk over the raw JSON's child_ids (names of the class and everything below it)."""
    found, todo = set(), [RAW_ID_OF[name]]
    while todo:
        entry = RAW_BY_ID[todo.pop()]
        if entry["name"] not in found:
            found.add(entry["name"])
            todo.extend(entry["child_ids"])
    return found


# Written out by hand from ontology.json's child_ids.
HAND_SUBTREES = {
    # Growling is a child of both Dog and Cat (and of two more parents): once in the set.
    "Domestic animals, pets": {"Domestic animals, pets", "Dog", "Bark", "Yip", "Howl", "Bow-wow", "Growling",
                               "Whimper (dog)", "Bay", "Cat", "Purr", "Meow", "Hiss", "Cat communication",
                               "Caterwaul"},
    # Bell has two parents (Musical instrument, Sounds of things); Chime has a child of its own.
    "Bell": {"Bell", "Church bell", "Cowbell", "Jingle bell", "Bicycle bell", "Tuning fork", "Chime", "Wind chime",
             "Change ringing (campanology)"},
    # Both children also sit under Dog.
    "Canidae, dogs, wolves": {"Canidae, dogs, wolves", "Howl", "Growling"},
    # An abstract class: it has no output, its children do (Booing is not one of the 527).
    "Human group actions": {"Human group actions", "Clapping", "Cheering", "Applause", "Chatter", "Crowd",
                            "Hubbub, speech noise, speech babble", "Booing", "Children playing", "Children shouting"},
}


@pytest.mark.parametrize("name", sorted(HAND_SUBTREES))
def test_descendants_match_the_hand_built_sets(name):
    ontology = load_ontology()
    got = {ontology.classes[i].name for i in ontology.descendants(RAW_ID_OF[name])}
    assert got == HAND_SUBTREES[name]
    # Through the class filter: the outputs among them, by name or by id, any case.
    expected = sorted(AUDIOSET.index(n) for n in HAND_SUBTREES[name] if n in AUDIOSET)
    assert selected_classes(AUDIOSET, [name.upper()]) == expected
    assert selected_classes(AUDIOSET, [RAW_ID_OF[name]]) == expected


def test_two_parents_and_abstract_classes():
    ontology = load_ontology()
    growling = ontology.get("growling")
    assert {ontology.classes[p].name for p in growling.parents} == {"Dog", "Cat", "Roaring cats (lions, tigers)",
                                                                    "Canidae, dogs, wolves"}
    assert {"Dog", "Domestic animals, pets", "Animal"} <= {ontology.classes[a].name
                                                           for a in ontology.ancestors(growling.id)}
    assert ontology.get("Human voice").abstract and not ontology.get("Music").abstract
    # The whole Music branch, against the test's own walk of the raw file.
    music = [AUDIOSET[i] for i in selected_classes(AUDIOSET, ["music"])]
    assert set(music) == raw_subtree_names("Music") & set(AUDIOSET) and "Guitar" in music and "Speech" not in music


def test_shipped_tables_agree():
    """Every AudioSet label's mid is an ontology class with the same name (none differ in this release)."""
    with builtin_label_csv("audioset").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 527 and len(RAW) == 632
    differ = [(r["mid"], r["display_name"], RAW_BY_ID.get(r["mid"], {}).get("name")) for r in rows
              if RAW_BY_ID.get(r["mid"], {}).get("name") != r["display_name"]]
    assert differ == []
    assert not any("abstract" in RAW_BY_ID[r["mid"]]["restrictions"] for r in rows)  # abstract: never an output
    assert class_map(tuple(AUDIOSET)).node_of == tuple(r["mid"] for r in rows)
    # The licence and attribution ship beside the data.
    folder = ontology_path().parent
    assert "Attribution-ShareAlike 4.0" in (folder / "LICENSE-CC-BY-SA-4.0.txt").read_text(encoding="utf-8")
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "CC BY-SA 4.0" in readme and "Google" in readme
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # (no tomllib on Python 3.10)
    assert all(f'"data/ontology/{f.name}"' in pyproject for f in folder.iterdir())  # package data: in the wheel


def test_comma_names_ids_and_unknowns():
    assert parse_names(["male speech, man speaking,Music", "/m/07yv9"], AUDIOSET) == [
        "male speech, man speaking", "Music", "/m/07yv9"]
    keep = selected_classes(AUDIOSET, ["Vehicle"], exclude=["Car"])
    names = {AUDIOSET[i] for i in keep}
    assert "Train" in names and "Car" not in names and "Car alarm" not in names and "Vehicle" in names
    with pytest.raises(ConfigError, match=r"unknown class name\(s\) 'Musci' \(did you mean 'Music'"):
        selected_classes(AUDIOSET, ["Musci"])
    with pytest.raises(ConfigError, match="'Yawn' has no output in this model"):
        parse_names(["Yawn"], AUDIOSET)  # an ontology class, but neither it nor anything below is an output


def test_other_models_keep_plain_names():
    esc50 = builtin_labels("esc50")
    assert class_map(tuple(esc50)).ontology is None  # lower-case "dog": not AudioSet's names
    assert selected_classes(esc50, ["dog"]) == [esc50.index("dog")]
    with pytest.raises(ConfigError, match="unknown class name"):
        selected_classes(esc50, ["Dog"])
    with pytest.raises(ConfigError, match="needs a model with AudioSet class names"):
        rollup(esc50)


def test_names_outside_the_ontology_are_tolerated_and_reported_once():
    labels = ("My own class", *AUDIOSET[1:])
    class_map.cache_clear()
    with pytest.warns(AstAudioWarning, match="1 class name.*'My own class'"):
        selected_classes(labels, ["My own class"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second use warns no more
        assert selected_classes(labels, ["My own class"]) == [0]
        assert 0 not in selected_classes(labels, ["Speech"])  # Speech's output is gone, its children stay
        assert selected_classes(labels, ["Speech"]) == sorted(labels.index(n) for n in raw_subtree_names("Speech")
                                                              if n in labels and n != "Speech")


def test_rollup_scores_are_the_max_of_each_subtree():
    names, groups = rollup(AUDIOSET)
    assert names[:527] == tuple(AUDIOSET)
    added = set(names[527:])
    assert {"Human voice", "Human sounds", "Natural sounds"} <= added and "Yawn" not in added  # no output below
    scores = torch.rand(3, 527, generator=torch.Generator().manual_seed(0))  # (windows, C)
    rolled = rollup_scores(scores, groups)
    assert rolled.shape == (3, len(names))
    for name in ("Music", "Vehicle", "Human voice", "Dog", "Guitar", "Bell"):
        below = [AUDIOSET.index(n) for n in raw_subtree_names(name) if n in AUDIOSET]
        assert torch.equal(rolled[:, names.index(name)], scores[:, below].amax(-1)), name
    leaf = AUDIOSET.index("Bark")
    assert torch.equal(rolled[:, leaf], scores[:, leaf])


# ---------------------------------------------------------------------------------------------------------------
# A 527-output checkpoint without names, and the commands


@pytest.fixture(scope="module")
def audioset_pth(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audioset")
    path = folder / "model.pth"
    save_reference(ref_model(5, num_classes=527), path)
    return {"pth": path, "wav": write_tone(folder / "tone.wav", seconds=2.0)}


def test_527_head_loads_with_audioset_names(audioset_pth, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="ast_audio"):
        model = load_model(audioset_pth["pth"])
    assert model.labels == tuple(AUDIOSET)
    said = [r.getMessage() for r in caplog.records if "AudioSet names" in r.getMessage()]
    assert len(said) == 1 and "stores no class names" in said[0]
    custom = tmp_path / "labels.csv"
    custom.write_text("index,mid,display_name\n" + "".join(f"{i},/m/x{i},n{i}\n" for i in range(527)))
    assert load_model(audioset_pth["pth"], labels=custom).labels[3] == "n3"  # --labels still wins
    other = tmp_path / "five.pth"
    save_reference(ref_model(5), other)
    assert load_model(other).labels == tuple(f"class_{i}" for i in range(5))  # other counts: as before


def test_tag_only_music_and_rollup_through_the_cli(audioset_pth, capsys):
    run = run_cli("tag", audioset_pth["wav"], "--checkpoint", audioset_pth["pth"], "--only", "Music",
                  "--top-k", "600", "--format", "json")
    assert run.returncode == 0, run.stderr
    reported = {item["label"] for item in json.loads(run.stdout)[0]["labels"]}
    assert reported == raw_subtree_names("Music") & set(AUDIOSET)

    rc, out, err = run_main(capsys, "tag", audioset_pth["wav"], "--checkpoint", audioset_pth["pth"], "--rollup",
                            "--only", "vehicle,Human voice", "--exclude", "Car", "--top-k", "600", "--format", "json",
                            "--all-scores")
    assert rc == 0, err
    result = json.loads(out)[0]
    scores = result["scores"]
    reported = {item["label"] for item in result["labels"]}
    assert {"Vehicle", "Human voice", "Speech", "Train"} <= reported and "Car" not in reported
    assert "Music" not in reported
    for parent in ("Vehicle", "Human voice", "Music"):  # the max rule, on what the command printed
        below = raw_subtree_names(parent) & set(AUDIOSET)
        assert scores[parent] == pytest.approx(max(scores[n] for n in below), abs=0)


def test_events_rollup_and_unknown_names_fail_in_one_line(audioset_pth, capsys):
    rc, out, err = run_main(capsys, "events", audioset_pth["wav"], "--checkpoint", audioset_pth["pth"], "--rollup",
                            "--only", "Human voice", "--threshold", "0", "--no-progress")
    assert rc == 0, err
    labels = {e["label"] for e in json.loads(out)[0]["events"]}
    assert "Human voice" in labels and labels <= raw_subtree_names("Human voice")
    for args in (["tag", audioset_pth["wav"], "--only", "Musci"], ["events", audioset_pth["wav"], "--exclude", "Yawn"],
                 ["labels", "--tree", "Musci"]):
        rc, out, err = run_main(capsys, *args, *(["--checkpoint", audioset_pth["pth"]] if args[0] != "labels"
                                                 else []))
        assert rc == 1 and err.count("\n") == 1 and err.startswith("ast-audio: error:"), err
        assert "Music" in err or "Yawn" in err


def test_labels_command_lists_trees_and_searches(capsys):
    rc, out, _ = run_main(capsys, "labels")
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 527 and lines[137].split("  ")[1:] == ["Music", "/m/04rlf"]
    rc, out, _ = run_main(capsys, "labels", "--tree", "domestic animals, pets")
    tree = out.splitlines()
    assert rc == 0 and len(tree) == 16  # 15 classes, Growling under Dog and under Cat
    names = [line[6:].strip().rsplit("  ", 1)[0] for line in tree]
    assert set(names) == HAND_SUBTREES["Domestic animals, pets"] and names.count("Growling") == 2
    dog = tree[names.index("Dog")]
    assert dog.startswith(f"* {AUDIOSET.index('Dog'):>3} ") and dog[6:].startswith("  Dog")  # one level in
    assert tree[names.index("Bay")].startswith("      ")  # Bay: not one of the 527 outputs
    rc, out, _ = run_main(capsys, "labels", "--tree", "/m/0dgw9r", "--json")
    rows = json.loads(out)
    assert rows[0] == {"depth": 0, "id": "/m/0dgw9r", "name": "Human sounds", "index": None, "abstract": True}
    rc, out, _ = run_main(capsys, "labels", "--search", "LAWN")
    assert out.splitlines()[0].split() == [str(AUDIOSET.index("Lawn mower")), "Lawn", "mower", "/m/01yg9g"]
    rc, out, _ = run_main(capsys, "labels", "--search", "miniature dog", "--json")
    assert [row["name"] for row in json.loads(out)] == ["Yip"]  # found by its description only
