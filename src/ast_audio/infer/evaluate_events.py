"""Sound-event detection scored the way the DCASE community scores it, by the community's own libraries.

- Collar-based (event-based) F1: an output event matches a true one of the same class when its onset is within
  0.2 s of the true onset and its offset within max(0.2 s, 20 % of the true event's length) of the true offset
  (DCASE 2016-2019 task 4). Segment-based F1: per 1 s segment, a class is active if any event of it touches the
  segment. From an event table (`--pred`) both come from sed_eval (`EventBasedMetrics`, `SegmentBasedMetrics`);
  from score tables (`--scores-dir`) they come from sed_scores_eval (`collar_based.fscore`,
  `segment_based.fscore`) at a decision threshold.
- PSDS1 / PSDS2 (DCASE 2021-2023 task 4), threshold-free, from score tables only, by sed_scores_eval
  (`intersection_based.psds`, the exact computation of Ebbers et al., ICASSP 2022):
  PSDS1: DTC = GTC = 0.7, alpha_ct 0, alpha_st 1, max eFPR 100 per hour;
  PSDS2: DTC = GTC = 0.1, CTTC 0.3, alpha_ct 0.5, alpha_st 1, max eFPR 100 per hour.

Event and durations tables are read by the project's one reader (`ast_audio.infer.tsv`: the same rows accepted and
refused everywhere, each bad row named); score tables by sed_scores_eval's own (`sed_scores_eval.io`).
sed_eval imports dcase_util, which imports `pkg_resources` at module level
(setuptools 81 and later no longer ship it) but calls it only in functions this module never uses; `_import_sed_eval`
therefore puts an empty stand-in module under that name when the real one is missing, instead of pinning an old
setuptools for the whole environment.
"""

from __future__ import annotations

import math
import sys
import types
import warnings
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .names import DEFAULT_THRESHOLD
from .tsv import by_audio_id, read_strong
from .tsv import read_durations as read_duration_table

ONSET_COLLAR_S = 0.2
OFFSET_COLLAR_S = 0.2
OFFSET_COLLAR_RATE = 0.2
SEGMENT_S = 1.0
PSDS1 = dict(dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0, max_efpr=100.0)
PSDS2 = dict(dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5, alpha_st=1.0, max_efpr=100.0)
INSTALL_HINT = "install the scorers with `pip install 'ast-audio[events]'` (sed_eval, sed_scores_eval)"


def _stand_in_pkg_resources() -> None:
    """Put an empty `pkg_resources` module in place if setuptools no longer provides it (module docstring)."""
    try:
        import pkg_resources  # noqa: F401  (setuptools < 81)
    except ImportError:
        stand_in = types.ModuleType("pkg_resources")
        stand_in.__doc__ = "ast-audio's stand-in: dcase_util imports pkg_resources but the scorers never call it."
        sys.modules.setdefault("pkg_resources", stand_in)


def _import_sed_eval() -> Any:
    """sed_eval (through dcase_util, which needs `_stand_in_pkg_resources`)."""
    _stand_in_pkg_resources()
    try:
        import dcase_util  # noqa: F401
        import sed_eval
    except ImportError as exc:
        raise ConfigError(f"sed_eval is not importable ({exc}); {INSTALL_HINT}") from None
    return sed_eval


def _import_sed_scores_eval() -> Any:
    """sed_scores_eval (it imports sed_eval for its reference implementations)."""
    _stand_in_pkg_resources()
    try:
        import sed_scores_eval
    except ImportError as exc:
        raise ConfigError(f"sed_scores_eval is not importable ({exc}); {INSTALL_HINT}") from None
    return sed_scores_eval


# ----------------------------------------------------------------------------------------------------------------------
# Reading (event and durations tables: `tsv`; score tables: sed_scores_eval)


def read_truth(path: str | Path, *, files: Collection[str] | None = None,
               durations: Mapping[str, float] | None = None, what: str = "event table"
               ) -> dict[str, list[tuple[float, float, str]]]:
    """A DCASE event table (`filename onset offset event_label`) -> {audio id (file name without extension):
    [(onset, offset, label)]}, read and checked by `ast_audio.infer.tsv.read_strong` (files, labels, times; one
    line naming the row for a bad one). Files listed with no events get an empty list."""
    return read_strong(path, files=files, durations=durations, what=what).by_audio_id()


