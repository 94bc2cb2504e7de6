"""The precision names (no torch, no numpy): `ast_audio.model.precision` computes in them, the command line lists them
in its --help without importing torch. Both import these objects; there is no copy to keep equal."""

from __future__ import annotations

from typing import Final

TORCH_PRECISIONS: Final = ("fp32", "bf16", "int8")
ORT_PRECISIONS: Final = ("ort-fp32", "ort-int8")
PRECISIONS: Final = (*TORCH_PRECISIONS, *ORT_PRECISIONS)  # what a model can compute in
PRECISION_CHOICES: Final = ("auto", *PRECISIONS)  # what `precision=` / `--precision` accept
