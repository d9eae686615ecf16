"""The torch side of a training step: each task's loss and each recipe's optimizer, written in plain torch from
the fact sheets (shared/reference/*.md), for the float64 loss tests and for scripts/benchmark.py.

`loss(task, outputs, batch, aux)` computes what `fer_jax.tasks.<Task>.loss` differentiates, from the reference
model's outputs by name (the network's `ModelSpec.outputs`), dispatched on the task's class (a subclass takes
its nearest registered base, as it inherits `loss`). `optimizer(config, params)` builds the recipe's
torch.optim optimizer (`SAM` around it when `optimizer.sam_rho` > 0).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fer_jax import tasks
from porting.reference.dan import AffinityLoss, PartitionLoss

Tensor = torch.Tensor


# --- FAER's CelebA losses (faer.md section 3) --------------------------------------------------------------


def bce_clamp(x: Tensor, y: Tensor, clamp: float = 10.0) -> Tensor:
    """FAER utils/loss.py `Loss(mask_ratio)` without a mask: BCE with logits clamped to [-clamp, clamp]."""
    return F.binary_cross_entropy_with_logits(x.clamp(-clamp, clamp), y)


def focal(x: Tensor, y: Tensor, gamma: float = 2.0, sum_attributes: bool = False) -> Tensor:
    """The Baseline's BCEFocalLoss (mean over everything); the paper's eq. 7 sums over attributes."""
    p = torch.sigmoid(x)
    loss = -(1 - p) ** gamma * y * torch.log(p) - p ** gamma * (1 - y) * torch.log(1 - p)
    return loss.sum(-1).mean() if sum_attributes else loss.mean()


def asymmetric(x: Tensor, y: Tensor, gn: float = 4, gp: float = 1, clip: float = 0.05, eps: float = 1e-8) -> Tensor:
    """FAER's AsymmetricLoss: the negated sum over every element."""
    xp = torch.sigmoid(x)
    xn = (1 - xp + clip).clamp(max=1)
    loss = y * torch.log(xp.clamp(eps, 1 - eps)) + (1 - y) * torch.log(xn.clamp(eps, 1 - eps))
    pt = xp * y + xn * (1 - y)
    return -(loss * torch.pow(1 - pt, gp * y + gn * (1 - y))).sum()


class CenterLossFunction(torch.autograd.Function):
    """Upstream's CenterLossFunction semantics (faer.md section 3): the centers' gradient ignores grad_output."""

    @staticmethod
    def forward(ctx, feature, label, centers):
        ctx.save_for_backward(feature, label, centers)
        return (feature - centers[label]).pow(2).sum() / 2.0 / feature.shape[0]

    @staticmethod
    def backward(ctx, g):
        feature, label, centers = ctx.saved_tensors
        diff = centers[label] - feature
        ones = torch.ones_like(label, dtype=centers.dtype)
        counts = torch.ones(centers.shape[0], dtype=centers.dtype).scatter_add_(0, label, ones)
        grad_c = torch.zeros_like(centers).index_add_(0, label, diff) / counts[:, None]
        return -g * diff / feature.shape[0], None, grad_c / feature.shape[0]


# --- FERAtt's losses (feratt.md section 3) ------------------------------------------------------------------


def attention_loss(x_org: Tensor, att: Tensor) -> Tensor:
    """netlosses.Attloss as upstream writes it (tanh through exp)."""
    d = torch.exp(6.0 * torch.abs(x_org - att))
    return 5.0 * torch.clamp(((d - 1) / (d + 1)).mean(), max=30)


def dgmm(x: Tensor, y: Tensor, classes: int, lam: float | None = None, perm: Tensor | None = None,
         sigma: float = 0.5) -> Tensor:
    """netlosses.DGMMLoss (mix=True when lam is given): float labels, a loop over the classes."""
    y = y.to(x.dtype)
    if lam is not None:
        lam = torch.tensor([lam], dtype=x.dtype)
        x_ul = x * lam.expand_as(x) + x[perm, ...] * (1 - lam.expand_as(x))
        y_ul = y * lam.expand_as(y) + y[perm] * (1 - lam.expand_as(y))
        x, y = torch.cat([x, x_ul], dim=0), torch.cat([y, y_ul], dim=0)
    num = x.shape[0]
    pi = torch.zeros((num, classes), dtype=x.dtype)
    yh = torch.zeros((num, classes), dtype=x.dtype)
    for c in range(classes):
        index = y == int(c)
        if index.sum() == 0:
            continue
        muc = x[index, ...].mean(dim=0)
        pi[:, c] = torch.exp(-torch.sum((x - muc) ** 2, dim=1) / (2.0 * sigma ** 2))
        yh[index, c] = 1
    s = torch.sum(pi, dim=1).unsqueeze(1)
    pi = (pi / (s.expand_as(pi) + 1e-15)).clamp(0.0, 1.0)
    return torch.mean(torch.sum((pi - yh) ** 2, dim=1))


# --- each task's objective ----------------------------------------------------------------------------------

Outputs = Mapping[str, Tensor]
Batch = Mapping[str, Tensor]


def _classification(task: tasks.Classification, outputs: Outputs, prediction: Tensor, batch: Batch, aux) -> Tensor:
    return F.cross_entropy(prediction, batch["label"])


