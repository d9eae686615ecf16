"""Writes a learnable synthetic face dataset in the exact official layout of RAF-DB, AffectNet, CelebA, ExpW,
Emotion-FAN's AFEW and CK+ (face videos), or FERAtt's CK+ / BU-3DFE (the authors' MATLAB v7.3 files, or the
CK+ release folders, with 68-point landmarks) and a folder of background pictures for its composites.

    python scripts/make_synthetic.py --layout rafdb --out data/synthetic_rafdb --num_train 2000 --num_test 400
    python scripts/make_synthetic.py --layout afew --out data/synthetic_afew --num_train 140 --num_test 70
    python scripts/make_synthetic.py --layout ck --out data/feratt --num_train 200 --num_test 40
    python scripts/make_synthetic.py --layout backgrounds --out data/backgrounds --num_train 50

The expression decides the drawn eyes, brows and mouth (CelebA: attributes decide hair, glasses, beard,
hat, ...; a video is one face whose view drifts from frame to frame); see fer_jax/data/synthetic.py for the
table and fer_jax/data/synthetic_layouts.py for what each layout contains. The output directory is written
atomically and must not exist or be empty; temporaries of an interrupted run are removed first.
"""

from __future__ import annotations

import time

from absl import app, flags

from fer_jax import cli

_LAYOUT = flags.DEFINE_enum("layout", None, ["rafdb", "affectnet", "celeba", "expw", "afew", "ckplus", "ck",
                                             "bu3dfe", "ckplus_release", "backgrounds"],
                            "Dataset layout to write (ck, bu3dfe, ckplus_release: FERAtt's faces; num_test >= 10, "
                            "the held-out subjects of fold 0).")
_OUT = flags.DEFINE_string("out", None, "New output directory (must not exist or be empty).")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 1000, "Training images (ExpW: faces, see the module docs; AFEW: "
                                                     "videos; CK+: videos of folds 1-9).", lower_bound=1)
_NUM_TEST = flags.DEFINE_integer("num_test", 200, "Held-out images (CelebA: for val and for test each; AFEW: "
                                                  "validation videos; CK+: videos of fold 10).", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed; the data depends on nothing else.", lower_bound=0)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None,
                                   "Face image side in pixels, at least 32 (default: RAF-DB 100, AffectNet 128, "
                                   "ExpW 96, AFEW and CK+ frames 64; CelebA is always 178x218).", lower_bound=32)
_VARIANT = flags.DEFINE_string("variant", None,
                               "Layout variant: affectnet 'folders' (default) or 'csv'; celeba 'official' "
                               "(default) or 'presplit' (FAER); ck / bu3dfe 'mat'; backgrounds 'jpg'.")


def main(argv: list[str]) -> None:
    del argv  # flags_parser refuses stray arguments
    from fer_jax.data.synthetic_layouts import make_synthetic
    from fer_jax.errors import check_output_path, honour_umask, remove_stale_temporaries

    def run() -> str:
        out = check_output_path(_OUT.value, "--out", directory=True)
        remove_stale_temporaries(out)
        out = make_synthetic(_LAYOUT.value, out, num_train=_NUM_TRAIN.value, num_test=_NUM_TEST.value,
                             seed=_SEED.value, image_size=_IMAGE_SIZE.value, variant=_VARIANT.value)
        honour_umask(out, directory=True)  # the directory was made with tempfile (0700)
        return out

    start = time.perf_counter()
    out = cli.run_user(run)
    print(f"wrote {_LAYOUT.value} layout to {out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser(["layout", "out"]))