def read_durations(path: str | Path) -> dict[str, float]:
    """A DCASE durations table (`filename duration`) -> {audio id: seconds} (`ast_audio.infer.tsv.read_durations`)."""
    return by_audio_id(read_duration_table(path))


def read_scores_dir(folder: str | Path) -> dict[str, Any]:
    """Every `<audio id>.tsv` of a scores folder -> {audio id: score DataFrame}, read and validated by
    sed_scores_eval.io.read_sed_scores (columns onset, offset, classes; gapless rows)."""
    io = _import_sed_scores_eval().io
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder; expected the --scores-dir of `ast-audio events` (one TSV per file)")
    files = sorted(folder.glob("*.tsv"))
    if not files:
        raise ConfigError(f"{folder}: no .tsv score files; expected one `onset offset <class...>` TSV per audio file")
    scores = {}
    for path in files:
        try:
            scores[path.stem] = io.read_sed_scores(path)
        except (AssertionError, KeyError, ValueError) as exc:
            raise ConfigError(f"{path}: not a score table ({exc!r}); expected the header onset, offset, <classes> "
                              "and gapless rows") from None
    return scores


# ----------------------------------------------------------------------------------------------------------------------
# Scoring


@dataclass
class EventEvaluation:
    """Scores of one system output against the truth. F1, precision and recall are micro averages over all events
    (or segments) of all classes; the `_macro` values average the per-class F1. None: not computable from the
    inputs given (PSDS needs score tables)."""

    files: int
    truth_events: int
    source: str  # what the F1 values were computed from
    event_f1: float | None = None
    event_precision: float | None = None
    event_recall: float | None = None
    event_f1_macro: float | None = None
    segment_f1: float | None = None
    segment_precision: float | None = None
    segment_recall: float | None = None
    segment_f1_macro: float | None = None
    psds1: float | None = None
    psds2: float | None = None
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    psd_roc: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # name -> {"efpr", "etpr"}

    def to_dict(self, with_roc: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not with_roc:
            out.pop("psd_roc")
        return _finite(out)


def _finite(value: Any) -> Any:
    """NaN -> None throughout (JSON has no NaN)."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _fill(truth: dict[str, list], ids: list[str]) -> dict[str, list]:
    """Truth for exactly `ids` (files without true events: empty lists; the scorers want the same keys)."""
    return {audio_id: list(truth.get(audio_id, [])) for audio_id in ids}


def sed_eval_f1(truth: Mapping[str, list[tuple[float, float, str]]], pred: Mapping[str, list[tuple[float, float, str]]],
                durations: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Collar-based and segment-based F1 of event lists with sed_eval, file by file as its documentation does.

    truth / pred: {audio id: [(onset, offset, label)]} over the same ids; durations: the evaluated length of each
    file for the segment-based metrics (default: the last offset in the file's truth or output).
    Returns sed_eval's overall (micro) and class-wise average (macro) values and per-class F1.
    """
    sed_eval = _import_sed_eval()
    from dcase_util.containers import MetaDataContainer

    labels = sorted({e[2] for events in (*truth.values(), *pred.values()) for e in events})
    event_metrics = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=labels, t_collar=ONSET_COLLAR_S, percentage_of_length=OFFSET_COLLAR_RATE,
        evaluate_onset=True, evaluate_offset=True)
    segment_metrics = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=labels, time_resolution=SEGMENT_S)

    def container(audio_id: str, events: list[tuple[float, float, str]]) -> Any:
        return MetaDataContainer([{"filename": audio_id, "onset": float(on), "offset": float(off),
                                   "event_label": label} for on, off, label in events])

    for audio_id in sorted(truth):
        ref, est = container(audio_id, truth[audio_id]), container(audio_id, pred.get(audio_id, []))
        event_metrics.evaluate(reference_event_list=ref, estimated_event_list=est)
        length = None
        if durations is not None and audio_id in durations:
            length = durations[audio_id]
        segment_metrics.evaluate(reference_event_list=ref, estimated_event_list=est,
                                 evaluated_length_seconds=length)
    out: dict[str, Any] = {}
    with warnings.catch_warnings():  # a class without true or output events: sed_eval's nanmean of nothing is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        _collect(out, event_metrics, segment_metrics)
    return out


