"""DAN on AffectNet-8 (yaoing/DAN:affectnet.py --num_class 8).

    python porting/convert.py resnet18_msceleb.pth --out models/resnet18_msceleb_flax
    python scripts/train.py --config configs/dan_affectnet8.py --workdir runs/dan_affectnet8 \
        --config.data.root=datasets/AffectNet --config.num_epochs=10

Expected (upstream README): 62.09 % validation accuracy (released checkpoint: epoch 5).
Variant `:smoke` (CI): 32x32 images, batch 8, 4 steps on synthetic data under data/smoke/affectnet8.
"""

from fer_jax.train import config as base_config


def get_config(arg=None):
    return base_config.sibling(__file__, "dan_affectnet").get_config(8, arg)
