"""DAN on AffectNet-7 (yaoing/DAN:affectnet.py --num_class 7).

    python porting/convert.py resnet18_msceleb.pth --out models/resnet18_msceleb_flax
    python scripts/train.py --config configs/dan_affectnet7.py --workdir runs/dan_affectnet7 \
        --config.data.root=datasets/AffectNet --config.num_epochs=10

Expected (upstream README): 65.69 % validation accuracy (released checkpoint: epoch 6).
Variant `:smoke` (CI): 32x32 images, batch 8, 4 steps on synthetic data under data/smoke/affectnet7.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    return base_config.sibling(__file__, "dan_affectnet").get_config(7, arg)
