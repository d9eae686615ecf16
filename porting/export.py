"""Export a fer-jax model directory back to a PyTorch checkpoint in the upstream container.

    python porting/export.py DIR --out X.pth

The state_dict has exactly the upstream keys (in the reference model's order), is loaded with
`load_state_dict(strict=True)` into the plain-torch reference before it is written, and goes into the
container the source file used (weights key, `module.` prefix, scalar entries such as DAN's `iter`), or
the upstream default for models trained in fer-jax. For a converted model the round trip
torch -> Flax -> torch is exact, BatchNorm `num_batches_tracked` included.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fer_jax import cli, pretrained
from fer_jax.errors import CheckpointError, check_output_path, honour_umask, remove_stale_temporaries
from porting import archs, mapping
from porting.convert import flax_target


def state_dict_from_directory(directory: str, default_num_batches_tracked: int = 0
                              ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Reads a model directory and returns (metadata, torch state_dict in the reference key order).

    Raises:
      CheckpointError: the directory is unreadable or its variables do not fill the reference exactly.
    """
    meta, _, variables = pretrained.load_with_metadata(directory)
    spec = archs.ARCHS[meta["arch"]]
    _, kinds, _ = flax_target(spec.name, meta["hparams"])
    flat = mapping.flax_to_torch(variables, kinds, num_batches_tracked=meta.get("num_batches_tracked"),
                                 default_num_batches_tracked=default_num_batches_tracked)
    with torch.device("meta"):  # shapes and key order only; the load below assigns the real tensors
        ref = spec.reference(**meta["hparams"])
    order = list(ref.state_dict())
    # a module upstream registers twice gets both names for one tensor, as torch.save keeps shared storage
    tensors = spec.with_aliases({k: torch.from_numpy(np.array(v)) for k, v in flat.items()})
    if set(order) != set(tensors):
        raise CheckpointError(f"{directory}: variables do not match the {spec.name} reference "
                              f"(extra {sorted(set(tensors) - set(order))[:4]}, missing "
                              f"{sorted(set(order) - set(tensors))[:4]})")
    state_dict = {k: tensors[k] for k in order}
    ref.load_state_dict(state_dict, strict=True, assign=True)  # the proof that upstream can load it
    return meta, state_dict


def build_container(meta: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Wraps the state_dict the way the source file did, or as upstream saves it for trained models."""
    spec = archs.ARCHS[meta["arch"]]
    source = meta.get("container")
    key = source["weights_key"] if source else spec.weights_key
    prefix = source["prefix"] if source else spec.prefix
    weights = {prefix + k: v for k, v in state_dict.items()}
    if key is None:
        return weights
    extras = source["extras"] if source else spec.extras_for(meta["hparams"])
    return {**extras, key: weights}


def check_out(out: str, overwrite: bool) -> str:
    """Refuses an output file before any work; returns it absolute. An existing file is replaced only with
    `overwrite`, and only if it is a PyTorch checkpoint (torch.save's zip archive).

    Raises:
      UserError: `out` cannot be written, or exists and may not be replaced.
    """
    out = check_output_path(out, "--out", directory=False)
    if os.path.lexists(out):
        if not overwrite:
            raise CheckpointError(f"{out} already exists; choose another --out or pass --overwrite")
        if not os.path.isfile(out) or not zipfile.is_zipfile(out):
            raise CheckpointError(f"{out} is not a PyTorch checkpoint; --overwrite replaces only those; choose "
                                  "another --out")
    return out


def export(directory: str, out: str, *, overwrite: bool = False, log=print) -> None:
    """Writes `out` atomically (a temporary file renamed into place, with the permissions the umask gives).

    Raises:
      UserError: an unreadable model directory, or an `out` that may not be written (before any work).
    """
    out = check_out(out, overwrite)
    meta, state_dict = state_dict_from_directory(directory)
    container = build_container(meta, state_dict)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(out)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out) + ".tmp-", dir=parent)
    os.close(fd)
    try:
        torch.save(container, tmp)
        honour_umask(tmp, directory=False)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    skipped = meta.get("container", {}).get("skipped", {})
    log(f"wrote {out}: {meta['arch']} {meta['hparams']}, {len(state_dict)} keys, entries "
        f"{', '.join(container) if len(container) < len(state_dict) else '(bare state_dict)'}"
        + (f"; not carried over from the source: {', '.join(skipped)}" if skipped else ""))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="a fer-jax model directory (from convert.py or training)")
    parser.add_argument("--out", required=True, help="the .pth file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PyTorch checkpoint")
    args = parser.parse_args(argv)
    return cli.exit_code(lambda: export(args.directory, args.out, overwrite=args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
