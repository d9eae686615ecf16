"""Reading PyTorch checkpoints without executing anything they name.

A `.pth` file is a pickle, and a pickle can call any importable function while it loads. We read in two
stages:

1. `torch.load(weights_only=True)`: torch's own allowlist (tensors, containers, primitive types). Every
   plain upstream container (DAN, the MS-Celeb ResNet18, FAER, FERAtt, Emotion-FAN) passes here.
2. If torch refuses a global, a restricted unpickler: the same allowlist plus NumPy's array and scalar
   reconstruction and `argparse.Namespace`. Any other global becomes an inert placeholder *class*. Pickle
   builds custom objects with NEWOBJ (`cls.__new__`, which for a placeholder records the arguments and
   state and runs nothing), but calls a function with REDUCE (`f(*args)`, which for a placeholder
   raises): so MFTN-FER's `util.RecorderMeter` objects load as opaque records, while a pickle that would
   call `os.system` at load time is refused and nothing runs.
"""

from __future__ import annotations

import argparse
import os
import pickle
import warnings
import zipfile
from typing import Any

import numpy as np
import torch
import torch._weights_only_unpickler as _wo  # the allowlist behind weights_only=True (torch pinned 2.13.0)

from fer_jax.errors import CheckpointError


class Opaque:
    """An object of a class we refused to import; keeps what the pickle said about it, runs nothing."""

    _qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Opaque":
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self._qualname}>"


class _OpaqueMeta(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        # Reached only through REDUCE: the pickle wants to *call* this global while loading.
        raise CheckpointError(
            f"refusing to load: the file would call {cls._qualname}() while unpickling, which can run "
            "arbitrary code (possibly a malicious file); nothing was executed")


def _opaque_class(module: str, name: str) -> type:
    return _OpaqueMeta(name, (Opaque,), {"_qualname": f"{module}.{name}", "__module__": "porting.opaque"})


def _reconstructor(cls: type, base: type, state: Any) -> Any:
    """copyreg._reconstructor (protocol 0/1 objects), restricted to classes we allow or made opaque."""
    if isinstance(cls, _OpaqueMeta):
        return Opaque.__new__(cls)
    raise CheckpointError(f"refusing to load: the file reconstructs {cls!r} through copyreg")


def _extra_globals() -> dict[str, Any]:
    from numpy._core import multiarray  # NumPy 2; pickles name numpy.core.* (NumPy 1) or numpy._core.*

    extra = {"argparse.Namespace": argparse.Namespace, "copyreg._reconstructor": _reconstructor,
             "numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        extra[f"{mod}._reconstruct"] = multiarray._reconstruct
        extra[f"{mod}.scalar"] = multiarray.scalar
    for name in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool_"):
        extra[f"numpy.{name}"] = getattr(np, name)
        extra[f"numpy.dtypes.{type(np.dtype(name)).__name__}"] = type(np.dtype(name))
    return extra


class _RestrictedUnpickler(pickle.Unpickler):
    _allowed: dict[str, Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = {**_wo._get_allowed_globals(), **_extra_globals()}
        obj = _RestrictedUnpickler._allowed.get(f"{module}.{name}")
        return obj if obj is not None else _opaque_class(module, name)


class _RestrictedPickleModule:
    """The `pickle_module` protocol torch.load uses: `Unpickler`, `load`, `UnpicklingError`."""

    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError
    __name__ = "porting.safe_load.restricted"

    @staticmethod
    def load(f: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(f, **kwargs).load()


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory; pass the .pth/.pth.tar/.pt file itself")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download or copy did not complete")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except zipfile.BadZipFile as e:
            raise CheckpointError(f"{path} is a truncated or damaged torch zip checkpoint ({e})") from None
        if bad is not None:
            raise CheckpointError(f"{path} is damaged: member {bad} fails its CRC check")
    elif head[:1] != b"\x80":
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither a torch zip file nor a pickle)")


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Loads a PyTorch checkpoint safely onto the CPU.

    Args:
      path: a file written by `torch.save` (zip or legacy format), any extension; or a `.safetensors` file.

    Returns:
      The unpickled object. Tensors are CPU tensors; objects of classes outside the allowlist are
      `Opaque` records.

    Raises:
      CheckpointError: the file is missing, empty, truncated, not a checkpoint, or would run code.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):  # a flat tensor file (timm's, Hugging Face's): no pickle at all
        return _load_safetensors(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it did not write
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({_first_line(e)})") from None
    except CheckpointError:
        raise
    except Exception as e:  # torch raises RuntimeError/EOFError/ValueError for damaged files
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({_first_line(e)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({_first_line(e)})") from None


def _load_safetensors(path: str) -> dict[str, torch.Tensor]:
    """{key: CPU tensor} of a safetensors file (its format cannot carry code)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def describe(obj: Any) -> str:
    """A short type description of a container entry, for reports."""
    if isinstance(obj, torch.Tensor):
        return f"tensor{list(obj.shape)}"
    if isinstance(obj, Opaque):
        return repr(obj)
    if isinstance(obj, dict):
        return f"dict({len(obj)})"
    return type(obj).__name__


__all__ = ["Opaque", "describe", "load_checkpoint"]
