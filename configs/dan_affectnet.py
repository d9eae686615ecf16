"""Shared recipe of DAN on AffectNet (yaoing/DAN:affectnet.py); see dan_affectnet7.py / dan_affectnet8.py."""

from fer_jax.train import config as base_config


def pp_train(size: int) -> str:
    # Resize((224,224)) -> RandomHorizontalFlip -> RandomApply([RandomAffine(20, scale=(0.8, 1),
    # translate=(0.2, 0.2))], p=0.7) -> ToTensor -> Normalize(ImageNet) -> RandomErasing() (p 0.5,
    # scale (0.02, 0.33), ratio (0.3, 3.3), value 0).
    return (f"resize({size},{size})|hflip(0.5)|random_apply(0.7,'affine(20,translate=(0.2,0.2),scale=(0.8,1.0))')"
            "|to_float|normalize('imagenet')|erase(0.5,(0.02,0.33))")


def pp_eval(size: int) -> str:
    return f"resize({size},{size})|to_float|normalize('imagenet')"


def get_config(num_class: int, arg=None):
    c = base_config.base()
    c.model.name = "dan"
    c.model.num_class = num_class
    c.model.num_head = 4
    c.task.name = "dan"
    c.task.num_centers = num_class  # AffinityLoss(num_class=args.num_class) here, unlike rafdb.py
    c.task.feat_dim = 512
    c.data.name = "affectnet"
    # The folder layout utils/convert_affectnet.py writes: <root>/{train,val}/<code>/*.jpg; 7-class mode
    # drops code 7 (Contempt). Labels are the official codes (Neutral, Happy, Sad, Surprise, Fear,
    # Disgust, Anger, Contempt).
    c.data.root = "datasets/AffectNet"  # upstream default is misspelled (datasets/AfectNet/)
    c.data.options = {"num_class": num_class, "layout": "folders"}
    c.data.train_split, c.data.eval_split = "train", "val"
    c.data.image_size = 224
    c.data.train_pp, c.data.eval_pp = pp_train(224), pp_eval(224)
    # ImbalancedDatasetSampler: weight 1/count(class), N draws with replacement per epoch.
    c.data.sampler = "balanced"
    # torch.optim.Adam(lr=1e-4, weight_decay=0) over model + centers; ExponentialLR(0.6) per epoch.
    c.optimizer.update(name="adam", lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    c.schedule.update(name="exponential", gamma=0.6)
    c.num_epochs = 40  # script default; the README runs --epochs 10; released: epoch 6 (7-cls) / 5 (8-cls)
    c.batch_size = 256
    c.init_from = "models/resnet18_msceleb_flax"
    c.best_metric = "accuracy"

    return base_config.apply_variant(c, arg, {
        "smoke": lambda c: base_config.smoke(c, f"data/smoke/affectnet{num_class}", pp_train, pp_eval)})
