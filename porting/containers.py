"""Finding the weights inside an upstream checkpoint container.

Upstream files wrap their state_dict differently (shared/reference/checkpoints.md): DAN under
`model_state_dict`, the MS-Celeb ResNet18, Emotion-FAN, FERAtt, FAER and MFTN under `state_dict`,
official ConvNeXt files under `model`, some files bare. DataParallel prefixes every key with `module.`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fer_jax.errors import CheckpointError
from porting.safe_load import describe

# Where upstream containers keep the model weights, in the order we look.
WEIGHT_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")
PREFIXES = ("module.",)


@dataclasses.dataclass
class Container:
    """The weights of a checkpoint and what surrounded them.

    Attributes:
      state_dict: key -> numpy array (a copy, detached from torch), prefix stripped.
      weights_key: the top-level entry holding the weights (None for a bare state_dict).
      prefix: the prefix stripped from every key ('' if none).
      extras: other top-level entries holding plain scalars (int, float, str, bool, None), kept exactly.
      skipped: descriptions of the remaining entries (optimizer state, metric objects, tensors), which a
        conversion does not carry over.
      positions: for a file holding only an optimizer state whose per-parameter entries copy the weights
        (SAM's `old_p`: MFTN-FER's `…model_best.pth`), position in the model's parameters -> weight, and
        `num_positions` the number of parameters the optimizer held; `state_dict` is then empty and the
        architecture names the positions (`archs.from_positions`).
    """

    state_dict: dict[str, np.ndarray]
    weights_key: str | None
    prefix: str
    extras: dict[str, Any]
    skipped: dict[str, str]
    positions: dict[int, np.ndarray] | None = None
    num_positions: int = 0

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.state_dict.items()}


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy copy of a tensor (`.numpy()` alone shares memory with torch)."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy().copy()


def _describe(v: Any) -> str:
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return f"tensor({v.item()})"
    if isinstance(v, argparse.Namespace):
        return f"Namespace({', '.join(sorted(vars(v)))})"
    return describe(v)


def _strip_prefix(sd: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    for prefix in PREFIXES:
        n = sum(k.startswith(prefix) for k in sd)
        if n == len(sd):
            return {k[len(prefix):]: v for k, v in sd.items()}, prefix
        if n:
            raise CheckpointError(f"{n} of {len(sd)} keys start with {prefix!r} and the rest do not; "
                                  "the checkpoint mixes two models")
    return sd, ""


def unwrap(obj: Any, source: str = "checkpoint") -> Container:
    """Finds the state_dict inside an upstream container and strips `module.` prefixes.

    Args:
      obj: what `safe_load.load_checkpoint` returned.
      source: the file name, for error messages.

    Raises:
      CheckpointError: no tensor dictionary can be found.
    """
    copies = _optimizer_weight_copies(obj)
    if copies is not None:
        positions, count = copies
        groups = ", ".join(_describe_group(g) for g in obj["param_groups"])
        return Container({}, None, "", {}, {"param_groups": groups}, positions, count)
    if _is_tensor_dict(obj):
        sd, key, rest = obj, None, {}
    elif isinstance(obj, Mapping):
        key = next((k for k in WEIGHT_KEYS if _is_tensor_dict(obj.get(k))), None)
        if key is None:
            entries = ", ".join(f"{k}: {describe(v)}" for k, v in list(obj.items())[:8])
            raise CheckpointError(f"{source} holds no model weights (looked for a state_dict, or one under "
                                  f"{', '.join(WEIGHT_KEYS)}; found {entries or 'an empty dict'})")
        sd = obj[key]
        rest = {k: v for k, v in obj.items() if k != key}
    else:
        raise CheckpointError(f"{source} holds a {describe(obj)}, not a state_dict or a dict containing one")
    arrays, prefix = _strip_prefix({k: to_numpy(v) for k, v in sd.items()})
    scalar = (bool, int, float, str, type(None))
    extras = {str(k): v for k, v in rest.items() if type(v) in scalar}
    skipped = {str(k): _describe(v) for k, v in rest.items() if type(v) not in scalar}
    return Container(arrays, key, prefix, extras, skipped)


WEIGHT_COPY = "old_p"  # SAM's per-parameter state: the weights before its ascent step


def _optimizer_weight_copies(obj: Any) -> tuple[dict[int, np.ndarray], int] | None:
    """(position -> weight, number of parameters) if `obj` is an optimizer state_dict (only `state` and
    `param_groups`) whose per-parameter state holds a copy of each weight (SAM's `old_p`), else None."""
    if not (isinstance(obj, Mapping) and set(obj) == {"state", "param_groups"}
            and isinstance(obj["state"], Mapping) and isinstance(obj["param_groups"], list | tuple)):
        return None
    entries = {i: s.get(WEIGHT_COPY) for i, s in obj["state"].items() if isinstance(s, Mapping)}
    if not entries or not all(isinstance(i, int) and isinstance(v, torch.Tensor) for i, v in entries.items()):
        return None
    count = sum(len(g.get("params", ())) for g in obj["param_groups"] if isinstance(g, Mapping))
    return {i: to_numpy(v) for i, v in sorted(entries.items())}, count


def _describe_group(group: Any) -> str:
    if not isinstance(group, Mapping):
        return describe(group)
    shown = {k: v for k, v in group.items() if k != "params" and type(v) in (bool, int, float, str, tuple)}
    return f"{len(group.get('params', ()))} params ({', '.join(f'{k}={v}' for k, v in shown.items())})"
