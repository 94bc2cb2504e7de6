"""Embeddings: what an AST computes before its head, per window and per clip, for downstream models.

A window's embedding is the pooled token output of a layer: the mean of the cls and dist tokens ("tokens", AST's
own pooling) or the mean of the patch tokens ("mean"), of the last layer (final-normed, what the head sees) or of
block k (`layer=k`, its raw output). A clip's embedding is the mean of its window embeddings. With `pool="none"`
the patch tokens of every window are kept too, each with its time span (seconds from the start of the file) and
its mel-bin span, so a model can read time-frequency positions.

Windows are placed and streamed exactly as tagging places them (`ast_audio.infer.stream.stream_scores`: files are
decoded block by block; memory holds one batch of windows plus what is returned). ONNX Runtime models compute only
logits, so embeddings always run a torch model: the fp32 model an ORT module was built from (`torch_model`).

Output files (`write_embeddings`): `.npz` (numpy arrays, readable with `np.load(allow_pickle=False)`) and
`.parquet` (pyarrow, one row per window: file, start_s, end_s, vector), both written atomically.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import grid_size
from ..errors import AudioInputError, ConfigError
from ..model import AST
from ..utils import atomic_path
from .names import POOLS
from .stream import AudioSource
from .tagger import Tagger, as_items

log = logging.getLogger(__name__)

FORMATS = (".npz", ".parquet")


@dataclass
class ClipEmbeddings:
    """The embeddings of one input.

    windows: (W, D) float32, one per analysis window, whose bounds are starts_s / ends_s (W,) seconds;
    tokens: (W, N, D) float32 patch tokens (pool "none" only, else None), token n of window w spanning
    [starts_s[w] + token_start_s[n], starts_s[w] + token_end_s[n]) and mel bins [mel_start[n], mel_end[n]).
    """

    name: str
    duration_s: float
    starts_s: np.ndarray
    ends_s: np.ndarray
    windows: np.ndarray
    tokens: np.ndarray | None = None

    @property
    def clip(self) -> np.ndarray:
        """(D,) the clip embedding: the mean of the window embeddings."""
        return self.windows.mean(axis=0)


@dataclass(frozen=True)
class TokenGrid:
    """Where each of the N patch tokens sits in a window (frequency-major order, as `PatchEmbed` flattens them):
    start_s / end_s (N,) seconds from the window start, mel_start / mel_end (N,) mel-bin index ranges."""

    start_s: np.ndarray
    end_s: np.ndarray
    mel_start: np.ndarray
    mel_end: np.ndarray


def token_grid(model: AST) -> TokenGrid:
    """The time and frequency span of every patch token of `model` (a patch covers tshape frames from frame
    t_idx * tstride, each frame shift apart; frames past a short clip's end are the log-mel padding)."""
    c, shift_s = model.config, model.frontend.frame_shift_ms / 1000
    f_dim, t_dim = grid_size(c.input_fdim, c.input_tdim, c.fshape, c.tshape, c.fstride, c.tstride)
    f_idx, t_idx = np.divmod(np.arange(f_dim * t_dim), t_dim)  # token n = f_idx * t_dim + t_idx
    return TokenGrid(start_s=t_idx * c.tstride * shift_s, end_s=(t_idx * c.tstride + c.tshape) * shift_s,
                     mel_start=f_idx * c.fstride, mel_end=f_idx * c.fstride + c.fshape)


def torch_model_of(model: Any) -> AST:
    """The torch AST behind `model`: itself, or the fp32 model an ONNX Runtime module was built from."""
    if hasattr(model, "forward_features"):
        return model
    source = getattr(model, "torch_model", None)
    if source is None:
        raise ConfigError("embeddings need the torch model's layers, which an ONNX graph does not expose; pass a "
                          "checkpoint (not --onnx) or a precision other than ort-*")
    log.info("embeddings run the torch fp32 model (ONNX Runtime graphs give logits only)")
    return source


class Embedder:
    """Embeds audio with a loaded AST (windows, batches and streaming as `Tagger`).

    Args:
        model: an AST (or an ONNX Runtime module with its `torch_model`).
        device: where the model runs.
        layer: block k in 1..depth (negative: from the end) whose tokens are pooled; None = the last layer,
            final-normed (the head's input).
        pool: "tokens" (mean of cls and dist), "mean" (mean of the patch tokens), "none" (the model's own pooling
            for the window vector, and the patch tokens kept); None = the model's own pooling.
    """

    def __init__(self, model: Any, device: str | torch.device = "cpu", layer: int | None = None,
                 pool: str | None = None) -> None:
        model = torch_model_of(model)
        if pool is not None and pool not in POOLS:
            raise ConfigError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        self.tagger = Tagger(model, device=device)
        self.model = self.tagger.model
        self.layer = self.model.check_layer(layer) if layer is not None else None
        self.pool = pool or self.model.config.pooling
        self.grid = token_grid(self.model)

    @property
    def dim(self) -> int:
        return self.model.config.embed_dim

    def embed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) model input -> (B, D) window vectors, or (B, 1 + N, D) with pool "none" (row 0 the vector,
        rows 1.. the N patch tokens), float32."""
        with torch.inference_mode():
            tokens = self.model.forward_features(x.to(self.tagger.device), layer=self.layer).float()  # (B, P + N, D)
        from ..model.ast import NUM_PREFIX_TOKENS

        rule = self.model.config.pooling if self.pool == "none" else self.pool
        vector = (tokens[:, 0] + tokens[:, 1]) / 2 if rule == "tokens" else tokens[:, NUM_PREFIX_TOKENS:].mean(1)
        if self.pool != "none":
            return vector.cpu()  # (B, D)
        return torch.cat([vector[:, None], tokens[:, NUM_PREFIX_TOKENS:]], dim=1).cpu()  # (B, 1 + N, D)

    def embed_windows(self, windows: Sequence[torch.Tensor]) -> torch.Tensor:
        """B windows (W_i,) at the model rate -> `embed_inputs` of their features."""
        return self.embed_inputs(self.tagger.featurize(windows))

    def embed(self, inputs: AudioSource | Sequence[AudioSource], window_s: float | None = None,
              hop_s: float | None = None, batch_size: int = 8, names: Sequence[str] | None = None,
              on_error: Callable[[int, AudioInputError], None] | None = None, *,
              sample_rate: int | None = None) -> Iterator[ClipEmbeddings]:
        """Embed files or (N,) waveforms; yields one ClipEmbeddings per (good) input, in order.

        Inputs and windows as `Tagger.tag` takes and places them (window_s default: the model's input; hop_s
        default: half the window; waveforms, numpy arrays or torch tensors, need `sample_rate` and are resampled to
        the model's rate); a bad input raises AudioInputError naming it, or with `on_error` is reported and skipped.
        """
        if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        window, hop = self.tagger.window_and_hop(window_s, hop_s)
        items = as_items(inputs)
        rate = self.tagger.sample_rate
        from .stream import stream_scores

        for scored in stream_scores(self.embed_windows, self.model.frontend, items, window, hop, batch_size,
                                    names=names, on_error=on_error, sample_rate=sample_rate):
            rows = scored.scores.numpy()  # (W, D) or (W, 1 + N, D)
            yield ClipEmbeddings(name=scored.name, duration_s=scored.num_samples / rate,
                                 starts_s=np.asarray(scored.starts, dtype=np.float64) / rate,
                                 ends_s=np.asarray(scored.ends, dtype=np.float64) / rate,
                                 windows=rows if rows.ndim == 2 else rows[:, 0],
                                 tokens=None if rows.ndim == 2 else rows[:, 1:])


def embed_files(checkpoint: str | os.PathLike, inputs: Sequence[AudioSource], **kwargs: Any) -> list[ClipEmbeddings]:
    """One-shot helper: load `checkpoint` (fp32) and embed `inputs` (keywords: `Embedder.embed`'s)."""
    from ..weights.checkpoint import load_model

    return list(Embedder(load_model(checkpoint)).embed(inputs, **kwargs))


# ----------------------------------------------------------------------------------------------------------------
# Files


def output_format(path: str | os.PathLike) -> str:
    """".npz" or ".parquet" from the file name; ConfigError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"{path}: the output must end in .npz or .parquet (the format is taken from the name)")
    return suffix


def write_embeddings(results: Iterator[ClipEmbeddings] | Sequence[ClipEmbeddings], path: str | os.PathLike,
                     embedder: Embedder) -> int:
    """Write the embeddings to `path` (.npz or .parquet, atomically); returns the number of inputs written. With no
    result at all (every input failed) nothing is written and 0 is returned: an empty file would only make the
    rerun need --force.

    npz arrays: files (F,), durations_s (F,), clip_embeddings (F, D); window_file (W,) (index into files),
    window_start_s, window_end_s (W,), window_embeddings (W, D); with pool "none" token_embeddings (W, N, D),
    token_start_s / token_end_s (W, N) (seconds from the file start), token_mel_start / token_mel_end (N,); layer
    (0 = the final layer) and pool.
    Parquet: one row per window, columns file, start_s, end_s, vector (list of D float32), plus tokens (N lists of
    D), token_start_s, token_end_s with pool "none"; written file by file (row group per input).
    """
    results = iter(results)
    first = next(results, None)  # (streamed: the first result comes only after its input is embedded)
    if first is None:
        return 0
    results = itertools.chain([first], results)
    if output_format(path) == ".parquet":
        return _write_parquet(results, Path(path), embedder)
    return _write_npz(list(results), Path(path), embedder)


def _token_times(result: ClipEmbeddings, grid: TokenGrid) -> tuple[np.ndarray, np.ndarray]:
    """(W, N) start and end seconds of every patch token, from the file start."""
    return result.starts_s[:, None] + grid.start_s[None], result.starts_s[:, None] + grid.end_s[None]


def _write_npz(results: list[ClipEmbeddings], path: Path, embedder: Embedder) -> int:
    dim = embedder.dim
    arrays: dict[str, np.ndarray] = {
        "files": np.array([r.name for r in results], dtype=str),
        "durations_s": np.array([r.duration_s for r in results], dtype=np.float64),
        "clip_embeddings": np.stack([r.clip for r in results]) if results else np.zeros((0, dim), np.float32),
        "window_file": np.concatenate([np.full(len(r.starts_s), i) for i, r in enumerate(results)] or [[]]
                                      ).astype(np.int64),
        "window_start_s": np.concatenate([r.starts_s for r in results] or [[]]).astype(np.float64),
        "window_end_s": np.concatenate([r.ends_s for r in results] or [[]]).astype(np.float64),
        "window_embeddings": np.concatenate([r.windows for r in results]) if results
        else np.zeros((0, dim), np.float32),
        "layer": np.array(embedder.layer or 0), "pool": np.array(embedder.pool),
    }
    if embedder.pool == "none" and results:
        grid = embedder.grid
        times = [_token_times(r, grid) for r in results]
        arrays.update(token_embeddings=np.concatenate([r.tokens for r in results]),
                      token_start_s=np.concatenate([t[0] for t in times]),
                      token_end_s=np.concatenate([t[1] for t in times]),
                      token_mel_start=grid.mel_start, token_mel_end=grid.mel_end)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to the temporary name
            np.savez(f, **arrays)
    return len(results)


def _write_parquet(results: Iterator[ClipEmbeddings] | Sequence[ClipEmbeddings], path: Path,
                   embedder: Embedder) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("Parquet output needs pyarrow: pip install 'ast-audio[embed]', or write .npz") from None
    dim, tokens = embedder.dim, embedder.pool == "none"
    fields = [pa.field("file", pa.string()), pa.field("start_s", pa.float64()), pa.field("end_s", pa.float64()),
              pa.field("vector", pa.list_(pa.float32(), dim))]
    if tokens:
        fields += [pa.field("tokens", pa.list_(pa.list_(pa.float32(), dim))),
                   pa.field("token_start_s", pa.list_(pa.float64())), pa.field("token_end_s", pa.list_(pa.float64()))]
    meta = {"layer": str(embedder.layer or 0), "pool": embedder.pool,
            "token_mel_start": ",".join(map(str, embedder.grid.mel_start.tolist())),
            "token_mel_end": ",".join(map(str, embedder.grid.mel_end.tolist()))}
    schema = pa.schema(fields, metadata=meta)
    count = 0
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(str(tmp), schema) as writer:
            for result in results:  # one row group per input: a long file's rows never wait for the others
                columns: dict[str, Any] = {
                    "file": [result.name] * len(result.starts_s), "start_s": result.starts_s,
                    "end_s": result.ends_s,
                    "vector": pa.FixedSizeListArray.from_arrays(result.windows.reshape(-1), dim),  # (W*D,) -> W x D
                }
                if tokens:
                    start, end = _token_times(result, embedder.grid)
                    columns.update(tokens=[list(w) for w in result.tokens], token_start_s=list(start),
                                   token_end_s=list(end))
                writer.write_table(pa.table(columns, schema=schema))
                count += 1
    return count