def _collect(out: dict[str, Any], event_metrics: Any, segment_metrics: Any) -> None:
    """sed_eval's overall (micro), class-average (macro) and per-class values into `out`."""
    for name, metrics in (("event", event_metrics), ("segment", segment_metrics)):
        overall = metrics.results_overall_metrics()["f_measure"]
        out[f"{name}_f1"] = float(overall["f_measure"])
        out[f"{name}_precision"] = float(overall["precision"])
        out[f"{name}_recall"] = float(overall["recall"])
        out[f"{name}_f1_macro"] = float(metrics.results_class_wise_average_metrics()["f_measure"]["f_measure"])
        for label, result in metrics.results_class_wise_metrics().items():
            row = out.setdefault("per_class", {}).setdefault(label, {})
            row[f"{name}_f1"] = float(result["f_measure"]["f_measure"])
            row[f"{name}_precision"] = float(result["f_measure"]["precision"])
            row[f"{name}_recall"] = float(result["f_measure"]["recall"])


def scores_f1(scores: Mapping[str, Any], truth: Mapping[str, list], durations: Mapping[str, float],
              threshold: float | Mapping[str, float] = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Collar-based and segment-based F1 of score tables thresholded at `threshold` (one value or per class), with
    sed_scores_eval (same collars and segments as `sed_eval_f1`)."""
    sse = _import_sed_scores_eval()
    ids = sorted(scores)
    truth, durations = _fill(dict(truth), ids), {k: durations[k] for k in ids}
    if isinstance(threshold, Mapping):  # classes the thresholds file does not name keep the default threshold
        classes = [c for c in scores[ids[0]].columns if c not in ("onset", "offset")]
        threshold = {c: float(threshold.get(c, DEFAULT_THRESHOLD)) for c in classes}
    out: dict[str, Any] = {}
    f, p, r, _ = sse.collar_based.fscore(scores, truth, threshold, onset_collar=ONSET_COLLAR_S,
                                          offset_collar=OFFSET_COLLAR_S, offset_collar_rate=OFFSET_COLLAR_RATE)
    fs, ps, rs, _ = sse.segment_based.fscore(scores, truth, durations, threshold, segment_length=SEGMENT_S)
    for name, (fv, pv, rv) in (("event", (f, p, r)), ("segment", (fs, ps, rs))):
        out[f"{name}_f1"], out[f"{name}_precision"] = float(fv["micro_average"]), float(pv["micro_average"])
        out[f"{name}_recall"], out[f"{name}_f1_macro"] = float(rv["micro_average"]), float(fv["macro_average"])
        for label, value in fv.items():
            if not label.endswith("_average"):
                out.setdefault("per_class", {}).setdefault(label, {})[f"{name}_f1"] = float(value)
    return out


def psds(scores: Mapping[str, Any], truth: Mapping[str, list], durations: Mapping[str, float],
         params: Mapping[str, Any]) -> tuple[float, dict[str, list[float]]]:
    """PSDS of score tables with sed_scores_eval (parameters `PSDS1` or `PSDS2`) -> (value, {"efpr", "etpr"}) of
    the PSD-ROC."""
    sse = _import_sed_scores_eval()
    ids = sorted(scores)
    value, _, (etpr, efpr), _ = sse.intersection_based.psds(
        scores, _fill(dict(truth), ids), {k: durations[k] for k in ids}, unit_of_time="hour", **params)
    return float(value), {"efpr": [float(v) for v in efpr], "etpr": [float(v) for v in etpr]}


def evaluate_events(truth_path: str | Path, *, pred_path: str | Path | None = None,
                    scores_dir: str | Path | None = None, durations_path: str | Path | None = None,
                    threshold: float | Mapping[str, float] = DEFAULT_THRESHOLD) -> EventEvaluation:
    """Score `ast-audio events` output against a truth table: F1 from the event table `pred_path` (sed_eval) or,
    without one, from the score tables in `scores_dir` at `threshold` (sed_scores_eval); PSDS1/PSDS2 whenever
    `scores_dir` is given. Files are the ones in the predictions (score files, or the truth's files for an event
    table); durations from `durations_path`, else each score table's end (event tables: sed_eval's default)."""
    if pred_path is None and scores_dir is None:
        raise ConfigError("nothing to score: give an event table (--pred) or a folder of score tables (--scores-dir)")
    durations = read_durations(durations_path) if durations_path is not None else None
    scores = read_scores_dir(scores_dir) if scores_dir is not None else None
    if scores is not None and durations is None:
        durations = {k: float(df["offset"].iloc[-1]) if len(df) else 0.0 for k, df in scores.items()}
    known = set(durations) if durations_path is not None and durations is not None else None
    # one reader for both tables: unknown files (given --durations), bad times, events past a file's end
    truth = read_truth(truth_path, files=known, durations=durations, what="truth")
    pred = read_truth(pred_path, files=known, durations=durations, what="predictions") if pred_path else None
    if scores is not None:
        assert durations is not None
        unknown = sorted(set(truth) - set(scores))
        if unknown:
            raise ConfigError(f"{truth_path} has events of {len(unknown)} file(s) without a score table in "
                              f"{scores_dir}, e.g. {unknown[0]}; score every file of the truth")
        missing = [k for k in scores if k not in durations]
        if missing:
            raise ConfigError(f"{durations_path} lacks the duration of {missing[0]} (and {len(missing) - 1} more)")
    result = EventEvaluation(files=len(scores) if scores is not None else len(truth),
                             truth_events=sum(len(v) for v in truth.values()), source="")
    try:
        values = _f1_values(result, truth, pred, pred_path, scores, scores_dir, durations, threshold)
    except AssertionError as exc:
        raise ConfigError(f"{truth_path}: the scorer refused the inputs ({str(exc).splitlines()[0][:300]})") from None
    for key, value in values.items():
        setattr(result, key, value)
    try:
        _psds_into(result, scores, truth, durations)
    except AssertionError as exc:  # the scorers check their inputs with asserts
        raise ConfigError(f"{truth_path}: the scorer refused the inputs ({str(exc).splitlines()[0][:300]})") from None
    return result


def _f1_values(result: EventEvaluation, truth: dict[str, list], pred: dict[str, list] | None,
               pred_path: str | Path | None, scores: dict[str, Any] | None, scores_dir: str | Path | None,
               durations: dict[str, float] | None, threshold: float | Mapping[str, float]) -> dict[str, Any]:
    """The F1 values: from the event table with sed_eval, else from the score tables with sed_scores_eval."""
    values: dict[str, Any]
    if pred is not None:
        ids = sorted(set(truth) | set(pred) | set(scores or {}))
        values = sed_eval_f1(_fill(truth, ids), _fill(pred, ids), durations)
        result.source = f"events in {pred_path} (sed_eval)"
        result.files = len(ids)
    else:
        assert scores is not None and durations is not None
        values = scores_f1(scores, truth, durations, threshold)
        shown = f"{threshold:g}" if isinstance(threshold, (int, float)) else "per-class thresholds"
        result.source = f"scores in {scores_dir} at threshold {shown} (sed_scores_eval)"
    return values


def _psds_into(result: EventEvaluation, scores: dict[str, Any] | None, truth: dict[str, list],
               durations: Mapping[str, float] | None) -> None:
    """PSDS1 and PSDS2 (and their PSD-ROCs) into `result` when there are score tables."""
    if scores is not None:
        assert durations is not None
        for name, params in (("psds1", PSDS1), ("psds2", PSDS2)):
            value, roc = psds(scores, truth, durations, params)
            setattr(result, name, value)
            result.psd_roc[name] = roc


def format_evaluation(result: EventEvaluation) -> str:
    """A readable table of an `EventEvaluation`."""

    def show(value: float | None) -> str:
        return "   n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:6.3f}"

    lines = [f"{result.files} file(s), {result.truth_events} true event(s); F1 from {result.source}", "",
             f"{'metric':<40} {'value':>6}", "-" * 47,
             f"{'event-based F1 (micro; collar 0.2 s)':<40} {show(result.event_f1)}",
             f"{'  precision / recall':<40} {show(result.event_precision)} {show(result.event_recall)}",
             f"{'  F1 macro (class average)':<40} {show(result.event_f1_macro)}",
             f"{'segment-based F1 (micro; 1 s segments)':<40} {show(result.segment_f1)}",
             f"{'  precision / recall':<40} {show(result.segment_precision)} {show(result.segment_recall)}",
             f"{'  F1 macro (class average)':<40} {show(result.segment_f1_macro)}",
             f"{'PSDS1 (DTC=GTC=0.7, a_st 1)':<40} {show(result.psds1)}",
             f"{'PSDS2 (DTC=GTC=0.1, CTTC 0.3, a_ct 0.5)':<40} {show(result.psds2)}"]
    if result.per_class:
        lines += ["", f"{'class':<24} {'event F1':>9} {'segment F1':>11}"]
        for label, row in sorted(result.per_class.items()):
            lines.append(f"{label:<24} {show(row.get('event_f1')):>9} {show(row.get('segment_f1')):>11}")
    return "\n".join(lines) + "\n"
