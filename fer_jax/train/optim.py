"""Optimizers with torch.optim semantics, built from optax (equivalences measured in
shared/reference/jax_platform.md section 7: <= 1.7e-16 in float64 over 12 steps)."""

from __future__ import annotations

import optax


def torch_sgd(learning_rate: optax.ScalarOrSchedule, momentum: float = 0.0, weight_decay: float = 0.0,
              nesterov: bool = False) -> optax.GradientTransformation:
    """torch.optim.SGD (dampening 0): weight decay is L2 added to the gradient *before* momentum, on every
    parameter it is given (torch applies it to BN and biases too)."""
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))
