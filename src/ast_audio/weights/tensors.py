"""Reading weight files safely: a safetensors file or a weights-only torch pickle as a flat {name: tensor} dict.

Pickles are read with `torch.load(weights_only=True)`, which refuses files that carry code; a refused file is named
with the callables it would have run (found with `pickletools`, which runs nothing). Every tensor of every format
is checked to be dense, floating point, on the CPU and finite (`read_tensors`); a safetensors header can be read
alone (`read_header`), so shapes are checked against a config before any weight is read.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..errors import CheckpointError
from ..utils import count_non_finite
from .adapt import unwrap_state_dict

# Weights are floating point; integer, bool, float8 or quantised tensors would be silently cast (or not loadable)
# into the float32 model, so they are refused by name.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_SAFETENSORS_FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
_FLOAT_DTYPES_TEXT = "float32, float16, bfloat16 or float64"


def _dtype_refused(source: str | Path, name: str, dtype: object) -> CheckpointError:
    return CheckpointError(f"{source}: tensor {name} has dtype {dtype}; expected floating-point weights "
                           f"({_FLOAT_DTYPES_TEXT}); quantised or integer checkpoints are not supported, re-save the "
                           "float weights")


def _check_tensors(state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Every tensor dense floating point on the CPU, and finite once cast to float32, the dtype the model holds
    (float64 1e300 is finite in the file but infinite in the model); one-line CheckpointError naming the first
    offending tensor by its name in the file."""
    for name, tensor in state.items():
        if tensor.dtype not in FLOAT_DTYPES or tensor.is_quantized:
            raise _dtype_refused(source, name, tensor.dtype)
        if tensor.layout != torch.strided or tensor.device.type != "cpu":
            raise CheckpointError(f"{source}: tensor {name} is a {tensor.layout} tensor on {tensor.device}; expected "
                                  "dense weights as torch.save(model.state_dict()) writes them")
        bad = count_non_finite(tensor.to(torch.float32))
        if bad:
            raise CheckpointError(f"{source}: tensor {name} holds {bad} NaN or infinite value(s) "
                                  "(as float32); the checkpoint is broken (e.g. saved after training diverged), use "
                                  "another copy or an earlier checkpoint")


def read_header(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors as empty meta tensors of the stored shapes and dtypes, from its header only.

    Nothing is read or allocated beyond the JSON header, so a config can be checked against the weights' shapes
    before a model is built (safetensors itself checks that the header's offsets fit the file).
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            entries = {name: (f.get_slice(name).get_dtype(), f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"{path}: cannot read safetensors weights ({str(exc)[:200]}); the file is corrupt or "
                              "incomplete, download or export it again") from None
    state = {}
    for name, (dtype, shape) in entries.items():
        if dtype not in _SAFETENSORS_FLOAT_DTYPES:
            raise _dtype_refused(path, name, dtype)
        state[name] = torch.empty(shape, dtype=_SAFETENSORS_FLOAT_DTYPES[dtype], device="meta")
    return state


# torch's weights-only unpickler names a refused callable as "Unsupported global: GLOBAL io.open" (torch <= 2.12)
# or "unsupported GLOBAL posix.system whose module ..." (2.13); the spelling is not an API, so match loosely, and
# when it does not match, look for the callables in the pickle itself (`_pickled_callables`).
_REFUSED_GLOBAL = re.compile(r"unsupported\s+global\W*(?:global\s+)?([\w.]+)", re.IGNORECASE)
# What a tensor-only torch.save pickle refers to; anything else is a callable that unpickling would run.
_TENSOR_PICKLE_GLOBALS = re.compile(r"(torch\.[\w.]+|collections\.OrderedDict|_codecs\.encode)")
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_SAFE_COPY_HINT = ("get a safe copy: a .safetensors checkpoint from its source, or, only if you trust where the file "
                   "comes from, re-save its state dict as a plain torch.save/safetensors file on a trusted machine "
                   "and `ast-audio convert` that")


def _pickled_callables(path: Path) -> list[str]:
    """The module.name of every callable a pickle (plain, or the data.pkl of a torch.save zip) refers to, beyond
    those of plain tensors, read with `pickletools` (which parses opcodes and runs nothing); [] if unparseable."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            data = path.read_bytes()
        found, strings = [], []
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL":  # module and name were pushed as the last two strings
                found.append(".".join(strings[-2:]) if len(strings) >= 2 else "an unnamed callable")
            elif op.name in _STRING_OPS:
                strings.append(str(arg))
    except Exception:  # truncated or not a pickle: nothing to report
        return []
    return [name for name in dict.fromkeys(found) if not _TENSOR_PICKLE_GLOBALS.fullmatch(name)]


def _unpickling_refused(path: Path, exc: Exception) -> CheckpointError:
    """The one-line error for a pickle that torch's weights-only loading refuses (or that is not a pickle at all)."""
    text = str(exc)
    found = _REFUSED_GLOBAL.search(text)
    callables = [found[1]] if found else _pickled_callables(path)
    if callables:
        return CheckpointError(f"{path}: refused to load: the file contains code ({', '.join(callables[:3])}) that "
                               f"will not be run, as it could do anything to this machine; {_SAFE_COPY_HINT}")
    if "weights only load failed" in text.lower():
        # e.g. "Unsupported operand 149" for a pickle protocol torch does not read safely, or random bytes
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        return CheckpointError(f"{path}: not a readable PyTorch checkpoint: safe loading stopped at "
                               f"{detail[1][:120] if detail else 'unsupported content'!r}; the file is corrupt or "
                               f"in a pickle format torch cannot read safely; download it again or {_SAFE_COPY_HINT}")
    return CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or not a torch.save file); "
                           "download it again or check the path")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or a pickle read with weights_only=True, as a flat {name: tensor} dict.

    Every tensor is checked to be dense, floating point and finite (`_check_tensors`): the one place where the
    weights of every format enter.
    """
    if path.suffix == ".safetensors":
        read_header(path)  # corrupt files and non-float dtypes, named, before any tensor is read
        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"{path}: cannot read safetensors weights ({str(exc)[:200]}); the file is corrupt "
                                  "or incomplete, download or export it again") from None
        _check_tensors(state, path)
        return state
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols etc.; the outcome is reported below
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for refused content; zip errors, truncated files, ...
        if isinstance(exc, pickle.UnpicklingError) or "weights only load failed" in str(exc).lower():
            raise _unpickling_refused(path, exc) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:200]}); "
                              "download it again or check the path") from None
    state = unwrap_state_dict(obj)
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a state dict (names -> tensors), optionally under 'model', got "
                              f"{type(obj).__name__}")
    state = dict(state)
    _check_tensors(state, path)
    return state
