"""Hugging Face Hub downloads, cache first. `huggingface_hub` is optional and imported only when used.

Files land in the Hub's normal cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`), so a
model fetched once, by this package or by transformers, works offline afterwards.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import CheckpointError

# The checkpoint used when none is named: the reference's best single AudioSet model (mAP 0.459), in transformers'
# format. The inference commands default to it and `train --init audioset` starts from it.
DEFAULT_MODEL = "MIT/ast-finetuned-audioset-10-10-0.4593"

# What a transformers AST repo needs; README, TF/Flax weights and the like are skipped.
ALLOW_PATTERNS = ["config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin"]

# `owner/name`, as the Hub spells repository ids (letters, digits, '-', '_', '.').
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_repo_id(text: str) -> bool:
    """Whether `text` has the `owner/name` form of a Hub repository id (it may still also be a relative path)."""
    return _REPO_ID.fullmatch(text) is not None and ".." not in text and not text.endswith((".pth", ".pt", ".bin"))


def cache_dir() -> Path:
    """The Hub cache folder, read from the environment at call time (so tests and users can redirect it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def download(repo_id: str, revision: str | None = None) -> Path:
    """Local folder holding `repo_id`'s config and weights: the cached snapshot when there is one, else downloaded.

    Raises:
        CheckpointError: huggingface_hub is not installed, or the repo is neither cached nor downloadable
            (offline, unknown id, no network).
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"loading {repo_id!r} from the Hugging Face Hub needs huggingface_hub: "
                              "`pip install huggingface_hub` (or `pip install ast-audio[hub]`), or pass a local "
                              "folder") from None

    cache = cache_dir()
    kwargs = dict(revision=revision, cache_dir=str(cache), allow_patterns=ALLOW_PATTERNS)
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
    except Exception as exc:  # not cached (LocalEntryNotFoundError), or an invalid id (HFValidationError)
        cached_error: Exception = exc
    advice = "download it on a connected machine or pass a local folder"
    if type(cached_error).__name__ == "HFValidationError":  # the id itself is malformed
        raise CheckpointError(f"cannot download {repo_id!r}: {str(cached_error).splitlines()[0]}; "
                              f"expected a hub id like {DEFAULT_MODEL} or a local path")
    if _offline():
        raise CheckpointError(f"cannot download {repo_id}: no network (HF_HUB_OFFLINE is set) and not in the cache "
                              f"at {cache}; {advice}")
    try:
        return Path(snapshot_download(repo_id, **kwargs))
    except Exception as exc:  # no network, unknown or gated repo, ...: all end in the same advice
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no details'}"
    raise CheckpointError(f"cannot download {repo_id}: the Hub did not provide it ({reason}) and it is not in the "
                          f"cache at {cache}; {advice}")
