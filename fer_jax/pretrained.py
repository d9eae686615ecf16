"""Converted-model directories: Flax variables in Orbax plus a JSON metadata file. No torch needed.

Layout of a directory written by `porting/convert.py`:

    DIR/fer_jax.json   {"format", "arch", "hparams", "preprocess", "source", "container",
                        "num_batches_tracked", "report", "parity", ...}

`preprocess` is how a face found in a photograph becomes the model's input ({"pp", "margin"}: see
`models.FacePreprocess`), from the network's upstream inference at the model's input size; edit it to
change what `scripts/predict.py` and `scripts/explain.py` feed the model.
    DIR/variables/     Orbax StandardCheckpointer tree {"params": ..., "batch_stats": ...}
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import linen as nn

from fer_jax import merge, models
from fer_jax.errors import CheckpointError, check_output_path, honour_umask, remove_stale_temporaries

FORMAT = "fer-jax-pretrained/1"
METADATA = "fer_jax.json"
VARIABLES = "variables"


def _local_checkpointer() -> ocp.StandardCheckpointer:
    """An Orbax checkpointer for this process alone: in a multi-host run, process 0 writes the best model
    while the others train on, so it must not wait at a barrier for them."""
    me = jax.process_index()
    return ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me}))


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks `fer_jax.json` of a converted-model directory.

    Raises:
      CheckpointError: the directory or its metadata is missing or not a fer-jax model.
    """
    path = os.path.join(directory, METADATA)
    if not os.path.isdir(directory):
        raise CheckpointError(f"no converted model at {directory} (run porting/convert.py first)")
    try:
        with open(path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{directory} is not a fer-jax model directory (no {METADATA})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is damaged ({e})") from None
    if meta.get("format") != FORMAT or meta.get("arch") not in models.REGISTRY:
        raise CheckpointError(f"{path}: unsupported format {meta.get('format')!r} / arch {meta.get('arch')!r}")
    return meta


def load_pretrained(directory: str | os.PathLike, **module_overrides: Any) -> tuple[nn.Module, dict]:
    """Loads a converted model; `module.apply(variables, images_nhwc, train=False)` then runs it (or a
    named method: `module.apply(variables, frames, method=module.frame_features)` for Emotion-FAN).

    Args:
      directory: written by `porting/convert.py` (or `save_pretrained`).
      **module_overrides: module attributes to change, e.g. `dtype=jnp.bfloat16` or `axis_name="batch"`.

    Returns:
      (Flax module, variables {"params": ..., "batch_stats": ...}).

    Raises:
      CheckpointError: the directory is not a readable fer-jax model.
    """
    _, module, variables = load_with_metadata(directory, **module_overrides)
    return module, variables


def load_with_metadata(directory: str | os.PathLike, **module_overrides: Any) -> tuple[dict, nn.Module, dict]:
    """`load_pretrained`, also returning the directory's metadata (read once).

    Raises:
      CheckpointError: the directory is not a readable fer-jax model, or its weights are not those of the
        network its metadata names (another class count, another architecture).
    """
    meta = read_metadata(directory)
    what = f"{meta['arch']} {meta.get('hparams')}"
    try:
        module = models.create(meta["arch"], **{**meta["hparams"], **module_overrides})
        target = models.spec(meta["arch"]).abstract_variables(module)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{directory}: its metadata names {what}, which cannot be built "
                              f"({_first_line(e)})") from None
    try:
        with _local_checkpointer() as ckptr:
            variables = ckptr.restore(os.path.abspath(os.path.join(directory, VARIABLES)), target)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{directory}: variables do not match {what} ({_first_line(e)})") from None
    wrong = [("/".join(str(getattr(k, "key", k)) for k in path), np.shape(got), want.shape) for (path, got), want
             in zip(jax.tree_util.tree_leaves_with_path(variables), jax.tree.leaves(target))
             if np.shape(got) != want.shape]
    if wrong:
        path, got, want = wrong[0]
        raise CheckpointError(f"{directory}: its weights do not fit the {what} its metadata names "
                              f"({len(wrong)} variables differ, first {path}: stored {list(got)}, expected "
                              f"{list(want)}); the model directory is damaged or was edited")
    return meta, module, variables


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def is_model_directory(directory: str) -> bool:
    """Whether `directory` holds a fer-jax model (what `--overwrite` may replace)."""
    try:
        with open(os.path.join(directory, METADATA)) as f:
            return json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_destination(directory: str | os.PathLike, overwrite: bool = False, what: str = "--out") -> str:
    """Refuses a model-directory destination before any work; returns it absolute.

    An existing destination is replaced only with `overwrite`, and only if it is a fer-jax model directory
    (or empty): `--overwrite` never deletes anything else.

    Raises:
      ConfigError: the path cannot be written (see `errors.check_output_path`).
      CheckpointError: it exists and may not be replaced.
    """
    directory = check_output_path(directory, what, directory=True)
    if os.path.exists(directory):
        if not overwrite:
            raise CheckpointError(f"{directory} already exists; choose another {what} or pass --overwrite")
        if os.listdir(directory) and not is_model_directory(directory):
            raise CheckpointError(f"{directory} is not a fer-jax model directory (no {METADATA} of format "
                                  f"{FORMAT}); --overwrite replaces only model directories; choose another {what}")
    return directory


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary sibling directory that becomes `directory` only if the block succeeds, with the
    permissions the umask gives. Temporaries of `directory` that a killed run left are removed first.

    Raises:
      UserError: `directory` may not be written or replaced (`check_destination`).
    """
    directory = check_destination(directory, overwrite)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(directory)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(directory) + ".tmp-", dir=parent)
    try:
        yield tmp
        honour_umask(tmp, directory=True)
        if os.path.exists(directory):  # moved aside, not deleted, until the new one is in place
            old = tempfile.mkdtemp(prefix=os.path.basename(directory) + ".tmp-old-", dir=parent)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old)
        else:
            os.replace(tmp, directory)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def save_pretrained(directory: str | os.PathLike, arch: str, hparams: dict[str, Any], variables: Any,
                    metadata: dict[str, Any] | None = None, overwrite: bool = False) -> None:
    """Writes a converted-model directory atomically (nothing is left behind on failure).

    Args:
      directory: destination; must not exist unless `overwrite` (and then it must be a model directory).
      arch: registry name.
      hparams: constructor hyperparameters (JSON-able).
      variables: {"params": ..., "batch_stats": ...} of numpy or jax arrays.
      metadata: extra JSON-able entries (source, report, parity, ...).
      overwrite: replace an existing directory.
    """
    meta = {"format": FORMAT, "arch": arch, "hparams": hparams, **(metadata or {})}
    meta.setdefault("preprocess", preprocessing(meta))
    with atomic_directory(directory, overwrite) as tmp:
        tree = jax.tree.map(np.asarray, variables)
        with _local_checkpointer() as ckptr:
            ckptr.save(os.path.join(tmp, VARIABLES), tree)
            ckptr.wait_until_finished()
        with open(os.path.join(tmp, METADATA), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=False)
            f.write("\n")



def input_size(meta: dict[str, Any]) -> tuple[int, int]:
    """The (height, width) a model directory's network takes: its training size, else upstream's."""
    size = meta.get("trained", {}).get("image_size") or models.spec(meta["arch"]).image_size
    return (int(size), int(size)) if isinstance(size, int | float) else (int(size[0]), int(size[1]))


def preprocessing(meta: dict[str, Any]) -> dict[str, Any]:
    """{"pp": preprocessing string, "margin": crop margin, "align": aligned-chip padding or None} for a face
    found in a photograph (see `models.FacePreprocess`): the directory's own `preprocess` entry, else
    (directories written before it existed) the network's default at its input size.

    Raises:
      CheckpointError: the stored entry is not such a mapping.
    """
    stored = meta.get("preprocess")
    if stored is None:
        return models.spec(meta["arch"]).face.at(input_size(meta))

    def number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0

    if (not isinstance(stored, dict) or not isinstance(stored.get("pp"), str) or not number(stored.get("margin"))
            or not (stored.get("align") is None or number(stored["align"]))):
        raise CheckpointError(f"the model's {METADATA} has a bad \"preprocess\" entry {stored!r}; expected "
                              '{"pp": "<preprocessing>", "margin": <number >= 0>, "align": <number >= 0 or null>}')
    align = stored.get("align")
    return {"pp": stored["pp"], "margin": float(stored["margin"]), "align": None if align is None else float(align)}


def init_from(directory: str | os.PathLike, arch: str, variables: Any, *, drop: tuple[str, ...] = (),
              allow_missing: tuple[str, ...] = ()) -> tuple[dict, merge.Report]:
    """Initialises a model's `variables` from a converted (or trained) model directory.

    The same architecture loads everything (unless `drop` / `allow_missing` say otherwise, e.g. to
    fine-tune with a new class count); another architecture loads through the `InitRule` our network
    declares for it, e.g. the MS-Celeb ResNet18 into DAN: backbone renamed to `features.*`, its `fc`
    dropped, the attention heads, `fc` and `bn` kept at init.

    Args:
      directory: a fer-jax model directory.
      arch: registry name of the model being initialised.
      variables: its concrete initial variables.
      drop: extra source module-path patterns to drop.
      allow_missing: extra target module-path patterns to keep at init.

    Returns:
      (variables, report).

    Raises:
      CheckpointError: no rule from the source architecture, or anything unaccounted for.
    """
    meta, _, source = load_with_metadata(directory)
    if meta["arch"] == arch:
        rule = models.InitRule()
    elif meta["arch"] in models.REGISTRY[arch].init_from:
        rule = models.REGISTRY[arch].init_from[meta["arch"]]
    else:
        known = ", ".join([arch, *models.REGISTRY[arch].init_from]) or arch
        raise CheckpointError(f"cannot initialise {arch} from a {meta['arch']} model ({directory}); "
                              f"supported sources: {known}")
    return merge.merge_variables(source, variables, renames=rule.renames, drop=rule.drop + tuple(drop),
                                 allow_missing=rule.init + tuple(allow_missing))