def _multilabel(task: tasks.MultiLabel, outputs, prediction, batch, aux) -> Tensor:
    y = batch["label"].to(prediction.dtype)
    return {"bce": lambda: F.binary_cross_entropy_with_logits(prediction, y),
            "bce_clamp": lambda: bce_clamp(prediction, y, task.clamp),
            "focal": lambda: focal(prediction, y, task.gamma),
            "focal_paper": lambda: focal(prediction, y, task.gamma, sum_attributes=True),
            "asymmetric": lambda: asymmetric(prediction, y)}[task.loss_name]()


@functools.cache
def _affinity(num_centers: int, feat_dim: int) -> AffinityLoss:
    return AffinityLoss(num_centers, feat_dim)


def _dan(task: tasks.Dan, outputs, prediction, batch, aux) -> Tensor:
    label = batch["label"]
    affinity = torch.func.functional_call(_affinity(task.num_centers, task.feat_dim), {"centers": aux["centers"]},
                                          (outputs["feat"], label))
    return F.cross_entropy(outputs["out"], label) + affinity + PartitionLoss()(outputs["heads"])


def _center(task: tasks.CenterLoss, outputs, prediction, batch, aux) -> Tensor:
    label = batch["label"]
    center = CenterLossFunction.apply(outputs[task.feature], label, aux["centers"])
    return F.cross_entropy(prediction, label) + task.weight * center


def _feratt(task: tasks.FERAtt, outputs, prediction, batch, aux) -> Tensor:
    label = batch["label"]
    total = F.cross_entropy(prediction, label) + attention_loss(batch["x_org"], outputs["att"])
    if task.dgmm:
        lam = float(np.random.default_rng(0).beta(2.0, 2.0)) if task.mixup else None
        perm = torch.randperm(label.shape[0]) if task.mixup else None
        total = total + dgmm(outputs["z"], label, prediction.shape[-1], lam, perm)
    return total * label.shape[0] if task.scale_by_batch else total


def _two_heads(task: tasks.TwoHeads, outputs, prediction, batch, aux) -> Tensor:
    first, second = (F.cross_entropy(outputs[k], batch["label"], label_smoothing=task.label_smoothing)
                     for k in task.heads)
    return task.lam * first + (1 - task.lam) * second


LOSSES: dict[type, Callable[..., Tensor]] = {
    tasks.Classification: _classification, tasks.MultiLabel: _multilabel, tasks.Dan: _dan,
    tasks.CenterLoss: _center, tasks.FERAtt: _feratt, tasks.TwoHeads: _two_heads}


def loss(task: tasks.Classification, outputs: Outputs, prediction: Tensor, batch: Batch,
         aux: Mapping[str, Tensor]) -> Tensor:
    """The objective `task.loss` differentiates, in torch (`aux`: the task's own parameters by name).

    Raises:
      KeyError: no torch loss is written for the task's class or any of its bases.
    """
    for cls in type(task).__mro__:
        if cls in LOSSES:
            return LOSSES[cls](task, outputs, prediction, batch, aux)
    raise KeyError(f"no torch loss for task {type(task).__name__}; add it to porting.reference.training.LOSSES")


# --- optimizers ---------------------------------------------------------------------------------------------


class SAM:
    """SAM as davda54/sam steps it (MFTN-FER's utils.py; mftn_fer.md section 4), written from that
    description: ||g|| over parameters with a gradient, e = rho / (||g|| + 1e-12) * (w^2 if adaptive) * g,
    w += e; second forward / backward; restore w; the base optimizer's step with the second gradient."""

    def __init__(self, params: Iterable[Tensor], base: torch.optim.Optimizer, rho: float, adaptive: bool):
        self.params, self.base, self.rho, self.adaptive, self.old = list(params), base, rho, adaptive, {}

    def zero_grad(self) -> None:
        self.base.zero_grad()

    def first_step(self) -> None:
        with torch.no_grad():
            norm = torch.norm(torch.stack([((p.abs() if self.adaptive else 1.0) * p.grad).norm(p=2)
                                           for p in self.params if p.grad is not None]), p=2)
            scale = self.rho / (norm + 1e-12)
            for p in self.params:
                if p.grad is None:
                    continue
                self.old[p] = p.data.clone()
                p.add_((p.pow(2) if self.adaptive else 1.0) * p.grad * scale)

    def second_step(self) -> None:
        with torch.no_grad():
            for p in self.params:
                if p in self.old:
                    p.data = self.old[p]
        self.base.step()


def optimizer(opt: Any, params: Iterable[Tensor]) -> torch.optim.Optimizer | SAM:
    """The torch optimizer of `config.optimizer` over `params`, at its base learning rate (one group:
    `optimizer.groups`' learning-rate factors change no work), inside `SAM` when `sam_rho` > 0.

    Raises:
      ValueError: an optimizer name fer-jax does not build.
    """
    params = list(params)
    wd = opt.get("weight_decay", 0.0)
    if opt.name == "sgd":
        base = torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=wd,
                               nesterov=opt.get("nesterov", False))
    elif opt.name in ("adam", "adamw"):
        cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
        base = cls(params, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=wd,
                   amsgrad=opt.get("amsgrad", False))
    else:
        raise ValueError(f"unknown optimizer.name {opt.name!r}")
    rho = opt.get("sam_rho", 0.0)
    return SAM(params, base, rho, bool(opt.get("sam_adaptive", False))) if rho > 0 else base
