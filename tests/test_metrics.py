"""ast_audio.train.metrics against scikit-learn (per-class AP / ROC AUC) and scipy (d')."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from ast_audio.train import metrics as M

TOL = 1e-6  # float64 on both sides; the only differences are summation order


def _random_set(seed: int, n: int = 300, c: int = 9, ties: bool = False):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < rng.uniform(0.05, 0.5, size=c)).astype(np.float64)
    scores = rng.random((n, c)) * 0.6 + targets * rng.uniform(0.0, 0.5, size=c)  # informative but noisy
    if ties:
        scores = np.round(scores, 1)  # many tied scores: thresholds must group them
    return scores, targets


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, False), (3, True)])
def test_per_class_ap_and_auc_equal_sklearn(seed, ties):
    scores, targets = _random_set(seed, ties=ties)
    ap, auc = M.per_class(scores, targets)
    for c in range(scores.shape[1]):
        assert abs(ap[c] - average_precision_score(targets[:, c], scores[:, c])) < TOL
        assert abs(auc[c] - roc_auc_score(targets[:, c], scores[:, c])) < TOL


def test_summary_means_and_accuracy():
    scores, targets = _random_set(5)
    result = M.evaluate(scores, targets)
    sk_ap = [average_precision_score(targets[:, c], scores[:, c]) for c in range(scores.shape[1])]
    sk_auc = [roc_auc_score(targets[:, c], scores[:, c]) for c in range(scores.shape[1])]
    assert abs(result.mAP - np.mean(sk_ap)) < TOL
    assert abs(result.mAP - average_precision_score(targets, scores, average="macro")) < TOL
    assert abs(result.mAUC - np.mean(sk_auc)) < TOL
    assert abs(result.d_prime - math.sqrt(2) * norm.ppf(np.mean(sk_auc))) < TOL
    # top-1 accuracy over the clips that have a class (clips without any positive have no top class to hit)
    labelled = [i for i in range(len(scores)) if targets[i].max() > 0]
    assert 0 < len(labelled) < len(scores)  # the random set has both kinds, so the rule is exercised
    hand_acc = np.mean([scores[i].argmax() == targets[i].argmax() for i in labelled])
    assert result.acc == pytest.approx(hand_acc, abs=1e-12)
    assert (result.clips, result.classes, result.auc_defined) == (300, 9, 9)


@pytest.mark.parametrize("auc", [0.5, 0.6, 0.9, 0.97, 0.999, 0.01])
def test_d_prime_equals_scipy(auc):
    assert abs(M.d_prime(auc) - math.sqrt(2) * norm.ppf(auc)) < 1e-9


def test_classes_without_positives_follow_sklearn():
    scores, targets = _random_set(7, n=60, c=4)
    targets[:, 2] = 0.0  # no positive: sklearn AP 0.0, AUC undefined
    targets[:, 3] = 1.0  # no negative: AP 1.0, AUC undefined
    ap, auc = M.per_class(scores, targets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk_ap = average_precision_score(targets, scores, average=None)
        assert math.isnan(roc_auc_score(targets[:, 2], scores[:, 2]))
    np.testing.assert_allclose(ap, sk_ap, atol=TOL)
    assert ap[2] == 0.0 and ap[3] == pytest.approx(1.0)
    assert math.isnan(auc[2]) and math.isnan(auc[3])
    result = M.evaluate(scores, targets)
    assert result.mAP == pytest.approx(float(np.mean(sk_ap)), abs=TOL)  # sklearn's macro average keeps the 0
    assert result.auc_defined == 2
    assert result.mAUC == pytest.approx(np.mean([roc_auc_score(targets[:, c], scores[:, c]) for c in (0, 1)]),
                                        abs=TOL)


def test_single_label_accuracy_by_hand():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.9, 0.05, 0.05]])
    targets = np.eye(3)[[1, 1, 2, 0]]
    assert M.accuracy(scores, targets) == 0.75  # clip 2 wrong (argmax 0, target 1)
