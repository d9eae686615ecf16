"""Convert a PyTorch checkpoint of an upstream network into a fer-jax (Flax + Orbax) model directory.

    python porting/convert.py dan_rafdb.pth [--out DIR] [--arch NAME] [--hparam KEY=VALUE]

Reads the file safely (nothing it names is executed), finds the weights in the upstream container,
recognises the architecture from keys and shapes, maps every key by the one rule with strict accounting,
checks the result against the plain-torch reference model on a random batch (float32 and float64), and
writes DIR atomically: `variables/` (Orbax) and `fer_jax.json` (architecture, hyperparameters, source
hash, container, BatchNorm counters, conversion report, parity figures).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from fer_jax import cli, models, pretrained
from fer_jax.errors import CheckpointError, UserError
from fer_jax.train import config as config_lib
from porting import archs, containers, mapping, safe_load, verify


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_hparams(items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs, values as Python literals (checked against the architecture once it is known)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"--hparam {item!r}: expected KEY=VALUE")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise UserError(f"--hparam {item!r}: {value!r} is not a Python literal") from None
    return out


def check_override_kinds(overrides: dict[str, Any], arch: str | None) -> None:
    """Refuses `--hparam` values of the wrong kind (a str for a class count, ...) or a class count below 1,
    before the checkpoint is read: checked against `--arch`, or against every architecture that has all the
    given hyperparameters (names no architecture has are reported once the architecture is known).

    Raises:
      UserError: the first problem, naming the hyperparameter and what it takes.
    """
    names = [arch] if arch in models.REGISTRY else sorted(models.REGISTRY)
    candidates = [n for n in names if set(overrides) <= set(models.spec(n).defaults)]
    errors = []
    for name in candidates:
        try:
            config_lib.check_hparams(name, overrides, "--hparam ")
            return
        except UserError as e:
            errors.append(e)
    if errors:
        raise errors[0]


# What a file holding only an optimizer state is, per architecture saved that way upstream.
POSITIONAL_NOTE = {
    "mftn": "this is MFTN-FER's …model_best.pth: upstream's save_checkpoint stores SAM's optimizer state there "
            "instead of the model (an upstream bug); SAM's old_p copies are the final weights bit for bit, so "
            "they are converted by position; the matching …model.pth (state_dict) holds the same weights",
}


def flax_target(arch: str, hparams: dict[str, Any]) -> tuple[Any, dict, Any]:
    """(Flax module, module kinds, abstract variables) of a registered network, through its declared init."""
    spec = models.spec(arch)
    module = models.create(arch, **hparams)
    kinds, abstract = mapping.module_kinds(module, *spec.batch_inputs(spec.example_inputs()), **spec.init_kwargs())
    return module, kinds, abstract


def convert(path: str, out: str, *, arch: str | None = None, hparam_overrides: Sequence[str] = (),
            verify_outputs: bool = True, overwrite: bool = False, log=print) -> dict[str, Any]:
    """Converts `path` into the model directory `out`; returns the metadata written.

    Raises:
      UserError: unreadable, unsafe or unrecognised checkpoint, mapping or parity failure.
    """
    pretrained.check_destination(out, overwrite)  # fail before the expensive steps
    overrides = parse_hparams(hparam_overrides)
    check_override_kinds(overrides, arch)
    container = containers.unwrap(safe_load.load_checkpoint(path), os.path.basename(path))
    extras = ", ".join([f"{k}={v!r}" for k, v in container.extras.items()]
                       + [f"{k}={v} (not converted)" for k, v in container.skipped.items()]) or "none"
    missing: list[str] = []
    if container.positions is not None:
        log(f"read {path}: no model weights, only an optimizer state whose {len(container.positions)} "
            f"per-parameter '{containers.WEIGHT_COPY}' entries copy the weights, by position; other entries: "
            f"{extras}")
        found, named, missing = archs.from_positions(container.positions, container.num_positions, arch, overrides)
        log(f"  {POSITIONAL_NOTE.get(found.spec.name, '')}".rstrip())
        container.state_dict = named
    else:
        log(f"read {path}: weights under {container.weights_key or '(bare state_dict)'}, "
            f"{len(container.state_dict)} keys, prefix {container.prefix or 'none'}; other entries: {extras}")
        found = archs.detect(container.shapes(), arch, filename=os.path.basename(path), overrides=overrides)
    spec, hparams = found.spec, found.hparams
    unknown = sorted(set(overrides) - set(models.spec(spec.name).defaults))
    if unknown:
        raise UserError(f"--hparam {unknown[0]}: {spec.name} has no such hyperparameter (it has: "
                        f"{', '.join(models.spec(spec.name).defaults)})")
    log(f"architecture: {spec.name} {hparams} ({'forced' if arch else 'detected'}; keys and shapes match "
        "the reference exactly)")
    # under the reference's names (e.g. from timm's), one copy of each aliased tensor (FERAtt's encoder)
    state_dict = found.prepare(container.state_dict)
    for note in found.notes:
        log(f"  {note}")

    module, kinds, abstract = flax_target(spec.name, hparams)
    if missing:  # left at their initialisation: concrete values, and the reference checks them too
        mspec = models.spec(spec.name)
        example = {k: np.zeros(v.shape, v.dtype) for k, v in mspec.example_inputs().items()}
        abstract = jax.device_get(mspec.init(module, jax.random.key(0), example))
    variables, report = mapping.torch_to_flax(state_dict, abstract, kinds,
                                              allow_missing=models.spec(spec.name).frozen(hparams) if missing else ())
    log(report.summary())
    if missing:
        log(f"  {len(missing)} parameters absent from the file ({missing[0]}, ...) keep their initialisation")
        state_dict = {**mapping.flax_to_torch(variables, kinds), **state_dict}

    meta: dict[str, Any] = {
        "source": {"file": os.path.basename(path), "sha256": sha256(path)},
        "container": {"weights_key": container.weights_key, "prefix": container.prefix,
                      "extras": container.extras, "skipped": container.skipped},
        "num_batches_tracked": report.num_batches_tracked,
        "report": report.counts(),
        "detection_notes": found.notes,
        "layout": found.layout.name if found.layout else None,
        "absent_at_init": missing,
    }
    if verify_outputs:
        meta["parity"] = check_parity(spec, hparams, state_dict, variables, log)
    pretrained.save_pretrained(out, spec.name, hparams, variables, meta, overwrite=overwrite)
    log(f"wrote {out}")
    return meta


def check_parity(spec: archs.ArchSpec, hparams: dict[str, Any], state_dict: dict[str, np.ndarray],
                 variables: Any, log) -> dict[str, Any]:
    """Runs the reference and the converted model on one random batch; raises if an output disagrees."""
    example = models.spec(spec.name).example_inputs(2, spec.check_size)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in example.items())
    log(f"parity against the torch reference (eval mode, {shapes}, seed 0):")
    checks = verify.parity(spec, hparams, state_dict, variables)
    for c in checks:
        log(f"  {c.line()}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        raise CheckpointError(f"converted model disagrees with the torch reference ({', '.join(failed)}); "
                              "nothing written")
    return {c.name: c.figures() for c in checks}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="PyTorch checkpoint (.pth, .pth.tar, .pt) or .safetensors file")
    parser.add_argument("--out", help="output directory (default: ./<checkpoint stem>_flax)")
    parser.add_argument("--arch", help=f"force the architecture: {', '.join(sorted(archs.ARCHS))}")
    parser.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                        help="override a hyperparameter read from the shapes, e.g. num_class=8")
    parser.add_argument("--no-verify", action="store_true", help="skip the parity check against torch")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing fer-jax model directory (never anything else)")
    args = parser.parse_args(argv)
    stem = os.path.basename(args.checkpoint).split(".")[0]
    out = args.out or f"{stem}_flax"
    return cli.exit_code(lambda: convert(args.checkpoint, out, arch=args.arch, hparam_overrides=args.hparam,
                                         verify_outputs=not args.no_verify, overwrite=args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
