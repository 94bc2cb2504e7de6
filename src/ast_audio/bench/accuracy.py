"""Fast-path accuracy behind `ast-audio bench --accuracy`: each precision against fp32 on the demo's task.

`accuracy_report` trains the demo's small AST on generated labelled clips (`ast_audio.apps.demo.train_demo_model`: the
training engine with the folder recipe, a fixed epoch count and the demo's fixed thread count, so that the report
does not depend on the machine's speed or load), then on held-out generated clips reports each precision's top-1
agreement with fp32, mean and max absolute logit difference, and its own accuracy. A trained model near chance gets
a warning (agreement between paths of a model that learned nothing says little).
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..apps.demo import CLASSES, INPUT_TDIM, MODEL, THREADS, fixed_threads, make_dataset, near_chance, train_demo_model
from ..audio.features import FeatureExtractor
from ..audio.io import load_audio
from ..export.backend import to_precision
from ..model.ast import AST
from ..model.precision import ORT_PRECISIONS, PRECISIONS, check_precision, choose_precision, onnxruntime_available
from ..weights.checkpoint import load_model

# ----------------------------------------------------------------------------------------------------------------
# Accuracy of the fast paths


@dataclass
class AccuracyRow:
    """One fast path against fp32 on the held-out clips."""

    name: str
    top1_agreement: float  # fraction of clips whose top class equals fp32's
    mean_abs_logit_diff: float
    max_abs_logit_diff: float
    accuracy: float  # top-1 accuracy against the true labels


@dataclass
class AccuracyReport:
    classes: tuple[str, ...]
    num_train: int
    num_test: int
    model: str
    epochs: int
    train_seconds: float
    rows: list[AccuracyRow]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def accuracy_report(*, train_per_class: int = 60, test_per_class: int = 100, epochs: int = 40,
                    precisions: Sequence[str] = PRECISIONS, seed: int = 0,
                    log: Callable[[str], None] = print) -> AccuracyReport:
    """Train the demo's small AST on generated clips for `epochs` epochs (the demo's model, data and schedule,
    through the training engine), then compare each precision ("auto" = the one `choose_precision` picks here; the
    ONNX Runtime ones when onnxruntime is installed, else noted) to fp32 on `test_per_class` fresh clips per class.

    A fixed epoch count (not a time budget) and a fixed thread count (`ast_audio.apps.demo.THREADS`) keep the trained
    model, hence the report, the same on a busy machine as on a quiet one (for a given seed and torch build)."""
    with fixed_threads(THREADS):
        return _accuracy_report(train_per_class, test_per_class, epochs, precisions, seed, log)


def _accuracy_report(train_per_class: int, test_per_class: int, epochs: int, precisions: Sequence[str], seed: int,
                     log: Callable[[str], None]) -> AccuracyReport:
    auto = choose_precision("auto")
    precisions = list(dict.fromkeys(auto.precision if p == "auto" else check_precision(p) for p in precisions))
    notes: list[str] = [f"auto picks {auto.precision} on this CPU ({auto.reason})",
                        f"trained and run on {THREADS} torch thread{'s' if THREADS > 1 else ''} (fixed)"]
    spec = MODEL["model_config"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train_items, test_items = make_dataset(folder / "data", seed=seed,
                                               clips_per_class=train_per_class + test_per_class,
                                               test_per_class=test_per_class)
        # The demo's model trains with background-only clips too (multi-label); top-1 agreement and accuracy are
        # measured on the clips that have a class (background clips have no top class to agree on).
        test_items = [(p, y) for p, y in test_items if y >= 0]
        log(f"training a small AST ({spec['embed_dim']} wide, {spec['depth']} blocks) on {len(train_items)} "
            f"generated clips for {epochs} epochs")
        start = time.perf_counter()
        result, _ = train_demo_model(folder / "data", folder / "run", epochs=epochs, seed=seed, log=log)
        train_seconds = time.perf_counter() - start
        correct = round(float(result.rows[-1]["acc"]) * len(test_items))
        if near_chance(correct, len(test_items), len(CLASSES)):
            notes.append(f"warning: the trained model is near chance ({correct}/{len(test_items)} right, chance "
                         f"{1 / len(CLASSES):.2f}): agreement with fp32 says little about a model that learned "
                         "nothing")
            log(notes[-1])
        model = load_model(result.model_dir)
        rows = compare_precisions(model, test_items, precisions, notes=notes, log=log)
    described = f"{spec['embed_dim']} wide, {spec['depth']} blocks, {INPUT_TDIM} frames, {len(CLASSES)} classes"
    return AccuracyReport(classes=CLASSES, num_train=len(train_items), num_test=len(test_items), model=described,
                          epochs=epochs, train_seconds=train_seconds, rows=rows, notes=notes)


def compare_precisions(model: AST, test_items: Sequence[tuple[Path, int]], precisions: Sequence[str], *,
                       notes: list[str] | None = None, log: Callable[[str], None] = print) -> list[AccuracyRow]:
    """Each precision of `model` against its fp32 logits on the (path, class index) clips: top-1 agreement, logit
    differences and accuracy per path (ONNX Runtime paths left out, with a note, when it is not installed)."""
    notes = [] if notes is None else notes
    auto = choose_precision("auto")
    precisions = list(dict.fromkeys(auto.precision if p == "auto" else check_precision(p) for p in precisions))
    x_test = FeatureExtractor(model.frontend)([load_audio(p) for p, _ in test_items])  # (N, T, F)
    y_test = torch.tensor([y for _, y in test_items])
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for precision in precisions:
            if precision in ORT_PRECISIONS and not onnxruntime_available():
                notes.append(f"{precision}: onnx/onnxruntime not installed; left out")
                log(notes[-1])
                continue
            converted = to_precision(copy.deepcopy(model), precision)
            outputs[f"ast-audio {precision}"] = converted(x_test).float()
        reference = model(x_test)
    top_ref = reference.argmax(dim=1)
    rows = []
    for name, logits in outputs.items():
        diff = (logits - reference).abs()
        rows.append(AccuracyRow(name=name, top1_agreement=float((logits.argmax(dim=1) == top_ref).float().mean()),
                                mean_abs_logit_diff=float(diff.mean()), max_abs_logit_diff=float(diff.max()),
                                accuracy=float((logits.argmax(dim=1) == y_test).float().mean())))
    return rows


def format_accuracy(report: AccuracyReport) -> str:
    lines = [f"small AST ({report.model}) trained {report.epochs} epochs ({report.train_seconds:.0f} s) on "
             f"{report.num_train} generated clips; "
             f"{report.num_test} held-out generated clips ({', '.join(report.classes)})", ""]
    header = f"{'path':<20} {'top-1 agreement':>16} {'mean|dlogit|':>13} {'max|dlogit|':>12} {'accuracy':>9}"
    lines += [header, "-" * len(header)]
    for r in report.rows:
        lines.append(f"{r.name:<20} {100 * r.top1_agreement:>15.2f}% {r.mean_abs_logit_diff:>13.2e} "
                     f"{r.max_abs_logit_diff:>12.2e} {100 * r.accuracy:>8.2f}%")
    if report.notes:
        lines += ["", "notes:"] + [f"  {n}" for n in report.notes]
    return "\n".join(lines) + "\n"
