"""The one rule that turns a model's logits into scores.

Multi-label models (independent classes, e.g. AudioSet, trained with binary cross-entropy) score each class with a
sigmoid; single-label models (exactly one class per clip, e.g. ESC-50, trained with cross-entropy) with a softmax
over the classes. Tagging, explanations, training evaluation and ensembles all call `probabilities`, so a model's
scores are the same wherever they are computed.
"""

from __future__ import annotations

import torch


def probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """(..., C) logits -> (..., C) scores: sigmoid if `multi_label`, else softmax over the last axis."""
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
